//! permessage-deflate (RFC 7692) through whole connections: negotiation,
//! framing, limits, memory policy and compress-once fan-out.
// Tests own the clock: a real `Instant` is only the base of virtual time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Instant;

use bytes::Bytes;
use support::*;
use ws_proto::frame::FrameHeader;
use ws_proto::{
    AcceptOptions, ClientRequest, CloseCode, Compressor, Config, Connection, DeflateConfig,
    DeflateParams, Error, Event, HandshakeError, Message, PreparedBody, PreparedFrame,
    ProtocolError, SeededMaskKeys,
};

fn deflate_config(deflate: DeflateConfig) -> Config {
    let mut config = Config::default();
    config.deflate = Some(deflate);
    config
}

fn json(len: usize) -> String {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < len - 1 {
        s.push_str(&format!(
            "{{\"id\":{i},\"room\":\"lobby\",\"text\":\"hello there\"}},"
        ));
        i += 1;
    }
    s.truncate(len - 1);
    s.push(']');
    s
}

/// Headers of the frames in `wire` (any masking).
fn headers(mut wire: &[u8]) -> Vec<FrameHeader> {
    let mut out = Vec::new();
    while let Some((h, n)) = FrameHeader::decode(wire).unwrap() {
        wire = &wire[n + h.payload_len as usize..];
        out.push(h);
    }
    out
}

/// A server with `config` that received `offer` and accepted.
fn server_with_offer(config: Config, offer: &str, now: Instant) -> (Connection, String) {
    let mut s = Connection::server(config, now).unwrap();
    let request = String::from_utf8(upgrade_request()).unwrap().replace(
        "\r\n\r\n",
        &format!("\r\nSec-WebSocket-Extensions: {offer}\r\n\r\n"),
    );
    s.handle_data(now, request.as_bytes());
    assert!(matches!(s.poll_event(), Some(Event::Request(_))));
    s.accept(AcceptOptions::default()).unwrap();
    let head = String::from_utf8(transmit(&mut s)).unwrap();
    (s, head)
}

#[test]
fn both_roles_negotiate_the_shared_mode_by_default() {
    let now = Instant::now();
    let config = deflate_config(DeflateConfig::default());
    let mut c = client(config.clone(), now);
    let request = String::from_utf8(transmit(&mut c)).unwrap();
    assert!(
        request.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover; client_max_window_bits, permessage-deflate; \
             client_no_context_takeover; client_max_window_bits\r\n"
        ),
        "{request}"
    );
    let mut s = Connection::server(config, now).unwrap();
    s.handle_data(now, request.as_bytes());
    let Some(Event::Request(req)) = s.poll_event() else {
        panic!()
    };
    assert_eq!(req.deflate_offers().len(), 2);
    s.accept(AcceptOptions::default()).unwrap();
    pump(&mut s, &mut c, now);
    let Some(Event::Accepted(resp)) = c.poll_event() else {
        panic!()
    };
    let expected = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };
    assert_eq!(resp.deflate, Some(expected));
    assert_eq!(c.deflate(), Some(&expected));
    assert_eq!(s.deflate(), Some(&expected));
}

#[test]
fn messages_are_compressed_above_the_threshold_only_and_controls_never() {
    let now = Instant::now();
    let config = deflate_config(DeflateConfig::default());
    let (mut c, mut s) = open_pair(config.clone(), config, now);
    let big = json(1024);
    s.send(Message::text(big.clone())).unwrap();
    s.send(Message::text("tiny")).unwrap();
    s.ping(Bytes::from(big[..100].to_owned())).unwrap();
    let wire = transmit(&mut s);
    let hs = headers(&wire);
    assert_eq!(hs.iter().map(|h| h.rsv).collect::<Vec<_>>(), [4, 0, 0]);
    assert!(
        hs[0].payload_len < 400,
        "1 KiB of JSON shrinks: {}",
        hs[0].payload_len
    );
    c.handle_data(now, &wire);
    assert_eq!(
        drain(&mut c),
        [
            Event::Message(Message::text(big)),
            Event::Message(Message::text("tiny")),
            Event::Ping(Bytes::from(json(1024)[..100].to_owned())),
        ]
    );
}

