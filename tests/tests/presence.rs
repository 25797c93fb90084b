//! Presence over real sockets on both servers (docs/PROTOCOL.md,
//! "Presence"): `presence`, `presence_stats`, `join` / `leave` events,
//! a detached session counting as present until resumed or discarded,
//! and the online-users gauge in `/metrics`.

use std::net::SocketAddr;

use serde_json::{Value, json};
use ws_async::Runtime;
use ws_server::server::{ServerConfig, Settings};
use ws_tests::hub_client::*;
use ws_tests::*;

const SECRET: &str = "presence-secret";

fn config(f: impl FnOnce(&mut Settings)) -> ServerConfig {
    let mut settings = Settings {
        auth_secret: Some(SECRET.into()),
        ..Settings::default()
    };
    f(&mut settings);
    ServerConfig::from_settings(&settings).expect("valid settings")
}

async fn connect_as<R: Runtime>(rt: &R, addr: SocketAddr, user: &str) -> HubClient<R> {
    let target = format!("/ws?token={}", token(SECRET, user));
    HubClient::connect(rt.clone(), addr, &target)
        .await
        .unwrap_or_else(|e| panic!("connect {user}: {e}"))
}

async fn ask<R: Runtime>(c: &mut HubClient<R>, ty: &str, room: &str, id: &str) -> Value {
    c.request(json!({"type": ty, "room": room, "id": id})).await;
    c.expect_where(id, |v| v["id"] == id).await
}

fn assert_ack(v: &Value, what: &str) {
    assert!(v["type"] == "ack", "{what}: {v}");
}

#[test]
fn presence_and_stats_list_users_with_their_connections() {
    let cfg = config(|s| s.presence_max_users = Some(2));
    for (i, srv) in RUNTIMES.into_iter().enumerate() {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(RUNTIMES[(i + 1) % 2], |rt| async move {
            let mut a1 = connect_as(&rt, addr, "alice").await;
            let mut a2 = connect_as(&rt, addr, "alice").await;
            let mut b = connect_as(&rt, addr, "bob").await;
            let mut watcher = connect_as(&rt, addr, "carol").await;
            for c in [&mut a1, &mut a2, &mut b] {
                assert_ack(&c.join("lobby").await, "join");
            }
            let p = ask(&mut watcher, "presence", "lobby", "q1").await;
            assert_eq!(
                p,
                json!({"type": "presence", "room": "lobby", "id": "q1", "user_count": 2,
                    "connection_count": 3, "users": [
                        {"user": "alice", "connections": 2},
                        {"user": "bob", "connections": 1}]}),
                "{srv:?}"
            );
            let s = ask(&mut watcher, "presence_stats", "lobby", "q2").await;
            assert_eq!(
                s,
                json!({"type": "presence_stats", "room": "lobby", "id": "q2",
                    "user_count": 2, "connection_count": 3}),
                "{srv:?}"
            );
            // A third user: above presence_max_users, counts only.
            assert_ack(&watcher.join("lobby").await, "join");
            let p = ask(&mut watcher, "presence", "lobby", "q3").await;
            assert_eq!(p["truncated"], true, "{srv:?}: {p}");
            assert_eq!(p["user_count"], 3);
            assert!(p.get("users").is_none(), "{p}");
            // A bad request is nacked.
            watcher
                .request(json!({"type": "presence", "room": "", "id": "q4"}))
                .await;
            let n = watcher.reply("presence", "id", "q4").await;
            assert_eq!(n["reason"], "bad_request", "{n}");
        });
        // alice, bob, carol online; four connections.
        wait_metric(addr, "ws_users", |v| v == 3);
        assert_eq!(metrics(addr).get("ws_users"), Some(&3));
    }
}

#[test]
fn join_and_leave_events_skip_resume_churn() {
    let cfg = config(|s| {
        s.presence_events = Some(true);
        s.session_retention_ms = Some(500);
    });
    for (i, srv) in RUNTIMES.into_iter().enumerate() {
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        on_runtime!(RUNTIMES[i], |rt| async move {
            let mut a = connect_as(&rt, addr, "alice").await;
            assert_ack(&a.join("r").await, "join");
            let mut b1 = connect_as(&rt, addr, "bob").await;
            assert_ack(&b1.join("r").await, "join");
            let ev = a.expect("join").await;
            assert_eq!(
                ev,
                json!({"type": "join", "room": "r", "user": "bob"}),
                "{srv:?}"
            );
            // Bob's second connection: no event.
            let mut b2 = connect_as(&rt, addr, "bob").await;
            assert_ack(&b2.join("r").await, "join");
            assert_ack(&b2.leave("r").await, "leave");
            // Bob's first connection drops and resumes: no event either.
            let session = b1.session();
            b1.abort();
            wait_metric(addr, "ws_detached_sessions", |v| v == 1);
            let target = format!(
                "/ws?token={}&session={session}&last_seq=0",
                token(SECRET, "bob")
            );
            let mut b1 = HubClient::connect(rt.clone(), addr, &target)
                .await
                .expect("resume");
            assert_eq!(b1.next().await["type"], "resumed", "{srv:?}");
            let seen = a.barrier().await;
            assert!(
                seen.iter()
                    .all(|v| v["type"] != "join" && v["type"] != "leave"),
                "{srv:?}: {seen:?}"
            );
            // Dropped and never resumed: present until retention is over,
            // then alice hears the leave.
            b1.abort();
            let ev = a.expect("leave").await;
            assert_eq!(
                ev,
                json!({"type": "leave", "room": "r", "user": "bob"}),
                "{srv:?}"
            );
            let s = ask(&mut a, "presence_stats", "r", "s").await;
            assert_eq!(s["user_count"], 1, "{s}");
            drop(b2);
        });
    }
}
