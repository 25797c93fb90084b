//! Connection-level rules of RFC 6455, exercised through the public API.
// Tests own the clock: a real `Instant` is only the base of virtual time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use ws_proto::{
    AcceptOptions, CloseCode, Config, Connection, Error, Event, HandshakeError, HttpResponse,
    Message, PreparedFrame, ProtocolError, SendError, State, Utf8Bytes,
};

fn closed_with(events: &[Event], expected: CloseCode) {
    match events.last() {
        Some(Event::Closed {
            code, clean: false, ..
        }) => assert_eq!(*code, expected, "{events:?}"),
        other => panic!("expected a Closed event, got {other:?} in {events:?}"),
    }
}

/// Feeds raw client bytes to an open server; returns its events and the
/// frames it wrote back.
fn server_reacts(input: &[u8]) -> (Vec<Event>, Vec<RawFrame>) {
    let now = Instant::now();
    let mut s = open_server(Config::default(), now);
    s.handle_data(now, input);
    let events = drain(&mut s);
    (events, parse_frames(&transmit(&mut s)))
}

fn assert_fails(input: &[u8], code: CloseCode, error: ProtocolError) {
    let (events, frames) = server_reacts(input);
    assert!(
        events.contains(&Event::Error(Error::Protocol(error.clone()))),
        "{error:?}: {events:?}"
    );
    closed_with(&events, code);
    let (_, opcode, payload) = frames.last().expect("a close frame");
    assert_eq!(*opcode, 8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code.0);
}

#[test]
fn rfc_masked_hello_is_decoded() {
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (events, _) = server_reacts(&frame);
    assert_eq!(events, [Event::Message(Message::text("Hello"))]);
}

