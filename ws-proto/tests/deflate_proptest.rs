//! Property tests for permessage-deflate: round trips in both roles under
//! any fragmentation, any chunking and any negotiated parameter set;
//! arbitrary compressed frames never panic and never inflate past the
//! message limit.
// Tests own the clock: a real `Instant` is only the base of virtual time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;
use support::*;
use ws_proto::{
    CloseCode, Compressor, Config, Connection, DeflateConfig, DeflateMode, Event, Message,
    PreparedBody,
};

#[derive(Debug, Clone)]
enum Op {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    /// A per-connection head and a shared body (`send_text_with_body`).
    HeadBody(String, String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Repetitive text compresses; arbitrary text mostly does not.
        3 => (".{0,40}", 0usize..200).prop_map(|(s, n)| Op::Text(s.repeat(n.max(1)))),
        2 => ".{0,300}".prop_map(Op::Text),
        2 => proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Op::Binary),
        1 => (any::<u8>(), 0usize..70_000).prop_map(|(b, n)| Op::Binary(vec![b; n])),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Op::Ping),
        2 => (".{0,30}", (".{0,40}", 0usize..300)).prop_map(|(h, (b, n))| Op::HeadBody(h, b.repeat(n))),
    ]
}

fn deflate() -> impl Strategy<Value = DeflateConfig> {
    (
        prop_oneof![
            Just(DeflateMode::Shared),
            (9u8..=15).prop_map(|window_bits| DeflateMode::Dedicated { window_bits }),
        ],
        prop_oneof![Just(0usize), 0usize..300],
        0u32..=9,
    )
        .prop_map(|(mode, threshold, level)| {
            let mut d = DeflateConfig::default();
            d.mode = mode;
            d.threshold = threshold;
            d.level = level;
            d
        })
}

fn feed_chunked(to: &mut Connection, wire: &[u8], sizes: &[usize], now: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < wire.len() {
        let end = (pos + sizes[i % sizes.len()].max(1)).min(wire.len());
        to.handle_data(now, &wire[pos..end]);
        events.extend(drain(to));
        pos = end;
        i += 1;
    }
    events
}

