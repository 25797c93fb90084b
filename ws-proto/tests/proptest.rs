//! Property tests: round trips in both roles under any fragmentation and
//! any chunking of the byte stream; arbitrary input never panics and never
//! buffers past the configured limits.
// Tests own the clock: a real `Instant` is only the base of virtual time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;
use support::*;
use ws_proto::{AcceptOptions, CloseCode, Config, Connection, Event, Message};

#[derive(Debug, Clone)]
enum Op {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![0usize..130, Just(125usize), Just(126), 60_000usize..70_000];
    prop_oneof![
        4 => ".{0,200}".prop_map(Op::Text),
        3 => len.prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n)).prop_map(Op::Binary),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Op::Ping),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Op::Pong),
    ]
}

/// Feeds `wire` to `to` in chunks of the given sizes (cycled).
fn feed_chunked(to: &mut Connection, wire: &[u8], sizes: &[usize], now: Instant) {
    let mut pos = 0;
    let mut i = 0;
    while pos < wire.len() {
        let n = sizes[i % sizes.len()].max(1);
        let end = (pos + n).min(wire.len());
        to.handle_data(now, &wire[pos..end]);
        pos = end;
        i += 1;
    }
}

fn expected_event(op: &Op) -> Event {
    match op {
        Op::Text(t) => Event::Message(Message::text(t.clone())),
        Op::Binary(b) => Event::Message(Message::binary(b.clone())),
        Op::Ping(p) => Event::Ping(Bytes::from(p.clone())),
        Op::Pong(p) => Event::Pong(Bytes::from(p.clone())),
    }
}

fn send(conn: &mut Connection, op: &Op) {
    match op {
        Op::Text(t) => conn.send(Message::text(t.clone())).unwrap(),
        Op::Binary(b) => conn.send(Message::binary(b.clone())).unwrap(),
        Op::Ping(p) => conn.ping(Bytes::from(p.clone())).unwrap(),
        Op::Pong(p) => conn.pong(Bytes::from(p.clone())).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn messages_round_trip_in_both_roles(
        ops in proptest::collection::vec(op(), 0..12),
        fragment in prop_oneof![Just(None), (1usize..300).prop_map(Some)],
        sizes in proptest::collection::vec(1usize..5000, 1..8),
        client_sends in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut config = Config::default();
        config.fragment_size = fragment;
        config.auto_pong = false;
        let (mut c, mut s) = open_pair(config.clone(), config, now);
        let (from, to) = if client_sends { (&mut c, &mut s) } else { (&mut s, &mut c) };
        for op in &ops {
            send(from, op);
        }
        from.close(now, CloseCode::NORMAL, "done").unwrap();
        feed_chunked(to, &transmit(from), &sizes, now);
        let mut expected: Vec<Event> = ops.iter().map(expected_event).collect();
        expected.push(Event::Closed { code: CloseCode::NORMAL, reason: "done".into(), clean: true });
        prop_assert_eq!(drain(to), expected);
        // The echoed close completes the handshake on the sender too.
        feed_chunked(from, &transmit(to), &sizes, now);
        let last = drain(from);
        prop_assert!(matches!(last.as_slice(), [Event::Closed { clean: true, .. }]), "{:?}", last);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        sizes in proptest::collection::vec(1usize..600, 1..6),
        as_server in any::<bool>(),
        after_handshake in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut config = Config::default();
        config.max_frame_size = 512;
        config.max_message_size = 1024;
        config.max_handshake_size = 1024;
        config.strict_masking = false;
        let mut conn = match (as_server, after_handshake) {
            (true, true) => open_server(config.clone(), now),
            (true, false) => Connection::server(config.clone(), now).unwrap(),
            (false, true) => open_pair(config.clone(), Config::default(), now).0,
            (false, false) => client(config.clone(), now),
        };
        let mut pos = 0;
        let mut i = 0;
        while pos < data.len() {
            let end = (pos + sizes[i % sizes.len()]).min(data.len());
            conn.handle_data(now, &data[pos..end]);
            while let Some(e) = conn.poll_event() {
                if matches!(e, Event::Request(_)) {
                    let _ = conn.accept(AcceptOptions::default());
                }
            }
            let _ = transmit(&mut conn);
            // One unfinished frame (header + payload) or handshake head,
            // plus one unfinished message.
            let bound = config.max_frame_size.max(config.max_handshake_size) + 14 + config.max_message_size + 600;
            prop_assert!(conn.buffered_inbound() <= bound, "{} > {}", conn.buffered_inbound(), bound);
            pos = end;
            i += 1;
        }
        conn.handle_eof(now);
        while conn.poll_event().is_some() {}
        prop_assert!(conn.is_closed());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The incremental validator agrees with `std::str::from_utf8` for any
    /// bytes split anywhere, and fails in the piece holding the first bad
    /// byte (fail fast), never later.
    #[test]
    fn incremental_utf8_matches_std_and_fails_fast(
        text in ".{0,40}",
        noise in proptest::collection::vec(any::<u8>(), 0..6),
        at in any::<proptest::sample::Index>(),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..5),
    ) {
        let mut bytes = text.into_bytes();
        let pos = at.index(bytes.len() + 1);
        bytes.splice(pos..pos, noise);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let expected = std::str::from_utf8(&bytes);
        let ends: Vec<usize> = points.into_iter().chain(std::iter::once(bytes.len())).collect();
        let mut v = ws_proto::utf8::Utf8Validator::new();
        let mut prev = 0;
        let mut failed_at = None;
        for &end in &ends {
            if v.feed(&bytes[prev..end]).is_err() {
                failed_at = Some(end);
                break;
            }
            prev = end;
        }
        match expected {
            Ok(_) => prop_assert!(failed_at.is_none() && v.is_complete()),
            Err(e) => match e.error_len() {
                // Invalid bytes: caught in the piece that holds them.
                Some(len) => {
                    let first_bad = e.valid_up_to();
                    // The invalid sequence is `len` bytes at `first_bad`; the
                    // byte after it (if any) is what reveals a cut-short
                    // sequence. The first piece that holds that byte must fail.
                    let reveal = (first_bad + len + 1).min(bytes.len());
                    let by = ends.iter().copied().find(|&end| end >= reveal);
                    prop_assert!(
                        failed_at.is_some_and(|end| end > first_bad && Some(end) <= by),
                        "failed at {:?}, must fail after {} and by {:?}", failed_at, first_bad, by
                    );
                }
                // Cut short at the end: only the end-of-message check fails.
                None => prop_assert!(failed_at.is_none() && !v.is_complete()),
            },
        }
    }
}