#[test]
fn rfc_fragmented_unmasked_hello_is_decoded_by_a_client() {
    // Section 5.7: "Hel" then "lo", unmasked, as a server sends them.
    let now = Instant::now();
    let (mut c, _s) = open_pair(Config::default(), Config::default(), now);
    c.handle_data(now, &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
    assert_eq!(drain(&mut c), [Event::Message(Message::text("Hello"))]);
}

#[test]
fn reserved_bits_opcodes_and_bad_control_frames_are_1002() {
    assert_fails(
        &client_frame(true, 1, 1, b"x"),
        CloseCode::PROTOCOL_ERROR,
        ProtocolError::ReservedBits,
    );
    assert_fails(
        &client_frame(true, 0, 3, b""),
        CloseCode::PROTOCOL_ERROR,
        ProtocolError::ReservedOpcode(3),
    );
    assert_fails(
        &client_frame(true, 0, 0xb, b""),
        CloseCode::PROTOCOL_ERROR,
        ProtocolError::ReservedOpcode(0xb),
    );
    assert_fails(
        &client_frame(false, 0, 9, b""),
        CloseCode::PROTOCOL_ERROR,
        ProtocolError::FragmentedControl,
    );
    assert_fails(
        &client_frame(true, 0, 9, &[0; 126]),
        CloseCode::PROTOCOL_ERROR,
        ProtocolError::ControlTooLong(126),
    );
    assert_fails(
        &client_frame(true, 0, 0, b"x"),
        CloseCode::PROTOCOL_ERROR,
        ProtocolError::UnexpectedContinuation,
    );
    let mut two_starts = client_frame(false, 0, 1, b"a");
    two_starts.extend(client_frame(true, 0, 1, b"b"));
    assert_fails(
        &two_starts,
        CloseCode::PROTOCOL_ERROR,
        ProtocolError::ExpectedContinuation,
    );
}

#[test]
fn masking_rules_depend_on_role() {
    assert_fails(
        &raw_frame(true, 0, 1, b"x", None),
        CloseCode::PROTOCOL_ERROR,
        ProtocolError::UnmaskedFrame,
    );
    let now = Instant::now();
    let (mut c, _s) = open_pair(Config::default(), Config::default(), now);
    c.handle_data(now, &client_frame(true, 0, 1, b"x"));
    let events = drain(&mut c);
    assert!(events.contains(&Event::Error(Error::Protocol(ProtocolError::MaskedFrame))));
    // Leniency is a setting.
    let mut lenient = Config::default();
    lenient.strict_masking = false;
    let mut s = open_server(lenient, now);
    s.handle_data(now, &raw_frame(true, 0, 1, b"x", None));
    assert_eq!(drain(&mut s), [Event::Message(Message::text("x"))]);
}

#[test]
fn size_limits_are_1009_and_checked_before_the_payload_arrives() {
    let mut config = Config::default();
    config.max_frame_size = 1000;
    config.max_message_size = 1500;
    let now = Instant::now();
    // Only the header of a too-large frame: refused at once.
    let mut s = open_server(config.clone(), now);
    s.handle_data(now, &client_frame(true, 0, 2, &[0; 1001])[..8]);
    let events = drain(&mut s);
    assert!(events.contains(&Event::Error(Error::Protocol(
        ProtocolError::FrameTooLarge {
            size: 1001,
            limit: 1000
        }
    ))));
    closed_with(&events, CloseCode::MESSAGE_TOO_BIG);
    // Fragments that each fit but together do not.
    let mut s = open_server(config, now);
    let mut input = client_frame(false, 0, 2, &[0; 1000]);
    input.extend(client_frame(true, 0, 0, &[0; 501]));
    s.handle_data(now, &input);
    closed_with(&drain(&mut s), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn invalid_utf8_fails_fast_inside_a_frame_and_across_fragments() {
    let now = Instant::now();
    // The frame claims 20 bytes; the invalid byte is in the first 6.
    let mut s = open_server(Config::default(), now);
    let mut payload = b"hello".to_vec();
    payload.push(0xff);
    payload.extend_from_slice(&[b'a'; 14]);
    let frame = client_frame(true, 0, 1, &payload);
    s.handle_data(now, &frame[..6 + 6]);
    let events = drain(&mut s);
    assert!(
        events.contains(&Event::Error(Error::Protocol(ProtocolError::InvalidUtf8))),
        "{events:?}"
    );
    closed_with(&events, CloseCode::INVALID_PAYLOAD);

    // A character split across fragments is fine...
    let mut s = open_server(Config::default(), now);
    let euro = "€".as_bytes();
    let mut input = client_frame(false, 0, 1, &euro[..1]);
    input.extend(client_frame(false, 0, 0, &euro[1..2]));
    input.extend(client_frame(true, 0, 0, &euro[2..]));
    s.handle_data(now, &input);
    assert_eq!(drain(&mut s), [Event::Message(Message::text("€"))]);
    // ...but a message ending inside a character is not.
    let mut s = open_server(Config::default(), now);
    s.handle_data(now, &client_frame(true, 0, 1, &euro[..2]));
    closed_with(&drain(&mut s), CloseCode::INVALID_PAYLOAD);
}

#[test]
fn control_frames_interleave_with_fragments_and_ping_is_answered() {
    let now = Instant::now();
    let mut input = client_frame(false, 0, 2, b"ab");
    input.extend(client_frame(true, 0, 9, b"p1"));
    input.extend(client_frame(false, 0, 0, b"cd"));
    input.extend(client_frame(true, 0, 0xa, b"unsolicited"));
    input.extend(client_frame(true, 0, 0, b"ef"));
    let mut s = open_server(Config::default(), now);
    s.handle_data(now, &input);
    assert_eq!(
        drain(&mut s),
        [
            Event::Ping("p1".into()),
            Event::Pong("unsolicited".into()),
            Event::Message(Message::binary(&b"abcdef"[..])),
        ]
    );
    assert_eq!(
        parse_frames(&transmit(&mut s)),
        [(true, 0xa, b"p1".to_vec())]
    );
    // auto_pong is a setting.
    let mut config = Config::default();
    config.auto_pong = false;
    let mut s = open_server(config, now);
    s.handle_data(now, &client_frame(true, 0, 9, b"p"));
    assert_eq!(drain(&mut s), [Event::Ping("p".into())]);
    assert!(transmit(&mut s).is_empty());
}

#[test]
fn close_codes_are_validated() {
    for bad in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
    ] {
        assert_fails(
            &client_frame(true, 0, 8, &bad.to_be_bytes()),
            CloseCode::PROTOCOL_ERROR,
            ProtocolError::InvalidCloseCode(bad),
        );
    }
    assert_fails(
        &client_frame(true, 0, 8, &[3]),
        CloseCode::PROTOCOL_ERROR,
        ProtocolError::CloseFrameTooShort,
    );
    assert_fails(
        &client_frame(true, 0, 8, &[3, 232, 0xff]),
        CloseCode::INVALID_PAYLOAD,
        ProtocolError::InvalidUtf8,
    );
}

#[test]
fn peer_close_is_echoed_and_reported() {
    for (payload, code, echo) in [
        (
            vec![3, 232, b'b', b'y', b'e'],
            CloseCode::NORMAL,
            vec![3, 232],
        ),
        (vec![0x0f, 0xa0], CloseCode(4000), vec![0x0f, 0xa0]),
        (vec![], CloseCode::NO_STATUS, vec![]),
    ] {
        let (events, frames) = server_reacts(&client_frame(true, 0, 8, &payload));
        let reason = if payload.len() > 2 { "bye" } else { "" };
        assert_eq!(
            events,
            [Event::Closed {
                code,
                reason: reason.into(),
                clean: true
            }]
        );
        assert_eq!(frames, [(true, 8, echo)]);
    }
}

#[test]
fn local_close_waits_for_the_peer_then_times_out() {
    let now = Instant::now();
    let (mut c, mut s) = open_pair(Config::default(), Config::default(), now);
    s.close(now, CloseCode::GOING_AWAY, "shutdown").unwrap();
    assert_eq!(s.state(), State::Closing);
    assert_eq!(s.send(Message::text("late")), Err(SendError::Closed));
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(5)));
    // Messages still arrive while closing.
    c.send(Message::text("in flight")).unwrap();
    pump(&mut c, &mut s, now);
    assert_eq!(drain(&mut s), [Event::Message(Message::text("in flight"))]);
    // The peer never answers.
    s.handle_timeout(now + Duration::from_secs(4));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(now + Duration::from_secs(5));
    let events = drain(&mut s);
    assert_eq!(events[0], Event::Error(Error::CloseTimeout));
    closed_with(&events, CloseCode::ABNORMAL);
    assert!(s.is_closed());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn eof_mid_frame_is_abnormal_and_frees_buffers() {
    let now = Instant::now();
    let mut s = open_server(Config::default(), now);
    s.handle_data(now, &client_frame(true, 0, 2, &[7; 5000])[..3000]);
    assert!(s.buffered_inbound() > 0);
    s.handle_eof(now);
    assert_eq!(
        drain(&mut s),
        [Event::Closed {
            code: CloseCode::ABNORMAL,
            reason: String::new(),
            clean: false
        }]
    );
    assert_eq!(s.buffered_inbound(), 0);
    s.handle_data(now, b"ignored after close");
    assert!(drain(&mut s).is_empty());
}

#[test]
fn handshake_rejections_and_limits() {
    let now = Instant::now();
    // A request over the head limit gets 431 without waiting for the end.
    let mut config = Config::default();
    config.max_handshake_size = 1024;
    let mut s = Connection::server(config, now).unwrap();
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 2000));
    s.handle_data(now, &big);
    let events = drain(&mut s);
    assert!(matches!(
        events[0],
        Event::Error(Error::Handshake(HandshakeError::HeadTooLarge { .. }))
    ));
    let reply = String::from_utf8(transmit(&mut s)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");

    // A wrong version is delivered to the application, which rejects it.
    let mut s = Connection::server(Config::default(), now).unwrap();
    let req = String::from_utf8(upgrade_request())
        .unwrap()
        .replace("Version: 13", "Version: 12");
    s.handle_data(now, req.as_bytes());
    let Some(Event::Request(request)) = s.poll_event() else {
        panic!()
    };
    let err = request.upgrade_error().unwrap().clone();
    assert!(matches!(
        s.accept(AcceptOptions::default()),
        Err(SendError::NotUpgradable(_))
    ));
    s.respond(HttpResponse::for_error(&err)).unwrap();
    let reply = String::from_utf8(transmit(&mut s)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(reply.contains("Sec-WebSocket-Version: 13\r\n"));
    assert!(s.is_closed());

    // Garbage instead of HTTP: 400.
    let mut s = Connection::server(Config::default(), now).unwrap();
    s.handle_data(now, b"\x16\x03\x01 not http\r\n\r\n");
    assert!(String::from_utf8_lossy(&transmit(&mut s)).starts_with("HTTP/1.1 400 "));
}

#[test]
fn plain_http_can_be_answered_on_the_same_port() {
    let now = Instant::now();
    let mut s = Connection::server(Config::default(), now).unwrap();
    s.handle_data(now, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let Some(Event::Request(req)) = s.poll_event() else {
        panic!()
    };
    assert_eq!(req.path(), "/healthz");
    assert!(!req.is_upgrade());
    s.respond(HttpResponse::text(200, "ok\n")).unwrap();
    let reply = String::from_utf8(transmit(&mut s)).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\nok\n"),
        "{reply}"
    );
}

#[test]
fn handshake_timeout_fires() {
    let now = Instant::now();
    let mut s = Connection::server(Config::default(), now).unwrap();
    s.handle_data(now, b"GET / HTTP/1.1\r\n");
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(10)));
    s.handle_timeout(now + Duration::from_secs(10));
    let events = drain(&mut s);
    assert_eq!(
        events[0],
        Event::Error(Error::Handshake(HandshakeError::Timeout))
    );
    assert!(s.is_closed());
}

