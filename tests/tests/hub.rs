//! The hub server's scenario suite (`docs/PROTOCOL.md`), over real
//! loopback sockets. Every scenario runs against the tokio server and the
//! smol server with the same code; the client runtime alternates, so each
//! scenario covers two of the four server/client pairs and the suite
//! covers all four.
//!
//! Every wait is bounded ([`WAIT`]); the tests assert behaviour, not
//! timing. Where a scenario needs something to happen "never", it asks the
//! server for an ordering barrier (an application `ping` answered in order)
//! or waits for a later event that the server must produce after it.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};
use ws_async::Runtime;
use ws_proto::CloseCode;
use ws_server::server::{Plugins, ServerConfig, Settings};
use ws_tests::hub_client::*;
use ws_tests::*;

/// A validated server configuration from a few settings.
fn config(f: impl FnOnce(&mut Settings)) -> ServerConfig {
    let mut settings = Settings::default();
    f(&mut settings);
    ServerConfig::from_settings(&settings).expect("valid settings")
}

/// (server runtime, client runtime): both servers, client runtimes
/// alternating with `salt` so the suite covers every pair.
fn runtimes(salt: usize) -> [(Rt, Rt); 2] {
    [
        (Rt::Tokio, RUNTIMES[salt % 2]),
        (Rt::Smol, RUNTIMES[(salt + 1) % 2]),
    ]
}

fn is_ack(v: &Value) -> bool {
    v["type"] == "ack" && v["duplicate"] != true
}

fn assert_ack(v: &Value, what: &str) {
    assert!(is_ack(v), "{what}: expected a plain ack, got {v}");
}

fn assert_nack(v: &Value, reason: &str, what: &str) {
    assert!(
        v["type"] == "nack" && v["reason"] == reason,
        "{what}: expected nack {reason}, got {v}"
    );
}

/// The `message`s in `seen`.
fn messages(seen: &[Value]) -> Vec<&Value> {
    seen.iter().filter(|v| v["type"] == "message").collect()
}

async fn connect<R: Runtime>(rt: &R, addr: SocketAddr, target: &str) -> HubClient<R> {
    HubClient::connect(rt.clone(), addr, target)
        .await
        .unwrap_or_else(|e| panic!("connect {target}: {e}"))
}

// ---------------------------------------------------------------------
// Connecting: tokens, Origin
// ---------------------------------------------------------------------

const SECRET: &str = "suite-secret";

#[test]
fn valid_tokens_are_accepted_in_query_and_header_and_bad_ones_refused_with_401() {
    let cfg = config(|s| s.auth_secret = Some(SECRET.into()));
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let target = format!("/ws?token={}", token(SECRET, "alice"));
            let alice = connect(&rt, addr, &target).await;
            assert_eq!(alice.user(), "alice", "{srv:?}: token in the query");
            assert_eq!(alice.welcome()["node"], "node-1");
            assert!(!alice.session().is_empty());
            let options = ConnectOptions {
                headers: vec![(
                    "Authorization".into(),
                    format!("Bearer {}", token(SECRET, "bob")),
                )],
                ..ConnectOptions::default()
            };
            let bob = HubClient::connect_with(rt.clone(), addr, "/ws", &options)
                .await
                .expect("bearer token");
            assert_eq!(bob.user(), "bob", "{srv:?}: token in the header");
            // base64url with `=` padding is accepted too (the 32-byte
            // signature pads to 44 characters).
            let padded = format!("/ws?token={}=", token(SECRET, "carol"));
            let carol = connect(&rt, addr, &padded).await;
            assert_eq!(carol.user(), "carol", "{srv:?}: padded token");
            alice.close().await;
            bob.close().await;
            carol.close().await;
        });
        let other_secret = ws_hub::HmacTokenAuth::new(b"another".to_vec());
        let expired = ws_hub::HmacTokenAuth::new(SECRET.as_bytes().to_vec()).issue("alice", 1);
        let refused = [
            upgrade_request("/ws", &[]),
            upgrade_request("/ws?token=garbage", &[]),
            upgrade_request(
                &format!(
                    "/ws?token={}",
                    other_secret.issue("alice", FAR_FUTURE_UNIX_SECS)
                ),
                &[],
            ),
            upgrade_request(&format!("/ws?token={expired}"), &[]),
            upgrade_request("/ws", &["Authorization: Bearer not-a-token"]),
        ];
        for request in &refused {
            let reply = http(addr, request);
            assert_eq!(reply.status, 401, "{srv:?}: {request:?} -> {reply:?}");
            assert!(
                reply.head.starts_with("HTTP/1.1 401 "),
                "{srv:?}: {reply:?}"
            );
        }
        let missing = http(addr, &upgrade_request("/ws", &[]));
        assert!(
            missing.body.contains("missing token"),
            "{srv:?}: {missing:?}"
        );
        wait_metric(addr, "ws_auth_failures_total", |v| v == 6);
        assert_eq!(metric(addr, "ws_handshakes_total"), 3, "{srv:?}");
    }
}

#[test]
fn without_a_secret_clients_are_anonymous() {
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, ServerConfig::default());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let a = connect(&rt, addr, "/ws").await;
            let b = connect(&rt, addr, "/").await;
            assert!(a.user().starts_with("anon-"), "{srv:?}: {}", a.welcome());
            assert!(b.user().starts_with("anon-"), "{srv:?}: {}", b.welcome());
            assert_ne!(a.user(), b.user());
            assert_ne!(a.session(), b.session());
            let w = a.welcome();
            assert_eq!(w["ping_interval_ms"], 30_000);
            assert_eq!(w["retention_ms"], 120_000);
            assert_eq!(w["max_message_size"], 65_536);
        });
    }
}

#[test]
fn a_bad_origin_is_refused_with_403_and_a_good_one_accepted() {
    let cfg = config(|s| {
        s.allowed_origins = Some("https://good.example, https://also.example".into());
    });
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        for extra in ["Origin: https://evil.example", "Origin: null"] {
            let reply = http(addr, &upgrade_request("/ws", &[extra]));
            assert_eq!(reply.status, 403, "{srv:?}: {extra:?} -> {reply:?}");
        }
        on_runtime!(cli, |rt| async move {
            // No Origin at all: not a browser, allowed.
            let mut c = connect(&rt, addr, "/ws").await;
            assert_ack(&c.join("lobby").await, "join without Origin");
            c.close().await;
            for origin in ["https://good.example", "https://also.example"] {
                let options = ConnectOptions {
                    origin: Some(origin.into()),
                    ..ConnectOptions::default()
                };
                let mut c = HubClient::connect_with(rt.clone(), addr, "/ws", &options)
                    .await
                    .unwrap_or_else(|e| panic!("{srv:?}: {origin}: {e}"));
                assert_ack(&c.join("lobby").await, "join");
                c.close().await;
            }
        });
        wait_metric(addr, "ws_origin_refusals_total", |v| v == 2);
    }
}

