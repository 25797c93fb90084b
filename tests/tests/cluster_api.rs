//! The server API across two nodes joined by a real `redis-server` (node A
//! on tokio, node B on smol): a publish, a direct message and a broadcast
//! made through the API of one node reach the clients on both nodes, and
//! an id retried on the other node is not delivered twice. Presence: each
//! node keeps its part of the presence table in Redis with a TTL it
//! refreshes, `GET /api/presence` on either node covers both, and the
//! users of a node that stops refreshing disappear once its part expires;
//! so does the WebSocket `presence` / `presence_stats` answer. A disconnect
//! through one node closes the user's connections on the other, with the
//! reason given. Without Redis, `presence` is nacked `unavailable`.
//! `join` / `leave` events are per node.

// Test harness: wall-clock deadlines are fine here (the ban is for the
// sans-IO cores).
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ws_server::server::api::ApiKeys;
use ws_server::server::{ServerConfig, Settings};
use ws_tests::hub_client::{HubClient, WAIT, http, token};
use ws_tests::redis::RedisServer;
use ws_tests::{Rt, start_hub};

const SECRET: &str = "cluster-api-secret";
const KEY: &str = "cluster-api-key";

fn node(redis: &str, node_id: &str) -> ServerConfig {
    node_with(redis, node_id, false)
}

fn node_with(redis: &str, node_id: &str, presence_events: bool) -> ServerConfig {
    let settings = Settings {
        redis: Some(redis.to_owned()),
        node_id: Some(node_id.to_owned()),
        auth_secret: Some(SECRET.to_owned()),
        presence_ttl_ms: Some(1200),
        presence_events: Some(presence_events),
        ..Default::default()
    };
    let mut config = ServerConfig::from_settings(&settings).expect("valid settings");
    config.api_keys = ApiKeys::new([KEY.to_owned()]);
    config
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let reply = http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    (
        reply.status,
        serde_json::from_str(&reply.body).expect("JSON"),
    )
}

/// Waits (bounded) until `channel` has `want` subscribers in Redis.
fn wait_numsub(redis: &RedisServer, channel: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = redis.command(&["PUBSUB", "NUMSUB", channel]);
        let n: u64 = reply.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "{channel}: {n} subscribers");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn api_messages_reach_clients_on_both_nodes() {
    let redis = RedisServer::start();
    let a = start_hub(Rt::Tokio, node(&redis.url(), "node-a"));
    let b = start_hub(Rt::Smol, node(&redis.url(), "node-b"));
    wait_numsub(&redis, "ws-hub:global", 2);
    let (addr_a, addr_b) = (a.addr, b.addr);
    smol::block_on(async {
        let rt = runtime_smol::SmolRuntime::default();
        let as_user = |u: &str| format!("/ws?token={}", token(SECRET, u));
        let mut on_a = HubClient::connect(rt.clone(), addr_a, &as_user("alice"))
            .await
            .expect("alice on A");
        let mut on_b = HubClient::connect(rt.clone(), addr_b, &as_user("bob"))
            .await
            .expect("bob on B");
        assert_eq!(on_a.join("lobby").await["type"], "ack");
        assert_eq!(on_b.join("lobby").await["type"], "ack");
        wait_numsub(&redis, "ws-hub:room:lobby", 2);

        // Published through node A: both members get it once.
        let body = json!({"room": "lobby", "id": "news-1", "data": {"n": 1}});
        assert_eq!(
            post(addr_a, "/api/publish", &body),
            (200, json!({"ok": true, "duplicate": false}))
        );
        for c in [&mut on_a, &mut on_b] {
            let m = c.expect("message").await;
            assert_eq!(
                (&m["id"], &m["from"], &m["data"]),
                (&json!("news-1"), &json!("api"), &json!({"n": 1}))
            );
        }
        // The same id retried through node B: de-duplicated across nodes
        // (node B saw it on the bus).
        assert_eq!(
            post(addr_b, "/api/publish", &body),
            (200, json!({"ok": true, "duplicate": true}))
        );
        // A direct message through node B to alice on node A, and a
        // broadcast through node A to everyone.
        assert_eq!(
            post(
                addr_b,
                "/api/send",
                &json!({"user": "alice", "id": "dm-1", "data": "hi"})
            )
            .0,
            200
        );
        assert_eq!(
            on_a.expect_where("dm-1", |v| v["id"] == "dm-1").await["from"],
            "api"
        );
        assert_eq!(
            post(
                addr_a,
                "/api/broadcast",
                &json!({"id": "all-1", "data": true})
            )
            .0,
            200
        );
        for c in [&mut on_a, &mut on_b] {
            let m = c.expect_where("all-1", |v| v["id"] == "all-1").await;
            assert_eq!(m["broadcast"], true);
        }
        // news-1 arrived exactly once on each side.
        for c in [&mut on_a, &mut on_b] {
            let seen = c.barrier().await;
            assert!(seen.iter().all(|v| v["id"] != "news-1"), "{seen:?}");
        }
        // A disconnect through node B closes alice's connection on node A
        // with the code and reason given.
        assert_eq!(
            post(
                addr_b,
                "/api/disconnect",
                &json!({"user": "alice", "code": 4020, "reason": "banni pour 24 h"})
            ),
            (200, json!({"ok": true, "closed": 0}))
        );
        let close = on_a.closed().await;
        assert_eq!(
            (close.code.0, close.reason.as_str()),
            (4020, "banni pour 24 h")
        );
    });
    drop((a, b));
    drop(redis);
}