#[test]
fn subprotocol_and_leftover_bytes_after_the_request() {
    let now = Instant::now();
    let mut s = Connection::server(Config::default(), now).unwrap();
    let mut input = String::from_utf8(upgrade_request())
        .unwrap()
        .replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: a, b\r\n\r\n")
        .into_bytes();
    input.extend(client_frame(true, 0, 1, b"early"));
    s.handle_data(now, &input);
    assert!(matches!(s.poll_event(), Some(Event::Request(_))));
    assert!(!s.wants_read());
    assert_eq!(
        s.accept(AcceptOptions::with_protocol("c")),
        Err(SendError::UnofferedProtocol("c".into()))
    );
    s.accept(AcceptOptions::with_protocol("b")).unwrap();
    assert!(
        String::from_utf8(transmit(&mut s))
            .unwrap()
            .contains("Sec-WebSocket-Protocol: b\r\n")
    );
    assert_eq!(drain(&mut s), [Event::Message(Message::text("early"))]);
}

#[test]
fn outgoing_fragmentation_and_prepared_frames() {
    let now = Instant::now();
    let mut config = Config::default();
    config.fragment_size = Some(4);
    let (mut c, mut s) = open_pair(Config::default(), config, now);
    s.send(Message::text("hello world")).unwrap();
    let wire = transmit(&mut s);
    let frames = parse_frames(&wire);
    assert_eq!(frames.len(), 3);
    assert_eq!(
        frames.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
        [(false, 1), (false, 0), (true, 0)]
    );
    c.handle_data(now, &wire);
    assert_eq!(
        drain(&mut c),
        [Event::Message(Message::text("hello world"))]
    );

    let frame = PreparedFrame::text("shared");
    s.send_prepared(&frame).unwrap();
    pump(&mut s, &mut c, now);
    assert_eq!(drain(&mut c), [Event::Message(Message::text("shared"))]);
    assert_eq!(
        c.send_prepared(&frame),
        Err(SendError::PreparedFrameOnClient)
    );

    let parts = [Utf8Bytes::from("ab"), Utf8Bytes::from("cd")];
    c.send_text_parts(&parts).unwrap();
    pump(&mut c, &mut s, now);
    assert_eq!(drain(&mut s), [Event::Message(Message::text("abcd"))]);
}