#[test]
fn connections_over_the_per_ip_limit_get_429_and_others_stay_up() {
    let cfg = config(|s| s.max_connections_per_ip = Some(2));
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut a = connect(&rt, addr, "/ws").await;
            let mut b = connect(&rt, addr, "/ws").await;
            // A third upgrade from the same address is refused before it opens.
            let reply = http(addr, &upgrade_request("/ws", &[]));
            assert_eq!(reply.status, 429, "{srv:?}: {reply:?}");
            // The two open connections are undisturbed.
            assert_ack(&a.join("lobby").await, "join");
            assert_ack(&b.join("lobby").await, "join");
            // Closing one frees its slot.
            a.close().await;
            let mut c = None;
            for _ in 0..200 {
                if let Ok(client) = HubClient::connect(rt.clone(), addr, "/ws").await {
                    c = Some(client);
                    break;
                }
                sleep(&rt, Duration::from_millis(10)).await;
            }
            let mut c = c.expect("a freed slot is reusable");
            assert_ack(&c.join("lobby").await, "join");
            c.close().await;
            b.close().await;
        });
        wait_metric(addr, "ws_ip_limit_refusals_total", |v| v >= 1);
    }
}

// ---------------------------------------------------------------------
// Messaging
// ---------------------------------------------------------------------

#[test]
fn join_leave_publish_direct_and_broadcast() {
    let cfg = config(|s| s.auth_secret = Some(SECRET.into()));
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let as_user = |u: &str| format!("/ws?token={}", token(SECRET, u));
            let mut a1 = connect(&rt, addr, &as_user("alice")).await;
            let mut a2 = connect(&rt, addr, &as_user("alice")).await;
            let mut b = connect(&rt, addr, &as_user("bob")).await;

            // join and publish: every member gets it, the publisher too,
            // after its ack; a non-member gets nothing.
            assert_ack(&a1.join("lobby").await, "a1 join");
            assert_ack(&b.join("lobby").await, "b join");
            assert_ack(&b.join("lobby").await, "joining again is acked again");
            let ack = a1.publish("lobby", "m1", json!({"text": "hi"})).await;
            assert_eq!(ack, json!({"type": "ack", "op": "publish", "id": "m1"}));
            let expected = json!({"type": "message", "seq": 1, "room": "lobby",
                "id": "m1", "from": "alice", "data": {"text": "hi"}});
            assert_eq!(b.expect("message").await, expected, "{srv:?}: bob");
            assert_eq!(a1.expect("message").await, expected, "{srv:?}: alice");
            assert_eq!(messages(&a2.barrier().await).len(), 0, "a2 not a member");

            // leave: no more messages from the room.
            assert_ack(&b.leave("lobby").await, "b leave");
            assert_ack(&a1.publish("lobby", "m2", json!(2)).await, "publish m2");
            assert_eq!(a1.expect("message").await["id"], "m2");
            assert_eq!(messages(&b.barrier().await).len(), 0, "{srv:?}: bob left");

            // direct: every connection of the user, not the sender.
            let ack = b.send_to("alice", "d1", json!("psst")).await;
            assert_eq!(ack, json!({"type": "ack", "op": "send", "id": "d1"}));
            let direct = |seq: u64| {
                json!({"type": "message", "seq": seq, "to": "alice", "id": "d1",
                    "from": "bob", "data": "psst"})
            };
            assert_eq!(a1.expect("message").await, direct(3), "{srv:?}: a1");
            assert_eq!(a2.expect("message").await, direct(1), "{srv:?}: a2");
            assert_eq!(messages(&b.barrier().await).len(), 0, "sender not a target");

            // broadcast: every connection, the sender included.
            let ack = a2.broadcast("b1", json!({"alert": true})).await;
            assert_eq!(ack, json!({"type": "ack", "op": "broadcast", "id": "b1"}));
            for (c, seq) in [(&mut a1, 4), (&mut a2, 2), (&mut b, 2)] {
                let m = c.expect("message").await;
                assert_eq!(
                    m,
                    json!({"type": "message", "seq": seq, "broadcast": true, "id": "b1",
                        "from": "alice", "data": {"alert": true}}),
                    "{srv:?}"
                );
            }
            // Nothing else arrived anywhere.
            for c in [&mut a1, &mut a2, &mut b] {
                let extra = c.barrier().await;
                assert!(messages(&extra).is_empty(), "{srv:?}: {extra:?}");
            }
        });
        assert_eq!(
            wait_metric(addr, "ws_publishes_total", |v| v == 4),
            4,
            "m1, m2, d1, b1"
        );
    }
}

/// Refuses every room whose name starts with `staff-` to everyone but
/// `boss`, and lets nobody broadcast.
struct StaffOnly;

impl ws_hub::Authoriser for StaffOnly {
    fn may_join(&self, user: &ws_hub::UserId, room: &ws_hub::RoomName) -> bool {
        !room.as_str().starts_with("staff-") || user.as_str() == "boss"
    }

    fn may_broadcast(&self, _: &ws_hub::UserId) -> bool {
        false
    }
}

#[test]
fn an_application_authoriser_refuses_with_forbidden() {
    let cfg = config(|s| s.auth_secret = Some(SECRET.into()));
    for (srv, cli) in runtimes(0) {
        let plugins = Plugins::from_config(&cfg).with_authoriser(StaffOnly);
        let server = start_hub_with(srv, cfg.clone(), plugins);
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let as_user = |u: &str| format!("/ws?token={}", token(SECRET, u));
            let mut alice = connect(&rt, addr, &as_user("alice")).await;
            let mut boss = connect(&rt, addr, &as_user("boss")).await;
            let refused = alice.join("staff-room").await;
            assert_nack(&refused, "forbidden", "alice joins a staff room");
            assert_ack(&alice.join("lobby").await, "alice joins the lobby");
            assert_ack(&boss.join("staff-room").await, "boss joins a staff room");
            let refused = boss.broadcast("b1", json!(1)).await;
            assert_nack(&refused, "forbidden", "{srv:?}: nobody broadcasts");
            // Alice is not in the room she was refused.
            assert_ack(&boss.publish("staff-room", "m1", json!(1)).await, "publish");
            assert_eq!(boss.expect("message").await["id"], "m1");
            assert!(messages(&alice.barrier().await).is_empty(), "{srv:?}");
        });
    }
}