#[test]
fn rfc_7692_examples_decode_including_fragmented() {
    let now = Instant::now();
    let config = deflate_config(DeflateConfig::default());
    let (mut s, _) = server_with_offer(config, "permessage-deflate", now);
    // 7.2.3.1: one compressed frame, then the same message in two fragments.
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let mut wire = client_frame(true, 4, 1, &hello);
    wire.extend(client_frame(false, 4, 1, &hello[..3]));
    wire.extend(client_frame(true, 0, 0, &hello[3..]));
    // 7.2.3.3: a stored block; 7.2.3.4: a block with BFINAL.
    wire.extend(client_frame(
        true,
        4,
        1,
        &[
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ],
    ));
    wire.extend(client_frame(
        true,
        4,
        2,
        &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
    ));
    for b in &wire {
        s.handle_data(now, std::slice::from_ref(b));
    }
    assert_eq!(
        drain(&mut s),
        [
            Event::Message(Message::text("Hello")),
            Event::Message(Message::text("Hello")),
            Event::Message(Message::text("Hello")),
            Event::Message(Message::binary(&b"Hello"[..])),
        ]
    );
}

#[test]
fn misplaced_or_unnegotiated_rsv1_is_a_protocol_error() {
    let now = Instant::now();
    let config = deflate_config(DeflateConfig::default());
    let cases: [(Vec<u8>, ProtocolError); 3] = [
        (
            [
                client_frame(false, 4, 1, &[0xf2]),
                client_frame(true, 4, 0, &[0x00]),
            ]
            .concat(),
            ProtocolError::MisplacedCompressionBit,
        ),
        (
            client_frame(true, 4, 9, b""),
            ProtocolError::MisplacedCompressionBit,
        ),
        (client_frame(true, 2, 1, b"x"), ProtocolError::ReservedBits),
    ];
    for (wire, error) in cases {
        let (mut s, _) = server_with_offer(config.clone(), "permessage-deflate", now);
        s.handle_data(now, &wire);
        let events = drain(&mut s);
        assert!(
            events.contains(&Event::Error(Error::Protocol(error.clone()))),
            "{events:?}"
        );
        assert_eq!(headers(&transmit(&mut s)).len(), 1, "a close frame");
    }
    // Without negotiation RSV1 is reserved.
    let mut s = open_server(config, now);
    s.handle_data(
        now,
        &client_frame(true, 4, 1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
    );
    assert!(drain(&mut s).contains(&Event::Error(ProtocolError::ReservedBits.into())));
}

#[test]
fn a_decompression_bomb_gets_1009_at_the_limit() {
    let now = Instant::now();
    let mut config = deflate_config(DeflateConfig::default());
    config.max_message_size = 64 << 10;
    let (mut s, _) = server_with_offer(config, "permessage-deflate", now);
    let mut compressor = Compressor::new(9, 15).unwrap();
    let bomb = compressor.compress(&vec![b'a'; 50 << 20]);
    assert!(bomb.len() < 100 << 10);
    s.handle_data(now, &client_frame(true, 4, 1, &bomb));
    let events = drain(&mut s);
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::Error(Error::Protocol(ProtocolError::MessageTooLarge { size, .. })),
                Event::Closed { code: CloseCode::MESSAGE_TOO_BIG, .. }
            ] if *size == (64 << 10) + 1
        ),
        "{events:?}"
    );
    assert!(!s.holds_deflate_context());
}

#[test]
fn invalid_utf8_in_compressed_text_fails_fast_with_1007() {
    let now = Instant::now();
    let config = deflate_config(DeflateConfig::default());
    let (mut s, _) = server_with_offer(config, "permessage-deflate", now);
    let mut compressor = Compressor::new(6, 15).unwrap();
    let payload = compressor.compress(&[b"ok".as_slice(), &[0xff], b"more"].concat());
    // The bad byte is in the first fragment: the error comes before the
    // message ends.
    s.handle_data(now, &client_frame(false, 4, 1, &payload));
    let events = drain(&mut s);
    assert_eq!(
        events.first(),
        Some(&Event::Error(ProtocolError::InvalidUtf8.into()))
    );
    assert!(matches!(
        events.last(),
        Some(Event::Closed {
            code: CloseCode::INVALID_PAYLOAD,
            ..
        })
    ));
}