#[test]
fn large_server_payloads_are_not_copied() {
    let now = Instant::now();
    let (_c, mut s) = open_pair(Config::default(), Config::default(), now);
    let big = bytes::Bytes::from(vec![1u8; 1 << 20]);
    s.send(Message::Binary(big.clone())).unwrap();
    let header = s.poll_transmit_chunk().unwrap();
    assert_eq!(header.len(), 10);
    assert_eq!(s.poll_transmit_chunk().unwrap().as_ptr(), big.as_ptr());
}

#[test]
fn commands_are_checked_against_state() {
    let now = Instant::now();
    let mut s = Connection::server(Config::default(), now).unwrap();
    assert_eq!(s.send(Message::text("x")), Err(SendError::NotOpen));
    assert_eq!(
        s.accept(AcceptOptions::default()),
        Err(SendError::NoPendingRequest)
    );
    let (_c, mut s) = open_pair(Config::default(), Config::default(), now);
    assert_eq!(
        s.ping(vec![0; 126].into()),
        Err(SendError::ControlTooLong(126))
    );
    assert_eq!(
        s.close(now, CloseCode::ABNORMAL, ""),
        Err(SendError::InvalidCloseCode(1006))
    );
    s.close(now, CloseCode::NORMAL, "").unwrap();
    assert_eq!(s.close(now, CloseCode::NORMAL, ""), Err(SendError::Closed));
}