fn presence(addr: SocketAddr, room: &str) -> Value {
    let reply = http(
        addr,
        &format!(
            "GET /api/presence?room={room} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n"
        ),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    serde_json::from_str(&reply.body).expect("JSON")
}

/// Asks `presence` or `presence_stats` for `lobby` over the WebSocket.
async fn ws_presence(c: &mut HubClient<runtime_smol::SmolRuntime>, ty: &str, id: &str) -> Value {
    c.request(json!({"type": ty, "room": "lobby", "id": id}))
        .await;
    c.expect_where(id, |v| v["id"] == id).await
}

/// Waits (bounded) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn presence_covers_both_nodes_and_a_stopped_node_expires() {
    let redis = RedisServer::start();
    let a = start_hub(Rt::Tokio, node(&redis.url(), "node-a"));
    let b = start_hub(Rt::Smol, node(&redis.url(), "node-b"));
    let (addr_a, addr_b) = (a.addr, b.addr);
    let rt = runtime_smol::SmolRuntime::default();
    let as_user = |u: &str| format!("/ws?token={}", token(SECRET, u));
    let mut clients = Vec::new();
    smol::block_on(async {
        for (addr, user) in [
            (addr_a, "alice"),
            (addr_a, "alice"),
            (addr_b, "bob"),
            (addr_b, "alice"),
        ] {
            let mut c = HubClient::connect(rt.clone(), addr, &as_user(user))
                .await
                .expect("connect");
            assert_eq!(c.join("lobby").await["type"], "ack");
            clients.push(c);
        }
    });
    let both = json!({"room": "lobby", "user_count": 2, "connection_count": 4,
        "users": [{"user": "alice", "connections": 3}, {"user": "bob", "connections": 1}]});
    for addr in [addr_a, addr_b] {
        eventually("presence covers both nodes", || {
            presence(addr, "lobby") == both
        });
    }
    // The WebSocket `presence` and `presence_stats` answers cover both
    // nodes too, from a client on either.
    smol::block_on(async {
        for i in [0, 2] {
            let p = ws_presence(&mut clients[i], "presence", "q1").await;
            let mut want = both.clone();
            want["type"] = json!("presence");
            want["id"] = json!("q1");
            assert_eq!(p, want, "client {i}");
            let s = ws_presence(&mut clients[i], "presence_stats", "q2").await;
            assert_eq!(
                s,
                json!({"type": "presence_stats", "room": "lobby", "id": "q2",
                    "user_count": 2, "connection_count": 4}),
                "client {i}"
            );
        }
    });
    // Each node's part is a hash with a TTL.
    let ttl: i64 = redis.command(&["PTTL", "ws-hub:presence:node-b"])[0]
        .parse()
        .expect("PTTL");
    assert!(ttl > 0 && ttl <= 1200, "{ttl}");
    assert_eq!(
        redis.command(&["HGET", "ws-hub:presence:node-b", "lobby"]),
        [r#"{"alice":1,"bob":1}"#]
    );
    // Node B stops (its clients go with it) and no longer refreshes: its
    // part expires and node A's answer is its own users only.
    clients.truncate(2);
    drop(b);
    eventually("node B's part expires", || {
        redis.command(&["EXISTS", "ws-hub:presence:node-b"]) == ["0"]
    });
    assert_eq!(
        presence(addr_a, "lobby"),
        json!({"room": "lobby", "user_count": 1, "connection_count": 2,
            "users": [{"user": "alice", "connections": 2}]})
    );
    smol::block_on(async {
        assert_eq!(
            ws_presence(&mut clients[1], "presence", "q3").await,
            json!({"type": "presence", "room": "lobby", "id": "q3", "user_count": 1,
                "connection_count": 2, "users": [{"user": "alice", "connections": 2}]})
        );
    });
    // Without Redis the cluster answer cannot be made: nacked, retry later.
    drop(redis);
    smol::block_on(async {
        assert_eq!(
            ws_presence(&mut clients[1], "presence_stats", "q4").await,
            json!({"type": "nack", "op": "presence_stats", "room": "lobby", "id": "q4",
                "reason": "unavailable"})
        );
    });
    drop(clients);
    drop(a);
}

/// `join` / `leave` events are per node (docs/PROTOCOL.md): a member on
/// node A hears of users joining and leaving on A, never of users on
/// node B (whom `presence` lists all the same).
#[test]
fn join_and_leave_events_are_per_node() {
    let redis = RedisServer::start();
    let a = start_hub(Rt::Tokio, node_with(&redis.url(), "node-a", true));
    let b = start_hub(Rt::Smol, node_with(&redis.url(), "node-b", true));
    let (addr_a, addr_b) = (a.addr, b.addr);
    smol::block_on(async {
        let rt = runtime_smol::SmolRuntime::default();
        let as_user = |u: &str| format!("/ws?token={}", token(SECRET, u));
        let connect = |addr, user: &'static str| {
            let (rt, target) = (rt.clone(), as_user(user));
            async move {
                HubClient::connect(rt, addr, &target)
                    .await
                    .unwrap_or_else(|e| panic!("{user}: {e}"))
            }
        };
        let mut member = connect(addr_a, "mia").await;
        assert_eq!(member.join("lobby").await["type"], "ack");
        let mut remote = connect(addr_b, "bob").await;
        assert_eq!(remote.join("lobby").await["type"], "ack");
        wait_numsub(&redis, "ws-hub:room:lobby", 2);
        let mut local = connect(addr_a, "carl").await;
        assert_eq!(local.join("lobby").await["type"], "ack");
        // bob's message follows his join on node B's channel: had his join
        // travelled, it would have come first.
        assert_eq!(
            remote.publish("lobby", "b1", json!("from B")).await["type"],
            "ack"
        );
        let m = member.expect_where("b1", |v| v["id"] == "b1").await;
        assert_eq!(m["from"], "bob");
        assert_eq!(local.leave("lobby").await["type"], "ack");
        assert_eq!(remote.leave("lobby").await["type"], "ack");
        let mut seen = member.take_pending();
        seen.extend(member.barrier().await);
        let events: Vec<String> = seen
            .iter()
            .filter(|v| v["type"] == "join" || v["type"] == "leave")
            .map(|v| {
                format!(
                    "{} {}",
                    v["type"].as_str().unwrap_or("?"),
                    v["user"].as_str().unwrap_or("?")
                )
            })
            .collect();
        assert_eq!(events, ["join carl", "leave carl"], "{seen:?}");
        drop((remote, local));
    });
    drop((a, b));
    drop(redis);
}