#[test]
fn deflate_members_get_a_publish_compressed_and_plain_members_uncompressed() {
    let cfg = config(|_| {});
    for (srv, cli) in runtimes(7) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let deflate = ConnectOptions {
                deflate: true,
                ..ConnectOptions::default()
            };
            let mut members = Vec::new();
            for compress in [true, true, false] {
                let options = if compress {
                    deflate.clone()
                } else {
                    ConnectOptions::default()
                };
                let c = HubClient::connect_with(rt.clone(), addr, "/ws", &options)
                    .await
                    .expect("connect");
                assert_eq!(c.deflate().is_some(), compress, "{srv:?}");
                members.push(c);
            }
            for c in &mut members {
                assert_ack(&c.join("news").await, "join");
            }
            // A body well over the threshold; each member has its own seq
            // head in front of the shared (compressed-once) body.
            let text = "compressible hub payload ".repeat(400);
            let ack = members[0]
                .publish("news", "big", json!({"text": text}))
                .await;
            assert_ack(&ack, "publish");
            for (i, c) in members.iter_mut().enumerate() {
                let m = c.expect("message").await;
                assert_eq!(m["data"]["text"], text.as_str(), "{srv:?}: member {i}");
                assert_eq!(m["id"], "big");
            }
            for c in members {
                c.close().await;
            }
        });
    }
}

#[test]
fn a_publish_retransmitted_with_the_same_id_is_delivered_once() {
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, ServerConfig::default());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut p = connect(&rt, addr, "/ws").await;
            let mut q = connect(&rt, addr, "/ws").await;
            let mut r = connect(&rt, addr, "/ws").await;
            for c in [&mut p, &mut q, &mut r] {
                assert_ack(&c.join("room").await, "join");
            }
            assert_ack(&p.publish("room", "once", json!(1)).await, "first");
            let again = p.publish("room", "once", json!(1)).await;
            assert_eq!(again["type"], "ack", "{srv:?}: {again}");
            assert_eq!(again["duplicate"], true, "{srv:?}: {again}");
            // Again with other data: still the same id, still once.
            let third = p.publish("room", "once", json!("changed")).await;
            assert_eq!(third["duplicate"], true, "{srv:?}: {third}");
            // Ids are per publisher: the same id from someone else is new.
            assert_ack(&r.publish("room", "once", json!(2)).await, "r's own id");
            let seen = q.barrier().await;
            let got: Vec<(&Value, &Value)> = messages(&seen)
                .iter()
                .map(|m| (&m["from"], &m["data"]))
                .collect();
            let (pu, ru) = (json!(p.user()), json!(r.user()));
            assert_eq!(
                got,
                vec![(&pu, &json!(1)), (&ru, &json!(2))],
                "{srv:?}: {seen:?}"
            );
        });
        wait_metric(addr, "ws_duplicates_suppressed_total", |v| v == 2);
        assert_eq!(metric(addr, "ws_publishes_total"), 2);
    }
}

#[test]
fn acks_nacks_and_errors() {
    let cfg = config(|s| {
        s.max_message_size = Some(512);
        s.max_rooms_per_conn = Some(2);
    });
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut c = connect(&rt, addr, "/ws").await;
            let mut other = connect(&rt, addr, "/ws").await;
            assert_ack(&other.join("theirs").await, "other join");

            assert_ack(&c.join("a").await, "join a");
            assert_ack(&c.join("b").await, "join b");
            let nack = c.join("c").await;
            assert_eq!(
                nack,
                json!({"type": "nack", "op": "join", "room": "c", "reason": "too_many_rooms"})
            );
            let nack = c.publish("nobody-here", "p1", json!(1)).await;
            assert_eq!(
                nack,
                json!({"type": "nack", "op": "publish", "id": "p1", "reason": "unknown_room"})
            );
            let nack = c.publish("theirs", "p2", json!(1)).await;
            assert_nack(&nack, "not_member", "publish to a room one is not in");
            assert_nack(&c.leave("theirs").await, "not_member", "leave");
            assert_eq!(
                c.leave("nowhere").await,
                json!({"type": "nack", "op": "leave", "room": "nowhere", "reason": "not_member"})
            );
            let big = "x".repeat(1000);
            assert_nack(&c.publish("a", "p3", json!(big)).await, "too_large", "big");
            assert_nack(
                &c.send_to("ghost", "p4", json!(1)).await,
                "unknown_user",
                "send",
            );
            let long = "r".repeat(129);
            c.request(json!({"type": "join", "room": long})).await;
            assert_nack(
                &c.expect_where("join nack", |v| v["op"] == "join").await,
                "bad_request",
                "long room",
            );
            c.request(json!({"type": "publish", "room": "a", "data": 1}))
                .await;
            assert_nack(
                &c.expect_where("publish nack", |v| v["op"] == "publish")
                    .await,
                "bad_request",
                "publish without id",
            );
            // None of the refused publishes reached anyone.
            assert!(messages(&other.barrier().await).is_empty());

            // Errors for what is not a request.
            c.send_text("not json").await.expect("send");
            assert_eq!(c.expect("error").await["code"], "malformed");
            c.request(json!({"type": "frobnicate"})).await;
            assert_eq!(c.expect("error").await["code"], "unknown_type");
            c.send_binary(b"\x01\x02").await.expect("send");
            assert_eq!(c.expect("error").await["code"], "binary_unsupported");
            c.request(json!({"type": "ack"})).await;
            assert_eq!(c.expect("error").await["code"], "bad_request");

            // Ping and configure are answered.
            c.request(json!({"type": "ping", "id": "p1"})).await;
            assert_eq!(c.expect("pong").await, json!({"type": "pong", "id": "p1"}));
            c.request(json!({"type": "configure", "delivery_acks": false}))
                .await;
            assert_eq!(
                c.expect("configured").await,
                json!({"type": "configured", "delivery_acks": false})
            );
            // Still connected after these few violations.
            assert_ack(
                &c.publish("a", "p5", json!(5)).await,
                "publish after all that",
            );
            assert!(c.take_pending().iter().all(|v| v["type"] != "nack"));
        });
        // too_many_rooms, unknown_room, not_member x3, too_large,
        // unknown_user, bad_request x2.
        wait_metric(addr, "ws_nacks_total", |v| v == 9);
    }
}

#[test]
fn messages_beyond_the_violation_budget_close_the_connection_with_1008() {
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, ServerConfig::default());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut c = connect(&rt, addr, "/ws").await;
            for _ in 0..25 {
                if c.send_text("{").await.is_err() {
                    break;
                }
            }
            let info = c.closed().await;
            assert_eq!(info.code, CloseCode(1008), "{srv:?}: {info:?}");
            assert_eq!(info.reason, "too many protocol violations");
        });
    }
}

// ---------------------------------------------------------------------
// Delivery acks, heartbeats
// ---------------------------------------------------------------------