#[test]
fn shared_mode_holds_no_context_when_idle_and_dedicated_mode_does() {
    let now = Instant::now();
    let text = json(4096);
    for (config, idle_context) in [
        (DeflateConfig::shared(), false),
        (DeflateConfig::dedicated(10), true),
    ] {
        let config = deflate_config(config);
        let (mut c, mut s) = open_pair(config.clone(), config, now);
        for _ in 0..3 {
            c.send(Message::text(text.clone())).unwrap();
            pump(&mut c, &mut s, now);
            assert_eq!(drain(&mut s), [Event::Message(Message::text(text.clone()))]);
            s.send(Message::text(text.clone())).unwrap();
            pump(&mut s, &mut c, now);
            assert_eq!(drain(&mut c), [Event::Message(Message::text(text.clone()))]);
        }
        assert_eq!(s.holds_deflate_context(), idle_context);
        assert_eq!(c.holds_deflate_context(), idle_context);
    }
}

#[test]
fn context_takeover_shrinks_repeated_messages() {
    let now = Instant::now();
    let text = json(2000);
    let mut sizes = Vec::new();
    for config in [DeflateConfig::shared(), DeflateConfig::dedicated(15)] {
        let config = deflate_config(config);
        let (mut c, mut s) = open_pair(config.clone(), config, now);
        s.send(Message::text(text.clone())).unwrap();
        s.send(Message::text(text.clone())).unwrap();
        let wire = transmit(&mut s);
        c.handle_data(now, &wire);
        assert_eq!(drain(&mut c).len(), 2);
        sizes.push(headers(&wire)[1].payload_len);
    }
    // With takeover the second copy is a back-reference to the first.
    assert!(sizes[1] * 4 < sizes[0], "{sizes:?}");
}

#[test]
fn dedicated_server_caps_windows_and_keeps_the_peer_hint() {
    let now = Instant::now();
    let config = deflate_config(DeflateConfig::dedicated(11));
    let (s, head) = server_with_offer(
        config,
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=13; \
         client_max_window_bits",
        now,
    );
    assert!(
        head.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; \
             server_max_window_bits=11; client_max_window_bits=11\r\n"
        ),
        "{head}"
    );
    let params = s.deflate().unwrap();
    assert_eq!(
        (params.server_max_window_bits, params.client_max_window_bits),
        (11, 11)
    );
}

#[test]
fn server_declines_malformed_offers_and_picks_the_first_good_one() {
    let now = Instant::now();
    let config = deflate_config(DeflateConfig::default());
    let (s, head) = server_with_offer(
        config.clone(),
        "permessage-deflate; server_max_window_bits=99, \
         permessage-deflate; server_max_window_bits=8",
        now,
    );
    assert!(head.contains("server_max_window_bits=9"), "{head}");
    assert_eq!(s.deflate().unwrap().server_max_window_bits, 9);
    let (s, head) = server_with_offer(config.clone(), "permessage-deflate; bogus", now);
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    assert!(s.deflate().is_none());
    // The application may decline even a good offer.
    let mut s = Connection::server(config, now).unwrap();
    let request = String::from_utf8(upgrade_request()).unwrap().replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    );
    s.handle_data(now, request.as_bytes());
    drain(&mut s);
    let options = AcceptOptions {
        decline_deflate: true,
        ..AcceptOptions::default()
    };
    s.accept(options).unwrap();
    assert!(s.deflate().is_none());
}

