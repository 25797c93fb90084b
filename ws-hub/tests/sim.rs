//! Scenario tests in virtual time: every rule of the hub, with the exact
//! action sequence asserted.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::value::RawValue;
use ws_hub::{
    Action, AuthError, AuthRequest, Authoriser, BusMessage, BusTarget, Command, ConfigError,
    ConnId, HmacTokenAuth, Hub, HubConfig, Identity, Request, RoomName, UserId,
};

fn answer_pings(hub: &mut Hub, t: std::time::Instant, conn: ConnId) {
    hub.handle(t, Command::Activity { conn });
}

fn no_pings(log: Vec<String>) -> Vec<String> {
    log.into_iter().filter(|l| !l.contains(" ping ")).collect()
}

#[test]
fn welcome_message() {
    let mut s = Sim::new(quiet_config());
    s.hub.handle(
        s.now,
        Command::Connected {
            conn: ConnId(1),
            identity: Identity::user("alice"),
            remote_addr: None,
            resume: None,
        },
    );
    let sid = s.session(1);
    assert_eq!(sid.len(), 43);
    let a = s.drain();
    let [Action::Deliver { conn, payload }] = a.as_slice() else {
        panic!("{a:?}")
    };
    assert_eq!(*conn, ConnId(1));
    assert_eq!(
        String::from_utf8(payload.to_vec()).unwrap(),
        format!(
            r#"{{"type":"welcome","session":"{sid}","user":"alice","node":"node-1","ping_interval_ms":30000,"retention_ms":120000,"max_message_size":65536}}"#
        )
    );
    assert!(payload.essential);
    assert_eq!(s.hub.metrics().connections, 1);
}