#[test]
fn unacked_deliveries_are_retransmitted_until_acked() {
    let cfg = config(|s| {
        s.ack_timeout_ms = Some(300);
        s.ack_max_retries = Some(2);
    });
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut publisher = connect(&rt, addr, "/ws").await;
            let mut silent = connect(&rt, addr, "/ws").await;
            let mut diligent = connect(&rt, addr, "/ws").await;
            for c in [&mut silent, &mut diligent] {
                c.request(json!({"type": "configure", "delivery_acks": true}))
                    .await;
                assert_eq!(
                    c.expect("configured").await,
                    json!({"type": "configured", "delivery_acks": true})
                );
            }
            for c in [&mut publisher, &mut silent, &mut diligent] {
                assert_ack(&c.join("acks").await, "join");
            }
            assert_ack(&publisher.publish("acks", "m1", json!(1)).await, "publish");

            // The diligent client acks at once.
            let first = diligent.expect("message").await;
            let seq = first["seq"].as_u64().expect("seq");
            diligent.request(json!({"type": "ack", "seq": seq})).await;

            // The silent one gets the same message again and again (same
            // seq), then is closed: retransmissions exhausted.
            let original = silent.expect("message").await;
            for attempt in 1..=2 {
                let again = silent.expect("message").await;
                assert_eq!(again, original, "{srv:?}: retransmission {attempt}");
            }
            let info = silent.closed().await;
            assert_eq!(info.code, CloseCode(1008), "{srv:?}: {info:?}");
            assert_eq!(info.reason, "delivery ack timeout");
            assert!(
                messages(&silent.take_pending()).is_empty(),
                "{srv:?}: nothing beyond the 2 retransmissions"
            );

            // By then the diligent client's message would have been
            // retransmitted too had its ack been ignored; it was not, and
            // the connection is fine.
            let after = diligent.barrier().await;
            assert!(messages(&after).is_empty(), "{srv:?}: {after:?}");
            assert_ack(&publisher.publish("acks", "m2", json!(2)).await, "m2");
            let m2 = diligent.expect("message").await;
            assert_eq!(
                (m2["seq"].as_u64(), &m2["id"]),
                (Some(seq + 1), &json!("m2"))
            );
        });
        assert_eq!(metric(addr, "ws_retransmissions_total"), 2, "{srv:?}");
        assert_eq!(metric(addr, "ws_ack_timeouts_total"), 1, "{srv:?}");
    }
}

#[test]
fn a_client_that_never_answers_pings_is_closed_with_1001() {
    let cfg = config(|s| {
        s.ping_interval_ms = Some(100);
        s.heartbeat_timeout_ms = Some(400);
        s.close_timeout_ms = Some(500);
    });
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        // A raw client: completes the upgrade and reads, but never pongs.
        let silent = std::thread::spawn(move || {
            let mut tcp = raw_client(addr);
            read_frames_until_eof(&mut tcp)
        });
        on_runtime!(cli, |rt| async move {
            // A live client (its WebSocket answers pings while it reads)
            // outlives several heartbeat timeouts.
            let mut live = connect(&rt, addr, "/ws").await;
            assert_eq!(live.welcome()["ping_interval_ms"], 100);
            assert_eq!(
                live.recv_within(Duration::from_millis(1500)).await,
                Recv::Timeout
            );
            assert!(messages(&live.barrier().await).is_empty());
            live.close().await;
        });
        let frames = silent.join().expect("raw client");
        let pings = frames.iter().filter(|(op, _)| *op == 0x9).count();
        assert!(pings >= 1, "{srv:?}: the server pinged: {frames:?}");
        let (op, close) = frames.last().expect("frames");
        assert_eq!(*op, 0x8, "{srv:?}: ends with a close frame: {frames:?}");
        assert_eq!(close_code(close), 1001, "{srv:?}");
        assert_eq!(&close[2..], b"heartbeat timeout");
        assert_eq!(metric(addr, "ws_heartbeat_timeouts_total"), 1, "{srv:?}");
    }
}

// ---------------------------------------------------------------------
// Resume
// ---------------------------------------------------------------------

#[test]
fn resume_after_a_dropped_connection_replays_exactly_the_missed_messages() {
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, ServerConfig::default());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut p = connect(&rt, addr, "/ws").await;
            let mut a = connect(&rt, addr, "/ws").await;
            assert_ack(&a.join("r").await, "a join");
            assert_ack(&p.join("r").await, "p join");
            for id in ["m1", "m2"] {
                assert_ack(&p.publish("r", id, json!(id)).await, id);
                assert_eq!(a.expect("message").await["id"], id);
            }
            let (session, last_seq) = (a.session(), a.last_seq());
            assert_eq!(last_seq, 2);
            a.abort();
            // The session waits, detached, still in its room.
            wait_metric(addr, "ws_detached_sessions", |v| v == 1);
            for id in ["m3", "m4", "m5"] {
                assert_ack(&p.publish("r", id, json!(id)).await, id);
            }
            let target = format!("/ws?session={session}&last_seq={last_seq}");
            let mut a = connect(&rt, addr, &target).await;
            assert_eq!(a.session(), session, "{srv:?}: same session");
            assert_eq!(
                a.next().await,
                json!({"type": "resumed", "session": session, "last_seq": 2, "replayed": 3})
            );
            let replayed: Vec<Value> = vec![a.next().await, a.next().await, a.next().await];
            let got: Vec<(u64, &str)> = replayed
                .iter()
                .map(|m| {
                    (
                        m["seq"].as_u64().unwrap_or(0),
                        m["id"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            assert_eq!(got, [(3, "m3"), (4, "m4"), (5, "m5")], "{srv:?}");
            // Live again, in the same room, with no repeat or gap.
            assert_ack(&p.publish("r", "m6", json!("m6")).await, "m6");
            let live = a.barrier().await;
            assert_eq!(live.len(), 1, "{srv:?}: {live:?}");
            assert_eq!(
                (live[0]["seq"].as_u64(), &live[0]["id"]),
                (Some(6), &json!("m6"))
            );

            // Resuming while the old connection is still open (half-open
            // socket) moves the session and closes the old one with 1000.
            let target = format!("/ws?session={session}&last_seq=6");
            let mut b = connect(&rt, addr, &target).await;
            assert_eq!(
                b.next().await,
                json!({"type": "resumed", "session": session, "last_seq": 6, "replayed": 0})
            );
            let info = a.closed().await;
            assert_eq!(info.code, CloseCode(1000), "{srv:?}: {info:?}");
            assert_eq!(info.reason, "session resumed elsewhere");
            assert_ack(&p.publish("r", "m7", json!("m7")).await, "m7");
            let live = b.barrier().await;
            assert_eq!(message_ids(&live), ["m7"], "{srv:?}");
            assert_eq!(live[0]["seq"], 7);

            // A session id the server never issued.
            let mut stranger = connect(&rt, addr, "/ws?session=bogus&last_seq=3").await;
            let failed = stranger.next().await;
            assert_eq!(failed["type"], "resume_failed", "{failed}");
            assert_eq!(failed["reason"], "unknown", "{failed}");
            assert_eq!(failed["session"], stranger.session().as_str());
            assert_ne!(stranger.session(), session);
        });
        assert_eq!(metric(addr, "ws_resumes_total"), 2, "{srv:?}");
    }
}

