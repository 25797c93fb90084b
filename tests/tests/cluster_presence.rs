//! Presence across two nodes joined by a real `redis-server`: each node
//! keeps its part of the presence table in Redis with a TTL it refreshes,
//! `GET /api/presence` on either node covers both, and the users of a
//! node that stops refreshing disappear once its part expires.

// Test harness: wall-clock deadlines are fine here.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ws_server::server::api::ApiKeys;
use ws_server::server::{ServerConfig, Settings};
use ws_tests::hub_client::{HubClient, WAIT, http, token};
use ws_tests::redis::RedisServer;
use ws_tests::{Rt, start_hub};

const SECRET: &str = "cluster-presence-secret";
const KEY: &str = "cluster-presence-key";

fn node(redis: &str, node_id: &str) -> ServerConfig {
    let settings = Settings {
        redis: Some(redis.to_owned()),
        node_id: Some(node_id.to_owned()),
        auth_secret: Some(SECRET.to_owned()),
        presence_ttl_ms: Some(1200),
        ..Default::default()
    };
    let mut config = ServerConfig::from_settings(&settings).expect("valid settings");
    config.api_keys = ApiKeys::new([KEY.to_owned()]);
    config
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
    drop(clients);
    drop(a);
    drop(redis);
}