#[test]
fn client_fails_on_an_answer_it_did_not_allow() {
    let now = Instant::now();
    let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    let answer = |ext: &str| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: {ext}\r\n\r\n"
        )
    };
    let connect = |config: Config, ext: &str| {
        let req = ClientRequest::new("h", "/", *b"the sample nonce");
        let mut c =
            Connection::client(config, req, Box::new(SeededMaskKeys::new([1; 32])), now).unwrap();
        transmit(&mut c);
        c.handle_data(now, answer(ext).as_bytes());
        drain(&mut c)
    };
    let shared = deflate_config(DeflateConfig::default());
    let ok = connect(
        shared.clone(),
        "permessage-deflate; client_max_window_bits=9",
    );
    assert!(
        matches!(ok.as_slice(), [Event::Accepted(r)] if r.deflate.is_some()),
        "{ok:?}"
    );
    for bad in [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; x=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "foo",
    ] {
        let events = connect(shared.clone(), bad);
        assert!(
            matches!(events.first(), Some(Event::Error(Error::Handshake(_)))),
            "{bad}: {events:?}"
        );
    }
    // A client that offered nothing refuses any extension.
    let events = connect(Config::default(), "permessage-deflate");
    assert_eq!(
        events.first(),
        Some(&Event::Error(HandshakeError::UnofferedExtension.into()))
    );
}

#[test]
fn a_client_limited_to_window_8_sends_uncompressed() {
    let now = Instant::now();
    let config = deflate_config(DeflateConfig::default());
    let mut c = client(config, now);
    transmit(&mut c);
    c.handle_data(
        now,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=8\r\n\r\n",
    );
    assert!(matches!(drain(&mut c).as_slice(), [Event::Accepted(_)]));
    c.send(Message::text(json(1000))).unwrap();
    assert_eq!(headers(&transmit(&mut c))[0].rsv, 0);
}

#[test]
fn prepared_frames_are_compressed_once_for_every_member() {
    let now = Instant::now();
    let deflate = deflate_config(DeflateConfig::default());
    // Large enough that even compressed it is queued by reference.
    let text = json(64 << 10);
    let mut compressor = Compressor::new(6, 15).unwrap();
    let frame = PreparedFrame::text(text.clone()).with_deflate(&mut compressor);
    let shared = frame.deflated_payload().unwrap().clone();
    assert!(
        shared.len() >= 2048 && shared.len() < text.len() / 4,
        "{}",
        shared.len()
    );
    let mut members: Vec<(Connection, Connection)> = (0..3)
        .map(|_| open_pair(deflate.clone(), deflate.clone(), now))
        .collect();
    members.push(open_pair(Config::default(), Config::default(), now));
    for (i, (c, s)) in members.iter_mut().enumerate() {
        s.send_prepared(&frame).unwrap();
        let chunks: Vec<Bytes> = std::iter::from_fn(|| s.poll_transmit_chunk()).collect();
        if i < 3 {
            // The very bytes compressed once, not a copy.
            assert!(
                chunks.iter().any(|b| b.as_ptr() == shared.as_ptr()),
                "member {i}"
            );
        } else {
            assert!(
                chunks
                    .iter()
                    .any(|b| b.as_ptr() == frame.payload().as_ptr())
            );
        }
        c.handle_data(now, &chunks.concat());
        assert_eq!(drain(c), [Event::Message(Message::text(text.clone()))]);
    }
    // A member with server context takeover gets the plain frame.
    let dedicated = deflate_config(DeflateConfig::dedicated(15));
    let (mut c, mut s) = open_pair(dedicated.clone(), dedicated, now);
    s.send_prepared(&frame).unwrap();
    let wire = transmit(&mut s);
    assert_eq!(headers(&wire)[0].rsv, 0);
    c.handle_data(now, &wire);
    assert_eq!(drain(&mut c), [Event::Message(Message::text(text))]);
}

#[test]
fn send_with_a_shared_compressor_leaves_no_context_behind() {
    let now = Instant::now();
    let config = deflate_config(DeflateConfig::default());
    let (mut c, mut s) = open_pair(config.clone(), config, now);
    let mut compressor = Compressor::new(6, 15).unwrap();
    let text = json(3000);
    s.send_with(Message::text(text.clone()), &mut compressor)
        .unwrap();
    c.send_with(Message::binary(text.clone().into_bytes()), &mut compressor)
        .unwrap();
    let wire = transmit(&mut s);
    assert_eq!(headers(&wire)[0].rsv, 4);
    c.handle_data(now, &wire);
    pump(&mut c, &mut s, now);
    assert_eq!(drain(&mut c), [Event::Message(Message::text(text.clone()))]);
    assert_eq!(
        drain(&mut s),
        [Event::Message(Message::binary(text.into_bytes()))]
    );
    assert!(!s.holds_deflate_context() && !c.holds_deflate_context());
}