#[test]
fn resume_past_the_replay_buffer_reports_the_loss() {
    let cfg = config(|s| s.replay_max_messages = Some(4));
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut p = connect(&rt, addr, "/ws").await;
            let mut a = connect(&rt, addr, "/ws").await;
            assert_ack(&a.join("r").await, "a join");
            assert_ack(&p.join("r").await, "p join");
            let session = a.session();
            a.abort();
            wait_metric(addr, "ws_detached_sessions", |v| v == 1);
            for i in 1..=10 {
                let id = format!("m{i}");
                assert_ack(&p.publish("r", &id, json!(i)).await, &id);
            }
            let target = format!("/ws?session={session}&last_seq=0");
            let mut a = connect(&rt, addr, &target).await;
            assert_eq!(a.session(), session, "{srv:?}: the session is kept");
            assert_eq!(
                a.next().await,
                json!({"type": "resume_failed", "reason": "overflow", "session": session})
            );
            // Nothing replayed; the room and the seq numbering are kept.
            assert_ack(&p.publish("r", "m11", json!(11)).await, "m11");
            let live = a.barrier().await;
            assert_eq!(live.len(), 1, "{srv:?}: {live:?}");
            assert_eq!(
                (live[0]["seq"].as_u64(), &live[0]["id"]),
                (Some(11), &json!("m11"))
            );
        });
        assert_eq!(metric(addr, "ws_resume_failures_total"), 1, "{srv:?}");
    }
}

// ---------------------------------------------------------------------
// Slow consumers, rate limits
// ---------------------------------------------------------------------

#[test]
fn a_slow_consumer_is_disconnected_while_the_others_keep_receiving() {
    let cfg = config(|s| {
        s.outbound_max_messages = Some(64);
        s.outbound_max_bytes = Some(256 * 1024);
        s.socket_max_outbound = Some(16 * 1024);
        s.rate_per_sec = Some(1_000_000);
        s.rate_burst = Some(1_000_000);
        s.close_timeout_ms = Some(1000);
    });
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        // Joins, then never reads again.
        let mut slow = raw_client(addr);
        assert_eq!(raw_recv_json(&mut slow)["type"], "welcome");
        raw_send_text(&mut slow, r#"{"type":"join","room":"feed"}"#);
        assert_eq!(raw_recv_json(&mut slow)["op"], "join");

        let (published, received) = on_runtime!(cli, |rt| async move {
            let mut publisher = connect(&rt, addr, "/ws").await;
            let mut observer = connect(&rt, addr, "/ws").await;
            assert_ack(&publisher.join("feed").await, "join");
            assert_ack(&observer.join("feed").await, "join");
            let data = json!("x".repeat(4096));
            let publishing = async {
                let mut n = 0u32;
                loop {
                    for _ in 0..100 {
                        n += 1;
                        let id = format!("f{n}");
                        assert_ack(&publisher.publish("feed", &id, data.clone()).await, &id);
                        publisher.take_pending();
                    }
                    if metric(addr, "ws_slow_consumer_disconnects_total") >= 1 {
                        break;
                    }
                    assert!(
                        n < 20_000,
                        "{srv:?}: the slow consumer was never disconnected"
                    );
                }
                assert_ack(&publisher.publish("feed", "end", json!(null)).await, "end");
                n
            };
            let observing = async {
                let mut ids = Vec::new();
                loop {
                    let m = observer.expect("message").await;
                    let id = m["id"].as_str().unwrap_or_default().to_owned();
                    if id == "end" {
                        break ids;
                    }
                    ids.push(id);
                }
            };
            futures_lite::future::zip(publishing, observing).await
        });
        // Publisher and observer are gone; the slow consumer's connection
        // must be released although it never reads.
        assert!(
            server.wait_active_at_most(0, WAIT),
            "{srv:?}: the slow consumer's connection is still held ({} active) although \
             it was closed as a slow consumer",
            server.active()
        );
        let expected: Vec<String> = (1..=published).map(|i| format!("f{i}")).collect();
        assert!(
            received == expected,
            "{srv:?}: the observer got {} of {published} messages in order",
            received.len()
        );
        // The slow consumer's connection is closed (the close frame, if it
        // ever gets out, is 1013).
        let frames = read_frames_until_eof(&mut slow);
        let close = match frames.last() {
            Some((0x8, payload)) => {
                assert_eq!(close_code(payload), 1013, "{srv:?}");
                "close 1013"
            }
            _ => "no close frame",
        };
        println!(
            "slow consumer ({srv:?} server): disconnected after {published} publishes of 4 KiB \
             ({close}; it had {} frames buffered); the observer got all of them",
            frames.len()
        );
        assert_eq!(metric(addr, "ws_slow_consumer_disconnects_total"), 1);
        wait_metric(addr, "ws_connections", |v| v == 0);
    }
}

#[test]
fn drop_oldest_tells_the_slow_client_how_many_messages_it_lost() {
    let cfg = config(|s| {
        s.slow_consumer = Some("drop-oldest".into());
        s.outbound_max_messages = Some(64);
        s.outbound_max_bytes = Some(1 << 20);
        s.socket_max_outbound = Some(16 * 1024);
        s.rate_per_sec = Some(1_000_000);
        s.rate_burst = Some(1_000_000);
    });
    // Far more than the kernel's socket buffers and the queue can hold.
    const COUNT: u32 = 1500;
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut publisher = connect(&rt, addr, "/ws").await;
            let mut slow = connect(&rt, addr, "/ws").await;
            assert_ack(&slow.join("feed").await, "join");
            assert_ack(&publisher.join("feed").await, "join");
            let data = json!("y".repeat(16 * 1024));
            // `slow` is not polled meanwhile: it reads nothing.
            for n in 1..=COUNT {
                let id = format!("f{n}");
                assert_ack(&publisher.publish("feed", &id, data.clone()).await, &id);
                publisher.take_pending();
            }
            assert_ack(&publisher.publish("feed", "end", json!(null)).await, "end");
            let (mut delivered, mut dropped, mut last) = (0u64, 0u64, 0u64);
            loop {
                let v = slow.next().await;
                match v["type"].as_str() {
                    Some("dropped") => {
                        let count = v["count"].as_u64().expect("count");
                        assert!(count > 0, "{v}");
                        dropped += count;
                    }
                    Some("message") if v["id"] == "end" => break,
                    Some("message") => {
                        let n: u64 = v["id"]
                            .as_str()
                            .and_then(|s| s[1..].parse().ok())
                            .expect("id");
                        assert!(n > last, "{srv:?}: out of order: f{n} after f{last}");
                        last = n;
                        delivered += 1;
                    }
                    _ => panic!("{srv:?}: unexpected {v}"),
                }
            }
            println!(
                "drop-oldest ({srv:?} server): {COUNT} published, {delivered} delivered, \
                 {dropped} reported dropped"
            );
            assert!(dropped > 0, "{srv:?}: nothing was dropped");
            assert_eq!(
                delivered + dropped,
                u64::from(COUNT),
                "{srv:?}: every message is either delivered or counted as dropped"
            );
            // Still connected.
            assert!(messages(&slow.barrier().await).is_empty());
        });
        assert_eq!(metric(addr, "ws_slow_consumer_disconnects_total"), 0);
    }
}