#[test]
fn client_rejects_a_bad_accept() {
    let now = Instant::now();
    let mut c = client(Config::default(), now);
    transmit(&mut c);
    c.handle_data(
        now,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
    );
    let events = drain(&mut c);
    assert_eq!(
        events[0],
        Event::Error(Error::Handshake(HandshakeError::AcceptMismatch))
    );
    assert!(c.is_closed());
}

#[test]
fn any_chunking_yields_the_same_events() {
    let now = Instant::now();
    let mut input = upgrade_request();
    input.extend(client_frame(false, 0, 1, "κό".as_bytes()));
    input.extend(client_frame(true, 0, 9, b"ping"));
    input.extend(client_frame(true, 0, 0, "σμε".as_bytes()));
    input.extend(client_frame(true, 0, 2, &[5; 300]));
    input.extend(client_frame(true, 0, 8, &[3, 232]));
    let run = |chunks: &[&[u8]]| {
        let mut s = Connection::server(Config::default(), now).unwrap();
        let mut events = Vec::new();
        let mut wire = Vec::new();
        for chunk in chunks {
            s.handle_data(now, chunk);
            while let Some(e) = s.poll_event() {
                if matches!(e, Event::Request(_)) {
                    s.accept(AcceptOptions::default()).unwrap();
                }
                events.push(e);
            }
            while s.poll_transmit(&mut wire).is_some() {}
        }
        (events, wire)
    };
    let whole = run(&[&input]);
    assert_eq!(whole.0.len(), 5);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&bytes), whole);
    for split in 0..input.len() {
        assert_eq!(
            run(&[&input[..split], &input[split..]]),
            whole,
            "split at {split}"
        );
    }
}

#[test]
fn replies_to_earlier_messages_go_out_before_a_later_violation_closes() {
    // A valid message and a bad frame arrive in one read (Autobahn 3.2).
    let now = Instant::now();
    let mut s = open_server(Config::default(), now);
    let mut input = client_frame(true, 0, 1, b"first");
    input.extend(client_frame(true, 2, 1, b"bad rsv"));
    s.handle_data(now, &input);
    let Some(Event::Message(m)) = s.poll_event() else {
        panic!("message first")
    };
    s.send(m).unwrap();
    let rest = drain(&mut s);
    assert_eq!(
        rest[0],
        Event::Error(Error::Protocol(ProtocolError::ReservedBits))
    );
    let frames = parse_frames(&transmit(&mut s));
    assert_eq!(
        frames[0],
        (true, 1, b"first".to_vec()),
        "the echo comes first"
    );
    assert_eq!(frames[1].1, 8, "then the close");
}