#[test]
fn rooms_join_publish_leave_and_free() {
    let mut s = Sim::new(quiet_config());
    assert_eq!(s.connect(1, "alice"), ["1 <- welcome"]);
    s.connect(2, "bob");
    s.connect(3, "carol");
    assert_eq!(s.send(1, &join("r")), [join_ack(1, "r")]);
    assert_eq!(s.send(2, &join("r")), [join_ack(2, "r")]);
    // Joining twice is idempotent.
    assert_eq!(s.send(2, &join("r")), [join_ack(2, "r")]);
    assert_eq!(s.hub.room_size("r"), 2);
    assert_eq!(
        s.send(1, &publish("r", "m1", r#"{"x":1}"#)),
        [
            ack(1, "publish", "m1"),
            msg(1, 1, "r", "m1", "alice", r#"{"x":1}"#),
            msg(2, 1, "r", "m1", "alice", r#"{"x":1}"#),
        ]
    );
    assert_eq!(
        s.send(3, &publish("r", "c1", "1")),
        [nack(3, "publish", "c1", "not_member")]
    );
    assert_eq!(
        s.send(3, &publish("nope", "c2", "1")),
        [nack(3, "publish", "c2", "unknown_room")]
    );
    assert_eq!(
        s.send(2, r#"{"type":"leave","room":"r","id":"L"}"#),
        [r#"2 <- {"type":"ack","op":"leave","id":"L","room":"r"}"#]
    );
    assert_eq!(
        s.send(2, r#"{"type":"leave","room":"r"}"#),
        [r#"2 <- {"type":"nack","op":"leave","room":"r","reason":"not_member"}"#]
    );
    assert_eq!(
        s.send(1, &publish("r", "m2", "null")),
        [
            ack(1, "publish", "m2"),
            msg(1, 2, "r", "m2", "alice", "null")
        ]
    );
    assert_eq!(s.hub.rooms_of(ConnId(1)), [RoomName::new("r")]);
    s.send(1, r#"{"type":"leave","room":"r"}"#);
    assert_eq!(s.hub.room_size("r"), 0);
    assert_eq!(s.hub.metrics().rooms, 0);
    assert_eq!(
        s.send(1, &publish("r", "m3", "1")),
        [nack(1, "publish", "m3", "unknown_room")]
    );
    s.hub.check_invariants().unwrap();
}

#[test]
fn leave_on_close_after_retention_frees_rooms() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    s.connect(2, "bob");
    s.send(1, &join("r"));
    s.send(2, &join("r"));
    assert_eq!(s.disconnect(2), Vec::<String>::new());
    // Detached sessions stay members (their missed messages are buffered).
    assert_eq!(s.hub.room_size("r"), 2);
    assert_eq!(s.hub.metrics().detached_sessions, 1);
    let log = s.advance_with(secs(120), answer_pings);
    assert_eq!(no_pings(log), Vec::<String>::new());
    assert_eq!(s.hub.room_size("r"), 1);
    assert_eq!(s.hub.metrics().sessions, 1);
    // A Disconnected for an unknown connection is a no-op.
    assert_eq!(s.disconnect(2), Vec::<String>::new());
    s.disconnect(1);
    s.advance(secs(120));
    let m = s.hub.metrics();
    assert_eq!((m.rooms, m.sessions, m.connections), (0, 0, 0));
    assert_eq!(s.hub.poll_timeout(), None);
    s.hub.check_invariants().unwrap();
}

#[test]
fn direct_message_reaches_every_connection_of_the_user() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    s.connect(2, "alice");
    s.connect(3, "bob");
    let m = |c: u64| {
        format!(
            r#"{c} <- {{"type":"message","seq":1,"to":"alice","id":"d1","from":"bob","data":"hey"}}"#
        )
    };
    assert_eq!(
        s.send(
            3,
            r#"{"type":"send","user":"alice","id":"d1","data":"hey"}"#
        ),
        [ack(3, "send", "d1"), m(1), m(2)]
    );
    assert_eq!(
        s.send(3, r#"{"type":"send","user":"zed","id":"d2","data":1}"#),
        [nack(3, "send", "d2", "unknown_user")]
    );
}

#[test]
fn broadcast_reaches_everyone() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    s.connect(2, "bob");
    s.connect(3, "carol");
    let m = |c: u64| {
        format!(
            r#"{c} <- {{"type":"message","seq":1,"broadcast":true,"id":"b1","from":"bob","data":[1]}}"#
        )
    };
    assert_eq!(
        s.send(2, r#"{"type":"broadcast","id":"b1","data":[1]}"#),
        [ack(2, "broadcast", "b1"), m(1), m(2), m(3)]
    );
}

#[test]
fn room_body_is_encoded_once_and_shared() {
    let mut s = Sim::new(quiet_config());
    for c in 1..=4 {
        s.connect(c, &format!("u{c}"));
        s.send(c, &join("r"));
    }
    // Give receivers different sequence numbers.
    s.send(2, r#"{"type":"send","user":"u3","id":"d","data":0}"#);
    let actions = s.send_raw(1, &publish("r", "m1", r#"{"big":"payload"}"#));
    let payloads: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver { payload, .. } if !payload.essential => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(payloads.len(), 4);
    let ptr = payloads[0].body.as_ptr();
    for p in &payloads {
        assert_eq!(p.body.as_ptr(), ptr, "every receiver shares one body");
        assert!(p.head.starts_with(br#"{"type":"message","seq":"#));
    }
    assert_eq!(&payloads[2].head[..], br#"{"type":"message","seq":2,"#);
    assert_eq!(&payloads[0].head[..], br#"{"type":"message","seq":1,"#);
}

#[test]
fn dedup_window_by_time() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    s.connect(2, "bob");
    s.send(1, &join("r"));
    s.send(2, &join("r"));
    assert_eq!(s.send(1, &publish("r", "m1", "1")).len(), 3);
    let dup = r#"1 <- {"type":"ack","op":"publish","id":"m1","duplicate":true}"#;
    assert_eq!(s.send(1, &publish("r", "m1", "1")), [dup]);
    // Another publisher's identical id is a different message.
    assert_eq!(s.send(2, &publish("r", "m1", "2")).len(), 3);
    s.advance_with(secs(29), answer_pings);
    assert_eq!(s.send(1, &publish("r", "m1", "1")), [dup]);
    s.advance_with(secs(1), answer_pings);
    // 30 s after first sight the id is forgotten.
    assert_eq!(
        s.send(1, &publish("r", "m1", "1")),
        [
            ack(1, "publish", "m1"),
            msg(1, 3, "r", "m1", "alice", "1"),
            msg(2, 3, "r", "m1", "alice", "1"),
        ]
    );
    assert_eq!(s.hub.metrics().duplicates_suppressed, 2);
}

#[test]
fn dedup_window_by_count_per_publisher() {
    let mut s = Sim::new(HubConfig {
        dedup_per_publisher: 2,
        ..quiet_config()
    });
    s.connect(1, "alice");
    s.send(1, &join("r"));
    for id in ["a", "b", "c"] {
        assert_eq!(s.send(1, &publish("r", id, "0")).len(), 2);
    }
    // "a" was evicted by the LRU bound; "c" is still remembered.
    assert_eq!(s.send(1, &publish("r", "a", "0")).len(), 2);
    assert_eq!(
        s.send(1, &publish("r", "c", "0")),
        [r#"1 <- {"type":"ack","op":"publish","id":"c","duplicate":true}"#]
    );
    assert!(s.hub.metrics().dedup_entries <= 2);
}

#[test]
fn nacks_for_size_names_room_limit_and_authoriser() {
    struct NoSecrets;
    impl Authoriser for NoSecrets {
        fn may_join(&self, _: &UserId, room: &RoomName) -> bool {
            room.as_str() != "secret"
        }
    }
    let config = HubConfig {
        max_message_size: 100,
        max_rooms_per_conn: 2,
        max_name_len: 8,
        ..quiet_config()
    };
    let hub = Hub::new(config, secret(), ws_hub::AllowAnonymous, NoSecrets).unwrap();
    let mut s = Sim::with_hub(hub);
    s.connect(1, "alice");
    assert_eq!(
        s.send(1, &join("secret")),
        [r#"1 <- {"type":"nack","op":"join","room":"secret","reason":"forbidden"}"#]
    );
    s.send(1, &join("a"));
    s.send(1, &join("b"));
    assert_eq!(
        s.send(1, &join("c")),
        [r#"1 <- {"type":"nack","op":"join","room":"c","reason":"too_many_rooms"}"#]
    );
    let big = format!("\"{}\"", "x".repeat(200));
    assert_eq!(
        s.send(1, &publish("a", "m1", &big)),
        [nack(1, "publish", "m1", "too_large")]
    );
    assert_eq!(
        s.send(1, &join("toolongname")),
        [r#"1 <- {"type":"nack","op":"join","reason":"bad_request"}"#]
    );
    assert_eq!(
        s.send(1, r#"{"type":"publish","room":"a","id":"m2"}"#),
        [nack(1, "publish", "m2", "bad_request")]
    );
    let m = s.hub.metrics();
    assert_eq!(
        (
            m.nacks.forbidden,
            m.nacks.too_many_rooms,
            m.nacks.too_large,
            m.nacks.bad_request
        ),
        (1, 1, 1, 2)
    );
}

/// docs/PROTOCOL.md: a nack echoes `id` and `room` so that the client can
/// match it, but never one that is itself invalid (empty or longer than
/// `max_name_len`), whatever the reason; an oversized request with a
/// missing field is still nacked `too_large`, not answered with an error.
#[test]
fn nacks_never_echo_an_invalid_id_or_room() {
    let mut s = Sim::new(HubConfig {
        max_name_len: 8,
        max_message_size: 256,
        max_violations: 9,
        ..quiet_config()
    });
    s.connect(1, "alice");
    s.send(1, &join("a"));
    let bare = |op: &str, reason: &str| {
        format!(r#"1 <- {{"type":"nack","op":"{op}","reason":"{reason}"}}"#)
    };
    assert_eq!(
        s.send(1, &publish("a", "toolongid", "1")),
        [bare("publish", "bad_request")]
    );
    assert_eq!(
        s.send(1, &publish("a", "", "1")),
        [bare("publish", "bad_request")]
    );
    assert_eq!(
        s.send(
            1,
            r#"{"type":"send","user":"bob","id":"toolongid","data":1}"#
        ),
        [bare("send", "bad_request")]
    );
    assert_eq!(
        s.send(1, r#"{"type":"broadcast","id":"","data":1}"#),
        [bare("broadcast", "bad_request")]
    );
    assert_eq!(
        s.send(1, r#"{"type":"join","id":""}"#),
        [bare("join", "bad_request")]
    );
    assert_eq!(
        s.send(1, r#"{"type":"refresh","token":"t","id":"toolongid"}"#),
        [bare("refresh", "bad_request")]
    );
    let big = format!("\"{}\"", "x".repeat(300));
    assert_eq!(
        s.send(1, &publish("a", "toolongid", &big)),
        [bare("publish", "too_large")]
    );
    let pad = "x".repeat(300);
    assert_eq!(
        s.send(
            1,
            &format!(r#"{{"type":"join","room":"toolongroom","pad":"{pad}"}}"#)
        ),
        [bare("join", "too_large")]
    );
    // An oversized publish without `room` is still a publish.
    assert_eq!(
        s.send(
            1,
            &format!(r#"{{"type":"publish","id":"m3","data":{big}}}"#)
        ),
        [nack(1, "publish", "m3", "too_large")]
    );
    let m = s.hub.metrics();
    assert_eq!((m.nacks.bad_request, m.nacks.too_large), (6, 3));
    // Each of the nine was a violation (the refresh too): one more closes.
    assert_eq!(
        s.send(1, &publish("a", "", "1")),
        [
            bare("publish", "bad_request"),
            "close 1 1008 too many protocol violations".to_owned()
        ]
    );
}

#[test]
fn rate_limit_nacks_then_refills() {
    let mut s = Sim::new(HubConfig {
        rate_burst: 3,
        rate_per_sec: 1,
        ..quiet_config()
    });
    s.connect(1, "alice");
    s.send(1, &join("r"));
    assert_eq!(s.send(1, &publish("r", "m1", "1")).len(), 2);
    assert_eq!(s.send(1, &publish("r", "m2", "1")).len(), 2);
    assert_eq!(
        s.send(1, &publish("r", "m3", "1")),
        [nack(1, "publish", "m3", "rate_limited")]
    );
    // Delivery acks are not rate limited; pings are, silently.
    assert_eq!(s.send(1, r#"{"type":"ack","seq":1}"#), Vec::<String>::new());
    assert_eq!(
        s.send(1, r#"{"type":"ping","id":"p"}"#),
        Vec::<String>::new()
    );
    s.advance(secs(1));
    assert_eq!(
        s.send(1, r#"{"type":"ping","id":"p"}"#),
        [r#"1 <- {"type":"pong","id":"p"}"#]
    );
    s.advance(secs(1));
    assert_eq!(s.send(1, &publish("r", "m3", "1")).len(), 2);
    assert_eq!(s.hub.metrics().nacks.rate_limited, 1);
}

#[test]
fn malformed_input_gets_errors_and_repeated_abuse_closes() {
    let mut s = Sim::new(HubConfig {
        max_violations: 3,
        ..quiet_config()
    });
    s.connect(1, "alice");
    assert_eq!(
        s.send(1, "not json"),
        [
            r#"1 <- {"type":"error","code":"malformed","message":"not a JSON object with valid field types"}"#
        ]
    );
    assert_eq!(
        s.send(1, r#"{"type":"frobnicate"}"#),
        [r#"1 <- {"type":"error","code":"unknown_type","message":"unknown message type"}"#]
    );
    assert_eq!(
        s.cmd(Command::Received {
            conn: ConnId(1),
            data: Bytes::from_static(b"\x00\x01"),
            is_text: false,
        }),
        [
            r#"1 <- {"type":"error","code":"binary_unsupported","message":"binary messages are not supported"}"#
        ]
    );
    assert_eq!(
        s.send(1, "{"),
        [
            r#"1 <- {"type":"error","code":"malformed","message":"not a JSON object with valid field types"}"#,
            "close 1 1008 too many protocol violations",
        ]
    );
    assert!(!s.hub.is_connected(ConnId(1)));
    // Abusers do not get to resume: the session is gone.
    assert_eq!(s.hub.metrics().sessions, 0);
    assert_eq!(s.send(1, "{"), Vec::<String>::new());
    assert_eq!(s.hub.metrics().abuse_closes, 1);
}

#[test]
fn heartbeat_pings_then_closes_silent_connection() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    assert_eq!(s.hub.poll_timeout(), Some(s.t0 + secs(30)));
    // An early handle_timeout is a no-op.
    s.hub.handle_timeout(s.t0 + secs(29));
    assert!(s.drain().is_empty());
    assert_eq!(
        s.advance(secs(100)),
        [
            "@30 ping 1",
            "@60 ping 1",
            "@90 close 1 1001 heartbeat timeout"
        ]
    );
    assert_eq!(s.hub.metrics().heartbeat_timeouts, 1);
    // The session is kept for resume.
    assert_eq!(s.hub.metrics().detached_sessions, 1);
}

#[test]
fn hours_of_heartbeats_with_pongs() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    s.connect(2, "bob");
    let log = s.advance_with(secs(10 * 3600), answer_pings);
    assert_eq!(log.len(), 2 * 10 * 3600 / 30);
    assert!(log.iter().all(|l| l.contains(" ping ")));
    assert!(s.hub.is_connected(ConnId(1)) && s.hub.is_connected(ConnId(2)));
}

#[test]
fn traffic_postpones_pings() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    s.advance(secs(20));
    s.send(1, r#"{"type":"ping"}"#);
    assert_eq!(s.advance(secs(35)), ["@50 ping 1"]);
    s.cmd(Command::Activity { conn: ConnId(1) }); // pong at 55
    assert_eq!(
        s.advance(secs(200)),
        [
            "@85 ping 1",
            "@115 ping 1",
            "@145 close 1 1001 heartbeat timeout"
        ]
    );
}

#[test]
fn idle_eviction_is_separate_from_heartbeats() {
    let mut s = Sim::new(HubConfig {
        idle_timeout: Some(secs(300)),
        ..HubConfig::default()
    });
    s.connect(1, "alice");
    s.advance_with(secs(100), answer_pings);
    s.send(1, r#"{"type":"ping"}"#);
    // Pongs keep it alive but do not count as use: closed 300 s after the
    // last message.
    let log = s.advance_with(secs(1000), answer_pings);
    assert_eq!(no_pings(log), ["@400 close 1 1001 idle timeout"]);
    assert_eq!(s.hub.metrics().idle_evictions, 1);
}

fn acks_config() -> HubConfig {
    HubConfig {
        ack_timeout: secs(5),
        ack_max_backoff: secs(60),
        ack_max_retries: 2,
        ..quiet_config()
    }
}

fn two_in_room(s: &mut Sim) {
    s.connect(1, "alice");
    s.connect(2, "bob");
    s.send(1, &join("r"));
    s.send(2, &join("r"));
}

#[test]
fn delivery_acks_retransmit_with_backoff_then_close() {
    let mut s = Sim::new(acks_config());
    two_in_room(&mut s);
    assert_eq!(
        s.send(2, r#"{"type":"configure","delivery_acks":true}"#),
        [r#"2 <- {"type":"configured","delivery_acks":true}"#]
    );
    s.send(1, &publish("r", "m1", "1"));
    let m = msg(2, 1, "r", "m1", "alice", "1");
    let log = s.advance_with(secs(60), answer_pings);
    assert_eq!(
        no_pings(log),
        [
            format!("@5 {m}"),
            format!("@15 {m}"),
            "@35 close 2 1008 delivery ack timeout".to_owned(),
        ]
    );
    let metrics = s.hub.metrics();
    assert_eq!((metrics.retransmissions, metrics.ack_timeouts), (2, 1));
}

#[test]
fn delivery_acks_stop_retransmission() {
    let mut s = Sim::new(acks_config());
    two_in_room(&mut s);
    s.send(2, r#"{"type":"configure","delivery_acks":true}"#);
    s.send(1, &publish("r", "m1", "1"));
    s.send(1, &publish("r", "m2", "2"));
    s.advance(secs(1));
    assert_eq!(s.send(2, r#"{"type":"ack","seq":1}"#), Vec::<String>::new());
    let log = s.advance_with(secs(5), answer_pings);
    assert_eq!(log, [format!("@5 {}", msg(2, 2, "r", "m2", "alice", "2"))]);
    s.send(2, r#"{"type":"ack","seq":2}"#);
    // Unknown or repeated acks are harmless.
    s.send(2, r#"{"type":"ack","seq":2}"#);
    s.send(2, r#"{"type":"ack","seq":999}"#);
    let log = s.advance_with(secs(300), answer_pings);
    assert_eq!(no_pings(log), Vec::<String>::new());
    assert!(s.hub.is_connected(ConnId(2)));
}

#[test]
fn too_many_unacked_is_a_slow_consumer() {
    let mut s = Sim::new(HubConfig {
        max_unacked: 2,
        ..acks_config()
    });
    two_in_room(&mut s);
    s.send(2, r#"{"type":"configure","delivery_acks":true}"#);
    s.send(1, &publish("r", "m1", "1"));
    s.send(1, &publish("r", "m2", "1"));
    assert_eq!(
        s.send(1, &publish("r", "m3", "1")),
        [
            ack(1, "publish", "m3"),
            msg(1, 3, "r", "m3", "alice", "1"),
            "close 2 1013 slow consumer".to_owned(),
        ]
    );
    assert_eq!(s.hub.metrics().slow_consumer_disconnects, 1);
}

#[test]
fn resume_replays_exactly_the_gap_then_live() {
    let mut s = Sim::new(quiet_config());
    two_in_room(&mut s);
    s.send(1, &publish("r", "m1", "1"));
    let sid = s.session(2);
    s.disconnect(2);
    assert_eq!(
        s.send(1, &publish("r", "m2", "2")),
        [ack(1, "publish", "m2"), msg(1, 2, "r", "m2", "alice", "2")]
    );
    s.send(1, &publish("r", "m3", "3"));
    s.advance_with(secs(60), answer_pings);
    assert_eq!(
        s.resume(3, "bob", &sid, 1),
        [
            "3 <- welcome".to_owned(),
            format!(r#"3 <- {{"type":"resumed","session":"{sid}","last_seq":1,"replayed":2}}"#),
            msg(3, 2, "r", "m2", "alice", "2"),
            msg(3, 3, "r", "m3", "alice", "3"),
        ]
    );
    assert_eq!(s.session(3), sid);
    assert_eq!(
        s.send(1, &publish("r", "m4", "4")),
        [
            ack(1, "publish", "m4"),
            msg(1, 4, "r", "m4", "alice", "4"),
            msg(3, 4, "r", "m4", "alice", "4"),
        ]
    );
    assert_eq!(s.hub.metrics().resumes_ok, 1);
    s.hub.check_invariants().unwrap();
}

#[test]
fn resume_takes_over_a_half_open_connection_and_replays_in_flight() {
    let mut s = Sim::new(quiet_config());
    two_in_room(&mut s);
    for i in 1..=3 {
        s.send(1, &publish("r", &format!("m{i}"), &i.to_string()));
    }
    let sid = s.session(2);
    // Bob's socket died silently after he processed seq 1; the hub has not
    // noticed yet.
    assert_eq!(
        s.resume(3, "bob", &sid, 1),
        [
            "close 2 1000 session resumed elsewhere".to_owned(),
            "3 <- welcome".to_owned(),
            format!(r#"3 <- {{"type":"resumed","session":"{sid}","last_seq":1,"replayed":2}}"#),
            msg(3, 2, "r", "m2", "alice", "2"),
            msg(3, 3, "r", "m3", "alice", "3"),
        ]
    );
    s.hub.check_invariants().unwrap();
}

#[test]
fn resume_overflow_is_reported_and_session_kept() {
    let mut s = Sim::new(HubConfig {
        replay_max_messages: 2,
        ..quiet_config()
    });
    two_in_room(&mut s);
    s.send(1, &publish("r", "m1", "1"));
    let sid = s.session(2);
    s.disconnect(2);
    for i in 2..=4 {
        s.send(1, &publish("r", &format!("m{i}"), "0"));
    }
    assert_eq!(
        s.resume(3, "bob", &sid, 1),
        [
            "3 <- welcome".to_owned(),
            format!(r#"3 <- {{"type":"resume_failed","reason":"overflow","session":"{sid}"}}"#),
        ]
    );
    // Rooms survive; numbering continues.
    assert_eq!(
        s.send(1, &publish("r", "m5", "5")),
        [
            ack(1, "publish", "m5"),
            msg(1, 5, "r", "m5", "alice", "5"),
            msg(3, 5, "r", "m5", "alice", "5"),
        ]
    );
    // Had it asked from seq 2, the buffer would have been enough.
    let sid = s.session(3);
    s.disconnect(3);
    let out = s.resume(4, "bob", &sid, 4);
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out[1].contains(r#""replayed":1"#));
    assert_eq!(s.hub.metrics().resumes_failed, 1);
}

#[test]
fn resume_failures_expired_unknown_forbidden_invalid_seq() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    s.connect(2, "bob");
    s.send(2, &join("r"));
    let sid = s.session(2);
    s.disconnect(2);
    let failed = |out: &[String], reason: &str| {
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].ends_with(" <- welcome"), "{out:?}");
        assert!(
            out[1].contains(&format!(r#""type":"resume_failed","reason":"{reason}""#)),
            "{out:?}"
        );
    };
    failed(&s.resume(3, "carol", &sid, 0), "forbidden");
    failed(&s.resume(4, "bob", &sid, 99), "invalid_seq");
    failed(&s.resume(5, "bob", "not-a-session", 0), "unknown");
    // Other attempts left the detached session intact.
    assert_eq!(s.hub.room_size("r"), 1);
    s.advance_with(secs(121), answer_pings);
    failed(&s.resume(6, "bob", &sid, 0), "expired");
    assert_ne!(s.session(6), sid);
    // An id minted by an earlier run (other seed, same key) is "expired".
    let old = {
        let mut h = Hub::with_defaults(
            HubConfig {
                session_seed: 99,
                ..quiet_config()
            },
            secret(),
        )
        .unwrap();
        h.handle(
            s.now,
            Command::Connected {
                conn: ConnId(1),
                identity: Identity::user("bob"),
                remote_addr: None,
                resume: None,
            },
        );
        h.session_id(ConnId(1)).unwrap().as_str().to_owned()
    };
    failed(&s.resume(7, "bob", &old, 0), "expired");
    assert_eq!(s.hub.metrics().resumes_failed, 5);
}

#[test]
fn anonymous_sessions_are_bearer_resumable() {
    let mut s = Sim::new(quiet_config());
    s.cmd(Command::Connected {
        conn: ConnId(1),
        identity: Identity::anonymous("anon-1"),
        remote_addr: None,
        resume: None,
    });
    let sid = s.session(1);
    s.disconnect(1);
    let out = s.cmd(Command::Connected {
        conn: ConnId(2),
        identity: Identity::anonymous("anon-2"),
        remote_addr: None,
        resume: Some(ws_hub::ResumeRequest {
            session: sid,
            last_seq: Some(0),
        }),
    });
    assert!(out[1].contains(r#""type":"resumed""#), "{out:?}");
    assert_eq!(s.hub.user(ConnId(2)), Some(&UserId::new("anon-1")));
}

#[test]
fn overflowed_outbound_queue_closes_1013_and_keeps_session() {
    let mut s = Sim::new(quiet_config());
    two_in_room(&mut s);
    let sid = s.session(2);
    assert_eq!(
        s.cmd(Command::Overflowed { conn: ConnId(2) }),
        ["close 2 1013 slow consumer"]
    );
    s.send(1, &publish("r", "m1", "1"));
    let out = s.resume(3, "bob", &sid, 0);
    assert_eq!(out.last(), Some(&msg(3, 1, "r", "m1", "alice", "1")));
    assert_eq!(s.hub.metrics().slow_consumer_disconnects, 1);
}

fn bus_msg(origin: &str, from: &str, id: &str, data: &str) -> BusMessage {
    BusMessage {
        origin: origin.into(),
        target: BusTarget::Room(RoomName::new("r")),
        from: UserId::new(from),
        id: id.into(),
        data: RawValue::from_string(data.into()).unwrap(),
    }
}

#[test]
fn bus_subscribe_publish_receive_dedup_and_echo() {
    let mut s = Sim::new(HubConfig {
        cluster: true,
        node_id: "n1".into(),
        ..quiet_config()
    });
    s.connect(1, "alice");
    assert_eq!(
        s.send(1, &join("r")),
        ["sub r".to_owned(), join_ack(1, "r")]
    );
    assert_eq!(
        s.send(1, &publish("r", "m1", "1")),
        [
            ack(1, "publish", "m1"),
            msg(1, 1, "r", "m1", "alice", "1"),
            r#"bus {"origin":"n1","target":{"kind":"room","name":"r"},"from":"alice","id":"m1","data":1}"#.to_owned(),
        ]
    );
    assert_eq!(
        s.cmd(Command::Bus(bus_msg("n2", "dave", "x1", "5"))),
        [msg(1, 2, "r", "x1", "dave", "5")]
    );
    // The same message again (e.g. retried on a third node): once only.
    assert_eq!(
        s.cmd(Command::Bus(bus_msg("n3", "dave", "x1", "5"))),
        Vec::<String>::new()
    );
    // Our own message echoed back by the broker is ignored.
    assert_eq!(
        s.cmd(Command::Bus(bus_msg("n1", "alice", "m1", "1"))),
        Vec::<String>::new()
    );
    // A client retrying on this node what it first published on another.
    s.cmd(Command::Bus(bus_msg("n2", "alice", "m9", "9")));
    assert_eq!(
        s.send(1, &publish("r", "m9", "9")),
        [r#"1 <- {"type":"ack","op":"publish","id":"m9","duplicate":true}"#]
    );
    assert_eq!(
        s.send(1, r#"{"type":"leave","room":"r"}"#),
        [
            "unsub r".to_owned(),
            r#"1 <- {"type":"ack","op":"leave","room":"r"}"#.to_owned()
        ]
    );
    let m = s.hub.metrics();
    assert_eq!(
        (
            m.bus_in,
            m.bus_out,
            m.bus_echoes_ignored,
            m.duplicates_suppressed
        ),
        (4, 1, 1, 2)
    );
}

#[test]
fn shutdown_closes_everyone_and_refuses_new() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "a");
    s.connect(2, "b");
    assert_eq!(
        s.cmd(Command::Shutdown),
        [
            "close 1 1001 server shutting down",
            "close 2 1001 server shutting down"
        ]
    );
    assert_eq!(s.connect(3, "c"), ["close 3 1001 server shutting down"]);
    assert_eq!(s.hub.poll_timeout(), None);
}

#[test]
fn connection_limit_refuses_1013() {
    let mut s = Sim::new(HubConfig {
        max_connections: 1,
        ..quiet_config()
    });
    s.connect(1, "a");
    assert_eq!(s.connect(2, "b"), ["close 2 1013 server full"]);
    assert_eq!(s.hub.metrics().refused, 1);
}

#[test]
fn invalid_config_is_a_typed_error() {
    let err = Hub::with_defaults(
        HubConfig {
            rate_burst: 0,
            ..HubConfig::default()
        },
        secret(),
    )
    .err();
    assert_eq!(
        err,
        Some(ConfigError::Zero {
            field: "rate_burst"
        })
    );
}

#[test]
fn an_all_zero_session_secret_is_refused() {
    let err = Hub::with_defaults(HubConfig::default(), ws_hub::SessionSecret::new([0; 32])).err();
    assert_eq!(err, Some(ConfigError::ZeroSessionSecret));
}

#[test]
fn hub_runs_the_authenticator() {
    let auth = HmacTokenAuth::new(b"k".to_vec());
    let token = auth.issue("alice", 2000);
    let hub = Hub::new(HubConfig::default(), secret(), auth, ws_hub::AllowAll).unwrap();
    let req = |token| AuthRequest {
        conn: ConnId(1),
        token,
        remote_addr: None,
        now_unix_secs: 1000,
        namespace: "",
    };
    assert_eq!(
        hub.authenticate(&req(Some(&token))),
        Ok(Identity::user("alice"))
    );
    assert_eq!(hub.authenticate(&req(None)), Err(AuthError::MissingToken));
}

#[test]
fn timers_scale_to_many_connections() {
    let n = 20_000u64;
    let mut s = Sim::new(quiet_config());
    for c in 0..n {
        s.hub.handle(
            s.now,
            Command::Connected {
                conn: ConnId(c),
                identity: Identity::user(format!("u{c}")),
                remote_addr: None,
                resume: None,
            },
        );
    }
    s.drain();
    // Nothing due: nothing happens, whatever the number of connections.
    s.hub.handle_timeout(s.t0 + secs(29));
    assert!(s.drain().is_empty());
    assert_eq!(s.hub.poll_timeout(), Some(s.t0 + secs(30)));
    s.hub.handle_timeout(s.t0 + secs(30));
    let pings = s
        .drain()
        .iter()
        .filter(|a| matches!(a, Action::Ping { .. }))
        .count();
    assert_eq!(pings, n as usize);
    assert_eq!(s.hub.poll_timeout(), Some(s.t0 + secs(60)));
}

#[test]
fn pings_over_the_rate_are_dropped_and_are_not_violations() {
    // Issue 16: 20 pings with burst 10 and max_violations 5 used to close
    // the connection with 1008.
    let mut s = Sim::new(HubConfig {
        rate_per_sec: 5,
        rate_burst: 10,
        max_violations: 5,
        ..quiet_config()
    });
    s.connect(1, "alice");
    let mut pongs = 0;
    for i in 0..20 {
        let out = s.send(1, &format!(r#"{{"type":"ping","id":"p{i}"}}"#));
        assert!(out.iter().all(|l| !l.contains("close")), "{out:?}");
        pongs += out.len();
    }
    assert_eq!(pongs, 10);
    // Configures over the limit are dropped the same way.
    assert_eq!(
        s.send(1, r#"{"type":"configure","delivery_acks":false}"#),
        Vec::<String>::new()
    );
    assert!(s.hub.is_connected(ConnId(1)));
    let m = s.hub.metrics();
    assert_eq!((m.dropped_over_rate, m.abuse_closes), (11, 0));
    // Requests over the limit still are violations.
    let mut closed = false;
    for i in 0..10 {
        let out = s.send(1, &join(&format!("r{i}")));
        closed |= out.iter().any(|l| l.contains("close 1 1008"));
    }
    assert!(closed);
}

#[test]
fn rate_limited_join_and_leave_nacks_carry_room_and_id() {
    let mut s = Sim::new(HubConfig {
        rate_per_sec: 1,
        rate_burst: 1,
        ..quiet_config()
    });
    s.connect(1, "alice");
    assert_eq!(s.send(1, &join("a")), [join_ack(1, "a")]);
    assert_eq!(
        s.send(1, r#"{"type":"join","room":"b","id":"j2"}"#),
        [r#"1 <- {"type":"nack","op":"join","id":"j2","room":"b","reason":"rate_limited"}"#]
    );
    assert_eq!(
        s.send(1, r#"{"type":"leave","room":"a"}"#),
        [r#"1 <- {"type":"nack","op":"leave","room":"a","reason":"rate_limited"}"#]
    );
}

#[test]
fn a_bad_last_seq_is_answered_invalid_seq() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "bob");
    let sid = s.session(1);
    s.disconnect(1);
    for query in [
        format!("session={sid}&last_seq=abc"),
        format!("session={sid}&last_seq=-1"),
    ] {
        let out = s.cmd(Command::Connected {
            conn: ConnId(2),
            identity: Identity::user("bob"),
            remote_addr: None,
            resume: ws_hub::ResumeRequest::from_query(&query),
        });
        assert_eq!(out.len(), 2, "{query}: {out:?}");
        assert!(
            out[1].contains(r#""type":"resume_failed","reason":"invalid_seq""#),
            "{query}: {out:?}"
        );
        s.disconnect(2);
    }
    // An empty session id is answered too (`unknown`).
    let out = s.cmd(Command::Connected {
        conn: ConnId(3),
        identity: Identity::user("bob"),
        remote_addr: None,
        resume: ws_hub::ResumeRequest::from_query("session=&last_seq=1"),
    });
    assert!(out[1].contains(r#""reason":"unknown""#), "{out:?}");
    // The detached session was not disturbed by the failed attempts.
    let out = s.resume(4, "bob", &sid, 0);
    assert!(out[1].contains(r#""type":"resumed""#), "{out:?}");
}

#[test]
fn a_clean_close_discards_the_session_unless_asked_to_keep_it() {
    let mut s = Sim::new(quiet_config());
    let closed = |s: &mut Sim, conn: u64, code: u16, reason: &str| {
        s.cmd(Command::ClientClosed {
            conn: ConnId(conn),
            code,
            reason: reason.into(),
        });
        s.disconnect(conn);
    };
    // 1000 and "no code" (1005): the client is done.
    for (conn, code) in [(1, 1000), (2, 1005)] {
        s.connect(conn, "alice");
        s.send(conn, &join("r"));
        let sid = s.session(conn);
        closed(&mut s, conn, code, "bye");
        let m = s.hub.metrics();
        assert_eq!((m.sessions, m.detached_sessions, m.rooms), (0, 0, 0));
        let out = s.resume(10 + conn, "alice", &sid, 0);
        assert!(out[1].contains(r#""reason":"expired""#), "{out:?}");
        s.disconnect(10 + conn);
        s.advance_with(secs(121), answer_pings);
    }
    // 1000 with the keep-session reason, 1001 (a page going away) and an
    // abrupt end keep the session.
    for (conn, code, reason) in [(3, 1000, ws_hub::KEEP_SESSION), (4, 1001, ""), (5, 0, "")] {
        s.connect(conn, "alice");
        s.send(conn, &join("r"));
        let sid = s.session(conn);
        if code == 0 {
            s.disconnect(conn);
        } else {
            closed(&mut s, conn, code, reason);
        }
        assert_eq!(s.hub.metrics().detached_sessions, 1, "{code} {reason}");
        let out = s.resume(10 + conn, "alice", &sid, 0);
        assert!(out[1].contains(r#""type":"resumed""#), "{out:?}");
        s.disconnect(10 + conn);
        s.advance_with(secs(121), answer_pings);
    }
    s.hub.check_invariants().unwrap();
}

#[test]
fn a_full_dedup_table_refuses_new_ids_instead_of_evicting_others() {
    // Issue 16: with max 4 and 2 per publisher, other publishers' ids used
    // to evict alice's id, and her repeat was delivered again.
    let mut s = Sim::new(HubConfig {
        dedup_max_entries: 4,
        dedup_per_publisher: 2,
        ..quiet_config()
    });
    for (c, u) in [(1, "alice"), (2, "bob"), (3, "carol"), (4, "dave")] {
        s.connect(c, u);
        s.send(c, &join("r"));
    }
    assert_eq!(s.send(1, &publish("r", "a1", "1")).len(), 5);
    for (c, id) in [(2, "b1"), (2, "b2"), (3, "c1")] {
        assert_eq!(s.send(c, &publish("r", id, "1")).len(), 5);
    }
    // Full: new ids of others are refused, not delivered.
    for (c, id) in [(3, "c2"), (4, "d1")] {
        let refused = nack(c, "publish", id, "busy");
        assert_eq!(s.send(c, &publish("r", id, "1")), [refused]);
    }
    // Alice's repeat is still a duplicate.
    assert_eq!(
        s.send(1, &publish("r", "a1", "1")),
        [r#"1 <- {"type":"ack","op":"publish","id":"a1","duplicate":true}"#]
    );
    // Bob, at his own bound, replaces his own oldest id.
    assert_eq!(s.send(2, &publish("r", "b3", "1")).len(), 5);
    // After the window, everyone can publish again.
    s.advance_with(secs(30), answer_pings);
    assert_eq!(s.send(4, &publish("r", "d1", "1")).len(), 5);
    assert_eq!(s.hub.metrics().nacks.busy, 2);
    s.hub.check_invariants().unwrap();
}

#[test]
fn dedup_per_publisher_above_the_total_is_refused_at_start() {
    let bad = HubConfig {
        dedup_max_entries: 4,
        dedup_per_publisher: 5,
        ..quiet_config()
    };
    assert_eq!(
        Hub::with_defaults(bad, secret()).err(),
        Some(ConfigError::DedupBounds)
    );
}

#[test]
fn parsed_requests_get_the_answers_raw_messages_get() {
    let config = HubConfig {
        max_message_size: 100,
        max_name_len: 8,
        rate_burst: 12,
        rate_per_sec: 1,
        max_violations: 12,
        ..quiet_config()
    };
    let limit = config.max_message_size;
    let big = format!(
        r#"{{"type":"publish","room":"lobby","id":"big","data":"{}"}}"#,
        "x".repeat(100)
    );
    let huge_join = format!(
        r#"{{"type":"join","room":"lobby","id":"j{}"}}"#,
        " ".repeat(100)
    );
    let script: Vec<(u64, &[u8], bool)> = vec![
        (1, br#"{"type":"join","room":"lobby","id":"j1"}"#, true),
        (2, br#"{"type":"join","room":"lobby"}"#, true),
        (
            1,
            br#"{"type":"publish","room":"lobby","id":"m1","data":{"a":1}}"#,
            true,
        ),
        (
            1,
            br#"{"type":"publish","room":"lobby","id":"m1","data":{"a":1}}"#,
            true,
        ),
        (
            2,
            br#"{"type":"send","user":"alice","id":"d1","data":"hi\"there"}"#,
            true,
        ),
        (2, br#"{"type":"broadcast","id":"b1","data":null}"#, true),
        (1, big.as_bytes(), true),
        (1, huge_join.as_bytes(), true),
        (1, &[b'['; 101], true),
        (1, br#"{"type":"ack","seq":1}"#, true),
        (1, br#"{"type":"configure","delivery_acks":true}"#, true),
        (1, br#"{"type":"ping","id":"p"}"#, true),
        (1, br#"{"type":"publish","id":"m2"}"#, true),
        (1, br#"{"type":"ack"}"#, true),
        (1, br#"{"type":"nope"}"#, true),
        (1, b"not json", true),
        (1, b"\x00\x01", false),
        (1, br#"{"type":"join","room":"much-too-long-a-name"}"#, true),
        (2, br#"{"type":"leave","room":"lobby","id":"l1"}"#, true),
        (
            1,
            br#"{"type":"publish","room":"lobby","id":"m3","data":1}"#,
            true,
        ),
    ];
    let mut raw = Sim::new(config.clone());
    let mut parsed = Sim::new(config);
    for s in [&mut raw, &mut parsed] {
        s.connect(1, "alice");
        s.connect(2, "bob");
    }
    // The script, then joins until the rate limit and the violations close
    // connection 1.
    let pings = std::iter::repeat_n((1, &br#"{"type":"join","room":"r"}"#[..], true), 30);
    for (conn, data, is_text) in script.into_iter().chain(pings) {
        let from_raw = raw.cmd(Command::Received {
            conn: ConnId(conn),
            data: Bytes::copy_from_slice(data),
            is_text,
        });
        let from_parsed = parsed.cmd(Command::Request {
            conn: ConnId(conn),
            request: Request::parse(data, is_text, limit),
        });
        assert_eq!(from_raw, from_parsed, "{}", String::from_utf8_lossy(data));
    }
    let metrics = raw.hub.metrics();
    assert_eq!(metrics, parsed.hub.metrics());
    assert!(
        !raw.hub.is_connected(ConnId(1)),
        "abuse closes the connection"
    );
    assert_eq!(metrics.abuse_closes, 1);
    assert!(metrics.nacks.too_large >= 2 && metrics.nacks.rate_limited >= 1);
}