/// Reads whole server frames from a raw connection, many per read.
fn read_frame(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    use std::io::Read;
    loop {
        if let Ok(Some((header, start))) = ws_proto::frame::FrameHeader::decode(buf) {
            let end = start + usize::try_from(header.payload_len).expect("length");
            if buf.len() >= end {
                let payload = buf[start..end].to_vec();
                buf.drain(..end);
                return (header.opcode, payload);
            }
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = tcp
            .read(&mut chunk)
            .expect("read (a stall ends in the read timeout)");
        assert!(n > 0, "EOF while waiting for a frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The next text frame as JSON (pings skipped); a close frame fails.
fn read_json(tcp: &mut TcpStream, buf: &mut Vec<u8>, who: &str) -> Value {
    loop {
        match read_frame(tcp, buf) {
            (0x1, payload) => return serde_json::from_slice(&payload).expect("JSON"),
            (0x8, payload) => panic!("{who} was closed: code {}", close_code(&payload)),
            _ => {}
        }
    }
}

#[test]
fn a_burst_reaches_every_subscriber_and_no_reader_that_keeps_up_is_cut_off() {
    // A burst far larger than one outbox (1,024 messages by default)
    // arrives in one write, as it does when a server has fallen behind.
    // Every reader keeps up (the kernel's socket buffers alone could hold
    // the burst), so none of them may be taken for a slow consumer: not
    // the subscribers, and not the publisher, which gets an ack and its
    // own copy of every message.
    const BURST: usize = 3000;
    const SUBSCRIBERS: usize = 16;
    let cfg = config(|s| {
        s.rate_per_sec = Some(1_000_000);
        s.rate_burst = Some(1_000_000);
    });
    for (srv, _) in runtimes(0) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        let join = |name: &str| {
            let (mut tcp, mut buf) = (raw_client(addr), Vec::new());
            assert_eq!(read_json(&mut tcp, &mut buf, name)["type"], "welcome");
            raw_send_text(&mut tcp, r#"{"type":"join","room":"burst"}"#);
            assert_ack(&read_json(&mut tcp, &mut buf, name), "join");
            (tcp, buf)
        };
        let readers: Vec<_> = (0..SUBSCRIBERS)
            .map(|i| {
                let (mut tcp, mut buf) = join(&format!("subscriber {i}"));
                std::thread::spawn(move || {
                    let who = format!("{srv:?}: subscriber {i}");
                    for n in 1..=BURST {
                        let m = read_json(&mut tcp, &mut buf, &who);
                        assert_eq!(m["type"], "message", "{who}: {m}");
                        assert_eq!(m["id"], format!("b{n}"), "{who}: out of order");
                    }
                })
            })
            .collect();
        let (mut publisher, mut buf) = join("publisher");
        let mut burst = Vec::new();
        for n in 1..=BURST {
            let text = format!(r#"{{"type":"publish","room":"burst","id":"b{n}","data":{n}}}"#);
            burst.extend_from_slice(&client_frame(true, 0x1, text.as_bytes()));
        }
        publisher.write_all(&burst).expect("write the burst");
        let (mut acks, mut copies) = (0, 0);
        while acks < BURST || copies < BURST {
            let v = read_json(&mut publisher, &mut buf, &format!("{srv:?}: publisher"));
            match v["type"].as_str() {
                Some("ack") => acks += 1,
                Some("message") => copies += 1,
                _ => panic!("{srv:?}: publisher got {v}"),
            }
        }
        for reader in readers {
            reader.join().expect("every subscriber got the whole burst");
        }
        assert_eq!(
            metric(addr, "ws_slow_consumer_disconnects_total"),
            0,
            "{srv:?}"
        );
    }
}

#[test]
fn a_client_over_its_rate_is_nacked_rate_limited() {
    let cfg = config(|s| {
        s.rate_per_sec = Some(1);
        s.rate_burst = Some(5);
    });
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut c = connect(&rt, addr, "/ws").await;
            assert_ack(&c.join("r").await, "join (one token)");
            const SENT: usize = 12;
            for i in 0..SENT {
                c.request(
                    json!({"type": "publish", "room": "r", "id": format!("p{i}"), "data": i}),
                )
                .await;
            }
            let (mut acked, mut limited) = (0, 0);
            for i in 0..SENT {
                let reply = c.reply("publish", "id", &format!("p{i}")).await;
                if is_ack(&reply) {
                    acked += 1;
                } else {
                    assert_nack(&reply, "rate_limited", "over the rate");
                    limited += 1;
                }
            }
            // 4 tokens left after the join, plus at most a couple refilled.
            assert!((4..=6).contains(&acked), "{srv:?}: {acked} acked");
            assert_eq!(acked + limited, SENT);
            // One message per accepted publish, none for the refused ones
            // (the barrier's ping needs a token: wait for one to refill).
            sleep(&rt, Duration::from_millis(1500)).await;
            let seen = c.barrier().await;
            assert_eq!(messages(&seen).len(), acked, "{srv:?}: {seen:?}");
        });
    }
}

// ---------------------------------------------------------------------
// HTTP side, shutdown
// ---------------------------------------------------------------------

#[test]
fn healthz_and_metrics_report_the_scenario() {
    let cfg = config(|s| s.handshake_timeout_ms = Some(300));
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        let health = http_get(addr, "/healthz");
        assert_eq!(
            (health.status, health.body.as_str()),
            (200, "ok\n"),
            "{srv:?}"
        );
        assert_eq!(http_get(addr, "/nowhere").status, 404);
        let post = http(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(post.status, 405);

        let reply = http_get(addr, "/metrics");
        assert!(
            reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
            "{reply:?}"
        );
        let before = metrics(addr);
        for name in [
            "ws_connections",
            "ws_rooms",
            "ws_messages_in_total",
            "ws_messages_out_total",
            "ws_bytes_in_total",
            "ws_bytes_out_total",
            "ws_duplicates_suppressed_total",
            "ws_retransmissions_total",
            "ws_slow_consumer_disconnects_total",
            "ws_resumes_total",
            "ws_handshake_failures_total",
        ] {
            assert_eq!(before.get(name), Some(&0), "{srv:?}: {name} at start");
        }

        // A handshake that never completes.
        let mut stalled = TcpStream::connect(addr).expect("connect");
        stalled.write_all(b"GET /ws HTTP/1.1\r\n").expect("write");
        wait_metric(addr, "ws_handshake_failures_total", |v| v == 1);
        // It is disconnected without an HTTP answer (docs/PROTOCOL.md).
        stalled
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stalled, &mut answer);
        assert!(answer.is_empty(), "{srv:?}: {answer:?}");

        on_runtime!(cli, |rt| async move {
            let mut a = connect(&rt, addr, "/ws").await;
            let mut b = connect(&rt, addr, "/ws").await;
            assert_ack(&a.join("x").await, "join");
            assert_ack(&b.join("x").await, "join");
            assert_ack(&b.join("y").await, "join");
            assert_ack(&a.publish("x", "1", json!(1)).await, "publish");
            assert_eq!(a.publish("x", "1", json!(1)).await["duplicate"], true);
            assert_ack(&b.publish("y", "2", json!(2)).await, "publish");
            assert_eq!(a.barrier().await.len(), 1);
            assert_eq!(b.barrier().await.len(), 2);
            // 3 joins, 3 publishes, 2 pings.
            wait_metric(addr, "ws_messages_in_total", |v| v == 8);
            let now = metrics(addr);
            let expect = [
                ("ws_connections", 2),
                ("ws_connections_total", 2),
                ("ws_handshakes_total", 2),
                ("ws_rooms", 2),
                ("ws_publishes_total", 2),
                ("ws_duplicates_suppressed_total", 1),
                ("ws_handshake_failures_total", 1),
            ];
            for (name, value) in expect {
                assert_eq!(now[name], value, "{srv:?}: {name}");
            }
            assert!(now["ws_http_requests_total"] >= 5, "{srv:?}: {now:?}");
            // 3 deliveries of the 2 publishes, 6 acks, 2 pongs, 2 welcomes.
            assert_eq!(now["ws_messages_out_total"], 13, "{srv:?}");
            assert!(now["ws_bytes_in_total"] > 0 && now["ws_bytes_out_total"] > 0);
            a.close().await;
            b.close().await;
        });
        wait_metric(addr, "ws_connections", |v| v == 0);
        drop(stalled);
    }
}

#[test]
fn graceful_shutdown_delivers_close_1001_to_every_client() {
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, ServerConfig::default());
        let addr = server.addr;
        let server = &server;
        on_runtime!(cli, |rt| async move {
            let mut clients = Vec::new();
            for _ in 0..5 {
                let mut c = connect(&rt, addr, "/ws").await;
                assert_ack(&c.join("all").await, "join");
                clients.push(c);
            }
            // A message queued for everyone just before the shutdown is
            // flushed before the close.
            assert_ack(
                &clients[0].publish("all", "last", json!(1)).await,
                "publish",
            );
            server.trigger_shutdown();
            for c in &mut clients {
                let info = c.closed().await;
                assert_eq!(info.code, CloseCode(1001), "{srv:?}: {info:?}");
                assert_eq!(info.reason, "server shutting down");
                assert!(info.clean, "{srv:?}: {info:?}");
                assert_eq!(message_ids(&c.take_pending()), ["last"], "{srv:?}");
            }
        });
        assert!(
            server.wait_active_at_most(0, WAIT),
            "{srv:?}: every connection ended"
        );
    }
}