#[test]
fn control_frames_may_interleave_a_fragmented_compressed_message() {
    let now = Instant::now();
    let config = deflate_config(DeflateConfig::default());
    let (mut s, _) = server_with_offer(config, "permessage-deflate", now);
    let text = json(5000);
    let payload = Compressor::new(6, 15).unwrap().compress(text.as_bytes());
    let (a, b) = payload.split_at(payload.len() / 2);
    let mut wire = client_frame(false, 4, 1, a);
    wire.extend(client_frame(true, 0, 9, b"ping"));
    wire.extend(client_frame(true, 0, 0, b));
    s.handle_data(now, &wire);
    assert_eq!(
        drain(&mut s),
        [
            Event::Ping(Bytes::from_static(b"ping")),
            Event::Message(Message::text(text))
        ]
    );
    // The automatic pong is never compressed.
    assert_eq!(headers(&transmit(&mut s))[0].rsv, 0);
}

#[test]
fn a_client_whose_server_keeps_its_context_keeps_its_inflater() {
    let now = Instant::now();
    let mut c = client(deflate_config(DeflateConfig::default()), now);
    transmit(&mut c);
    // A server that takes the client's fallback offer (no
    // server_no_context_takeover): its messages build on each other.
    let (mut s, head) = server_with_offer(
        deflate_config(DeflateConfig::dedicated(15)),
        "permessage-deflate; client_no_context_takeover; client_max_window_bits",
        now,
    );
    c.handle_data(now, head.as_bytes());
    assert!(matches!(drain(&mut c).as_slice(), [Event::Accepted(_)]));
    let params = *c.deflate().unwrap();
    assert!(!params.server_no_context_takeover && params.client_no_context_takeover);
    for i in 0..3 {
        let text = json(1000 + i);
        s.send(Message::text(text.clone())).unwrap();
        pump(&mut s, &mut c, now);
        assert_eq!(drain(&mut c), [Event::Message(Message::text(text))]);
        assert!(c.holds_deflate_context(), "the client's inflater persists");
    }
}

#[test]
fn a_shared_body_is_compressed_once_behind_per_member_heads() {
    let now = Instant::now();
    let deflate = deflate_config(DeflateConfig::default());
    let body_text = json(64 << 10);
    let mut compressor = Compressor::new(6, 15).unwrap();
    let body = PreparedBody::new(Bytes::from(body_text.clone())).with_deflate(&mut compressor);
    let shared = body.deflated_payload().unwrap().clone();
    assert!(shared.len() >= 2048);
    // A plain member, three deflate members, and a head long enough for
    // two stored blocks.
    let heads = ["", "{\"seq\":1,\"data\":", "{\"seq\":22,\"data\":"];
    let long_head = format!("{{\"pad\":\"{}\",\"data\":", "x".repeat(70_000));
    let mut cases: Vec<(String, Config)> = heads
        .iter()
        .map(|h| (h.to_string(), deflate.clone()))
        .collect();
    cases.push((long_head, deflate));
    cases.push((heads[1].to_string(), Config::default()));
    for (i, (head, config)) in cases.into_iter().enumerate() {
        let (mut c, mut s) = open_pair(config.clone(), config.clone(), now);
        s.send_text_with_body(&Bytes::from(head.clone()), &body)
            .unwrap();
        let chunks: Vec<Bytes> = std::iter::from_fn(|| s.poll_transmit_chunk()).collect();
        let wire = chunks.concat();
        if config.deflate.is_some() {
            assert!(
                chunks.iter().any(|b| b.as_ptr() == shared.as_ptr()),
                "member {i}"
            );
            assert_eq!(headers(&wire)[0].rsv, 4);
        } else {
            assert_eq!(headers(&wire)[0].rsv, 0);
        }
        c.handle_data(now, &wire);
        assert_eq!(
            drain(&mut c),
            [Event::Message(Message::text(format!("{head}{body_text}")))],
            "member {i}"
        );
    }
}