fn expected(op: &Op) -> Event {
    match op {
        Op::Text(t) => Event::Message(Message::text(t.clone())),
        Op::Binary(b) => Event::Message(Message::binary(b.clone())),
        Op::Ping(p) => Event::Ping(Bytes::from(p.clone())),
        Op::HeadBody(h, b) => Event::Message(Message::text(format!("{h}{b}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn deflate_round_trips_in_both_roles(
        client_deflate in deflate(),
        server_deflate in deflate(),
        ops in proptest::collection::vec(op(), 1..8),
        fragment in prop_oneof![Just(None), (1usize..400).prop_map(Some)],
        sizes in proptest::collection::vec(1usize..3000, 1..6),
        shared_compressor in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut cc = Config::default();
        cc.deflate = Some(client_deflate);
        cc.fragment_size = fragment;
        cc.auto_pong = false;
        let mut sc = cc.clone();
        sc.deflate = Some(server_deflate);
        let (mut c, mut s) = open_pair(cc, sc, now);
        prop_assert!(c.deflate().is_some() && c.deflate() == s.deflate());
        let mut compressor = Compressor::new(6, 15).unwrap();
        // Both directions, one after the other, twice (context takeover
        // carries over between rounds).
        for round in 0..4 {
            let (from, to) = if round % 2 == 0 { (&mut c, &mut s) } else { (&mut s, &mut c) };
            for op in &ops {
                match op {
                    Op::Text(t) if shared_compressor => {
                        from.send_with(Message::text(t.clone()), &mut compressor).unwrap()
                    }
                    Op::Text(t) => from.send(Message::text(t.clone())).unwrap(),
                    Op::Binary(b) => from.send(Message::binary(b.clone())).unwrap(),
                    Op::Ping(p) => from.ping(Bytes::from(p.clone())).unwrap(),
                    Op::HeadBody(h, b) => {
                        let body = PreparedBody::new(Bytes::from(b.clone())).with_deflate(&mut compressor);
                        from.send_text_with_body(&Bytes::from(h.clone()), &body).unwrap()
                    }
                }
            }
            let got = feed_chunked(to, &transmit(from), &sizes, now);
            let want: Vec<Event> = ops.iter().map(expected).collect();
            prop_assert_eq!(got, want);
        }
        c.close(now, CloseCode::NORMAL, "done").unwrap();
        let got = feed_chunked(&mut s, &transmit(&mut c), &sizes, now);
        prop_assert!(matches!(got.as_slice(), [Event::Closed { clean: true, .. }]), "{:?}", got);
    }

    #[test]
    fn arbitrary_compressed_frames_never_panic_or_inflate_past_the_limit(
        frames in proptest::collection::vec(
            (any::<bool>(), any::<u8>(), 0u8..3, prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                // Real compressed data, up to 40x the limit once inflated.
                (any::<u8>(), 0usize..40_000).prop_map(|(b, n)| {
                    Compressor::new(9, 15).unwrap().compress(&vec![b; n]).to_vec()
                }),
            ]),
            0..8,
        ),
        sizes in proptest::collection::vec(1usize..500, 1..6),
        dedicated in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut config = Config::default();
        config.max_frame_size = 2048;
        config.max_message_size = 1000;
        config.deflate = Some(if dedicated { DeflateConfig::dedicated(9) } else { DeflateConfig::shared() });
        let (mut c, mut s) = open_pair(config.clone(), config.clone(), now);
        let _ = &mut c;
        let mut wire = Vec::new();
        for (fin, bits, op, payload) in &frames {
            // RSV1 usually set; other reserved bits now and then.
            let rsv = if bits & 7 == 0 { bits >> 5 } else { 4 };
            let opcode = [1u8, 2, 0][usize::from(*op)];
            wire.extend(client_frame(*fin, rsv, opcode, payload));
        }
        let events = feed_chunked(&mut s, &wire, &sizes, now);
        for e in &events {
            if let Event::Message(m) = e {
                prop_assert!(m.len() <= config.max_message_size);
            }
        }
        prop_assert!(s.buffered_inbound() <= 2048 + 14 + 1001);
        s.handle_eof(now);
        drain(&mut s);
        prop_assert!(s.is_closed());
        prop_assert!(!s.holds_deflate_context());
    }
}

/// Extension headers built from the grammar's pieces, valid or not.
fn extension_header() -> impl Strategy<Value = String> {
    let param = prop_oneof![
        Just("server_no_context_takeover".to_owned()),
        Just("client_no_context_takeover".to_owned()),
        Just("client_max_window_bits".to_owned()),
        (7u8..17).prop_map(|b| format!("server_max_window_bits={b}")),
        (7u8..17).prop_map(|b| format!("client_max_window_bits=\"{b}\"")),
        Just("server_max_window_bits".to_owned()),
        Just("x=\"a,b\"".to_owned()),
        "[a-z_=\"; ]{0,8}",
    ];
    let element = (
        prop_oneof![4 => Just("permessage-deflate"), 1 => Just("x-other")],
        proptest::collection::vec(param, 0..4),
    )
        .prop_map(|(name, params)| {
            std::iter::once(name.to_owned())
                .chain(params)
                .collect::<Vec<_>>()
                .join("; ")
        });
    proptest::collection::vec(element, 0..4).prop_map(|e| e.join(", "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a client offers, the server's answer is one that client's
    /// offer allows (checked by a client configured to make that offer),
    /// and parses back; arbitrary answers never panic the client.
    #[test]
    fn negotiation_answers_are_always_acceptable(
        header in extension_header(),
        mode in 0u8..8,
    ) {
        use ws_proto::deflate::DeflateOffer;
        let config = match mode {
            0 => DeflateConfig::shared(),
            bits => DeflateConfig::dedicated(8 + bits),
        };
        let offers = DeflateOffer::parse_offers([header.as_bytes()]);
        if let Some((params, answer)) = config.accept_offers(&offers) {
            prop_assert!((9..=15).contains(&params.server_max_window_bits));
            let back = DeflateOffer::parse_offers([answer.as_bytes()]);
            prop_assert_eq!(back.len(), 1);
        }
        let _ = config.check_answer([header.as_bytes()]);
        for client_mode in [DeflateConfig::shared(), DeflateConfig::dedicated(9), DeflateConfig::dedicated(15)] {
            let own = DeflateOffer::parse_offers([client_mode.client_offer_header().as_bytes()]);
            let (expected, answer) = config.accept_offers(&own).unwrap();
            prop_assert_eq!(client_mode.check_answer([answer.as_bytes()]), Ok(Some(expected)));
        }
    }
}