// ---------------------------------------------------------------------
// Issue 16: where the server and docs/PROTOCOL.md used to disagree
// ---------------------------------------------------------------------

#[test]
fn pings_over_the_rate_are_dropped_unanswered_and_do_not_close_the_connection() {
    let cfg = config(|s| {
        s.rate_per_sec = Some(5);
        s.rate_burst = Some(10);
        s.max_violations = Some(5);
    });
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut c = connect(&rt, addr, "/ws").await;
            const SENT: usize = 20;
            for i in 0..SENT {
                c.request(json!({"type": "ping", "id": format!("p{i}")}))
                    .await;
            }
            // Let the bucket refill for the barrier's own ping.
            sleep(&rt, Duration::from_millis(1500)).await;
            let seen = c.barrier().await;
            let pongs: Vec<&Value> = seen.iter().filter(|v| v["type"] == "pong").collect();
            // The burst of 10, plus at most a couple refilled; the rest
            // were dropped without an answer and without a close.
            assert!((10..SENT).contains(&pongs.len()), "{srv:?}: {seen:?}");
            assert!(
                seen.iter().all(|v| v["type"] == "pong"),
                "{srv:?}: {seen:?}"
            );
            assert_eq!(c.close_info(), None, "{srv:?}: still open");
            assert_ack(&c.join("still-here").await, "join after the pings");
            c.close().await;
        });
        assert_eq!(metric(addr, "ws_abuse_closes_total"), 0, "{srv:?}");
    }
}

#[test]
fn rate_limited_join_and_leave_nacks_carry_the_room_and_the_id() {
    let cfg = config(|s| {
        s.rate_per_sec = Some(1);
        s.rate_burst = Some(1);
    });
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut c = connect(&rt, addr, "/ws").await;
            let requests = [
                json!({"type": "join", "room": "r0", "id": "j0"}),
                json!({"type": "join", "room": "r1", "id": "j1"}),
                json!({"type": "join", "room": "r2"}),
                json!({"type": "leave", "room": "r0", "id": "l0"}),
                json!({"type": "leave", "room": "r1"}),
            ];
            for r in &requests {
                c.request(r.clone()).await;
            }
            // One reply per request, in order, each naming its room (and
            // its id when it had one).
            let mut limited = 0;
            for r in &requests {
                let reply = c.next().await;
                assert!(
                    reply["type"] == "ack" || reply["type"] == "nack",
                    "{srv:?}: {reply}"
                );
                assert_eq!(reply["op"], r["type"], "{srv:?}: {r} -> {reply}");
                assert_eq!(reply["room"], r["room"], "{srv:?}: {r} -> {reply}");
                assert_eq!(reply["id"], r["id"], "{srv:?}: {r} -> {reply}");
                if reply["reason"] == "rate_limited" {
                    limited += 1;
                }
            }
            assert!(limited >= 3, "{srv:?}: {limited} rate limited");
        });
    }
}

#[test]
fn resuming_after_a_restart_is_answered_unknown_and_a_bad_last_seq_invalid_seq() {
    for (srv, cli) in runtimes(0) {
        let first = start_hub(srv, ServerConfig::default());
        let addr = first.addr;
        let session = on_runtime!(cli, |rt| async move {
            let c = connect(&rt, addr, "/ws").await;
            let session = c.session();
            c.abort();
            session
        });
        drop(first);
        // The same flags, a new process run.
        let second = start_hub(srv, ServerConfig::default());
        let addr = second.addr;
        on_runtime!(cli, |rt| async move {
            let target = format!("/ws?session={session}&last_seq=0");
            let mut c = connect(&rt, addr, &target).await;
            let failed = c.next().await;
            assert_eq!(
                failed,
                json!({"type": "resume_failed", "reason": "unknown", "session": c.session()}),
                "{srv:?}"
            );
            assert_ne!(c.session(), session);
            let own = c.session();
            c.abort();
            wait_metric(addr, "ws_detached_sessions", |v| v == 1);
            for bad in ["abc", "-1"] {
                let target = format!("/ws?session={own}&last_seq={bad}");
                let mut c = connect(&rt, addr, &target).await;
                let failed = c.next().await;
                assert_eq!(failed["type"], "resume_failed", "{srv:?}: {bad}: {failed}");
                assert_eq!(failed["reason"], "invalid_seq", "{srv:?}: {bad}: {failed}");
                c.close().await;
            }
            // The failed attempts did not disturb the session.
            let target = format!("/ws?session={own}");
            let mut c = connect(&rt, addr, &target).await;
            assert_eq!(c.next().await["type"], "resumed", "{srv:?}");
            c.close().await;
        });
    }
}

#[test]
fn a_message_above_the_websocket_limit_closes_with_1009_and_keeps_the_session() {
    let cfg = config(|s| {
        s.max_message_size = Some(1024);
        s.max_frame_size = Some(16 * 1024);
    });
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut c = connect(&rt, addr, "/ws").await;
            assert_ack(&c.join("r").await, "join");
            // Between the two limits: nack too_large, the connection stays.
            let data = "x".repeat(2000);
            let reply = c.publish("r", "big", json!(data)).await;
            assert_nack(&reply, "too_large", "above max_message_size");
            // Above the WebSocket limit: close 1009.
            let session = c.session();
            let data = "x".repeat(20_000);
            let huge = json!({"type": "publish", "room": "r", "id": "huge", "data": data});
            let _ = c.send_json(&huge).await;
            let info = c.closed().await;
            assert_eq!(info.code, CloseCode(1009), "{srv:?}: {info:?}");
            wait_metric(addr, "ws_detached_sessions", |v| v == 1);
            let mut c = connect(&rt, addr, &format!("/ws?session={session}&last_seq=0")).await;
            assert_eq!(c.next().await["type"], "resumed", "{srv:?}");
            c.close().await;
        });
    }
}

#[test]
fn a_clean_close_ends_the_session_unless_the_client_asks_to_keep_it() {
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, ServerConfig::default());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            // 1000: the client is done; its session and room go at once.
            let mut c = connect(&rt, addr, "/ws").await;
            assert_ack(&c.join("r").await, "join");
            let session = c.session();
            c.close().await;
            wait_metric(addr, "ws_connections", |v| v == 0);
            assert_eq!(metric(addr, "ws_detached_sessions"), 0, "{srv:?}");
            assert_eq!(metric(addr, "ws_rooms"), 0, "{srv:?}");
            let target = format!("/ws?session={session}&last_seq=0");
            let mut c = connect(&rt, addr, &target).await;
            assert_eq!(c.next().await["reason"], "expired", "{srv:?}");
            c.close().await;
            wait_metric(addr, "ws_connections", |v| v == 0);

            // 1000 with reason `keep-session`, and 1001: kept for resume.
            for (code, reason) in [(1000, ws_hub::KEEP_SESSION), (1001, "page reload")] {
                let mut c = connect(&rt, addr, "/ws").await;
                assert_ack(&c.join("r").await, "join");
                let session = c.session();
                c.close_with(code, reason).await;
                wait_metric(addr, "ws_detached_sessions", |v| v == 1);
                let target = format!("/ws?session={session}&last_seq=0");
                let mut c = connect(&rt, addr, &target).await;
                assert_eq!(c.next().await["type"], "resumed", "{srv:?}: {code}");
                c.close().await;
                wait_metric(addr, "ws_detached_sessions", |v| v == 0);
            }
        });
    }
}

#[test]
fn a_full_dedup_table_refuses_new_ids_and_keeps_protecting_old_ones() {
    let cfg = config(|s| {
        s.dedup_max_entries = Some(4);
        s.dedup_per_publisher = Some(2);
    });
    for (srv, cli) in runtimes(1) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut cs = Vec::new();
            for _ in 0..4 {
                let mut c = connect(&rt, addr, "/ws").await;
                assert_ack(&c.join("r").await, "join");
                cs.push(c);
            }
            assert_ack(&cs[0].publish("r", "a1", json!(1)).await, "a1");
            assert_ack(&cs[1].publish("r", "b1", json!(1)).await, "b1");
            assert_ack(&cs[1].publish("r", "b2", json!(1)).await, "b2");
            assert_ack(&cs[2].publish("r", "c1", json!(1)).await, "c1");
            for (i, id) in [(2, "c2"), (3, "d1")] {
                let reply = cs[i].publish("r", id, json!(1)).await;
                assert_nack(&reply, "busy", id);
            }
            let again = cs[0].publish("r", "a1", json!(1)).await;
            assert_eq!(again["duplicate"], true, "{srv:?}: {again}");
            // Four messages reached everyone, the refused ones none.
            let seen = cs[3].barrier().await;
            let ids = message_ids(&seen);
            assert_eq!(ids, ["a1", "b1", "b2", "c1"], "{srv:?}");
        });
    }
    let bad = Settings {
        dedup_max_entries: Some(4),
        dedup_per_publisher: Some(5),
        ..Settings::default()
    };
    let refused = ServerConfig::from_settings(&bad).expect_err("refused at start");
    assert!(
        refused.to_string().contains("dedup_per_publisher"),
        "{refused}"
    );
}

#[test]
fn a_full_server_closes_new_connections_with_1013_without_a_welcome() {
    let cfg = config(|s| {
        s.max_connections = Some(1);
        s.close_timeout_ms = Some(200);
    });
    for (srv, cli) in runtimes(0) {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(cli, |rt| async move {
            let mut first = connect(&rt, addr, "/ws").await;
            // The upgrade succeeds; then a close frame, and nothing else.
            let mut tcp = raw_client(addr);
            let frames = read_frames_until_eof(&mut tcp);
            assert_eq!(frames.len(), 1, "{srv:?}: {frames:?}");
            let (opcode, payload) = &frames[0];
            assert_eq!(*opcode, 0x8, "{srv:?}: a close frame");
            assert_eq!(close_code(payload), 1013, "{srv:?}");
            assert_eq!(&payload[2..], b"server full", "{srv:?}");
            assert_ack(
                &first.join("r").await,
                "the first connection is undisturbed",
            );
            first.close().await;
        });
    }
}
