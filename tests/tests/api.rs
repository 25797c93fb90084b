//! The server API for backends (docs/API.md) on both servers: the key,
//! JSON errors, bounded bodies, and every endpoint reaching WebSocket
//! clients.

use std::net::SocketAddr;

use serde_json::{Value, json};
use ws_server::server::api::ApiKeys;
use ws_server::server::{ServerConfig, Settings};
use ws_tests::hub_client::*;
use ws_tests::*;

const SECRET: &str = "api-secret";

fn config() -> ServerConfig {
    let settings = Settings {
        auth_secret: Some(SECRET.into()),
        ..Settings::default()
    };
    let mut config = ServerConfig::from_settings(&settings).expect("valid settings");
    config.api_keys = ApiKeys::new(["first-key".to_owned(), "second-key".to_owned()]);
    config
}

/// `method path` with `body` and an optional bearer key.
fn call(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let reply = http(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    let value = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
    (reply.status, value)
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    call(addr, "POST", path, Some("second-key"), &body.to_string())
}

#[test]
fn the_api_needs_a_key_and_answers_errors_as_json() {
    for srv in RUNTIMES {
        let server = start_hub(srv, config());
        let addr = server.addr;
        let body = r#"{"room":"r","data":1}"#;
        for path in [
            "/api/publish",
            "/api/send",
            "/api/broadcast",
            "/api/disconnect",
        ] {
            for key in [
                None,
                Some("wrong-key"),
                Some("first-ke"),
                Some("first-keyy"),
            ] {
                let (status, v) = call(addr, "POST", path, key, body);
                assert_eq!(
                    (status, &v["error"]),
                    (401, &json!("unauthorized")),
                    "{srv:?} {path} {key:?}"
                );
            }
        }
        for path in ["/api/presence?room=r", "/api/stats"] {
            assert_eq!(call(addr, "GET", path, None, "").0, 401, "{srv:?} {path}");
            assert_eq!(
                call(addr, "GET", path, Some("first-key"), "").0,
                200,
                "{srv:?} {path}"
            );
        }
        let raw = http(addr, "GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(raw.header("www-authenticate"), Some("Bearer"));
        // Both keys work.
        assert_eq!(
            call(addr, "POST", "/api/publish", Some("first-key"), body).0,
            200
        );
        assert_eq!(
            call(addr, "POST", "/api/publish", Some("second-key"), body).0,
            200
        );
        // Bad bodies.
        for (path, bad) in [
            ("/api/publish", "not json"),
            ("/api/publish", r#"{"room":"r"}"#),
            ("/api/publish", r#"{"data":1}"#),
            ("/api/publish", r#"{"room":"r","user":"u","data":1}"#),
            ("/api/publish", r#"{"room":"","data":1}"#),
            ("/api/publish", r#"{"room":"r","data":1,"extra":true}"#),
            ("/api/send", r#"{"room":"r","data":1}"#),
            ("/api/broadcast", r#"{"room":"r","data":1}"#),
            ("/api/disconnect", r#"{"code":4000}"#),
            ("/api/disconnect", r#"{"user":"u","code":1000}"#),
            ("/api/disconnect", r#"{"user":"u","code":4001}"#),
            ("/api/disconnect", r#"{"user":"u","code":5000}"#),
            ("/api/disconnect", r#"{"user":"","code":4002}"#),
            ("/api/disconnect", r#"{"user":"u","reason":7}"#),
        ] {
            let (status, v) = call(addr, "POST", path, Some("first-key"), bad);
            assert_eq!(
                (status, &v["error"]),
                (400, &json!("bad_request")),
                "{srv:?} {path} {bad}"
            );
        }
        // A reason must fit in a close frame: 123 bytes of UTF-8.
        let long = json!({"user": "u", "reason": "é".repeat(62)}).to_string();
        let (status, v) = call(addr, "POST", "/api/disconnect", Some("first-key"), &long);
        assert_eq!(
            (status, &v["error"]),
            (400, &json!("bad_request")),
            "{srv:?}"
        );
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("123 bytes")),
            "{v}"
        );
        let (status, v) = call(addr, "GET", "/api/presence", Some("first-key"), "");
        assert_eq!((status, &v["error"]), (400, &json!("bad_request")));
        // Oversized body: 413, and the server stays up.
        let big = format!(r#"{{"room":"r","data":"{}"}}"#, "x".repeat(70_000));
        let (status, v) = call(addr, "POST", "/api/publish", Some("first-key"), &big);
        assert_eq!((status, &v["error"]), (413, &json!("too_large")), "{srv:?}");
        let chunked = http(
            addr,
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer first-key\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        assert_eq!(chunked.status, 411);
        // Unknown endpoint, wrong method.
        assert_eq!(call(addr, "GET", "/api/nope", Some("first-key"), "").0, 404);
        assert_eq!(
            call(addr, "GET", "/api/publish", Some("first-key"), "").0,
            405
        );
        // The rest of the port is unchanged.
        assert_eq!(http_get(addr, "/healthz").status, 200);
    }
}

#[test]
fn every_endpoint_reaches_the_websocket_clients() {
    for (i, srv) in RUNTIMES.into_iter().enumerate() {
        let server = start_hub(srv, config());
        let addr = server.addr;
        on_runtime!(RUNTIMES[(i + 1) % 2], |rt| async move {
            let as_user = |u: &str| format!("/ws?token={}", token(SECRET, u));
            let mut alice = HubClient::connect(rt.clone(), addr, &as_user("alice"))
                .await
                .expect("alice");
            let mut bob = HubClient::connect(rt.clone(), addr, &as_user("bob"))
                .await
                .expect("bob");
            assert_eq!(alice.join("lobby").await["type"], "ack");

            // publish, with de-duplication of its id under "api".
            let publish = json!({"room": "lobby", "id": "n1", "data": {"x": 1}});
            assert_eq!(
                post(addr, "/api/publish", publish.clone()),
                (200, json!({"ok": true, "duplicate": false}))
            );
            assert_eq!(
                alice.expect("message").await,
                json!({"type": "message", "seq": 1, "room": "lobby", "id": "n1",
                    "from": "api", "data": {"x": 1}}),
                "{srv:?}"
            );
            assert_eq!(
                post(addr, "/api/publish", publish),
                (200, json!({"ok": true, "duplicate": true}))
            );
            // send: every connection of the user; an unknown user is 404.
            assert_eq!(
                post(addr, "/api/send", json!({"user": "bob", "data": "hi"})).0,
                200
            );
            let m = bob.expect("message").await;
            assert_eq!(
                (&m["to"], &m["from"], &m["data"]),
                (&json!("bob"), &json!("api"), &json!("hi"))
            );
            let (status, v) = post(addr, "/api/send", json!({"user": "zed", "data": 1}));
            assert_eq!((status, &v["error"]), (404, &json!("unknown_user")));
            // broadcast: everyone.
            assert_eq!(
                post(addr, "/api/broadcast", json!({"id": "b1", "data": true})).0,
                200
            );
            for c in [&mut alice, &mut bob] {
                let m = c.expect("message").await;
                assert_eq!(
                    (&m["broadcast"], &m["id"]),
                    (&json!(true), &json!("b1")),
                    "{srv:?}"
                );
            }
            // Nothing else (the duplicate was not delivered).
            let extra = alice.barrier().await;
            assert!(extra.iter().all(|v| v["type"] != "message"), "{extra:?}");

            // presence and stats.
            let (status, p) = call(
                addr,
                "GET",
                "/api/presence?room=lobby",
                Some("first-key"),
                "",
            );
            assert_eq!(status, 200);
            assert_eq!(
                p,
                json!({"room": "lobby", "user_count": 1, "connection_count": 1,
                    "users": [{"user": "alice", "connections": 1}]})
            );
            wait_metric(addr, "ws_users", |v| v == 2);
            let (status, s) = call(addr, "GET", "/api/stats", Some("first-key"), "");
            assert_eq!(status, 200);
            assert_eq!(
                (&s["connections"], &s["users"], &s["rooms"]),
                (&json!(2), &json!(2), &json!(1)),
                "{s}"
            );

            // disconnect: bob's connections close with the code and the
            // reason given (up to 123 bytes of UTF-8).
            let reason = format!("maintenance: {}", "é".repeat(54));
            assert_eq!(reason.len(), 121);
            let (status, v) = post(
                addr,
                "/api/disconnect",
                json!({"user": "bob", "code": 4010, "reason": reason}),
            );
            assert_eq!((status, v), (200, json!({"ok": true, "closed": 1})));
            let close = bob.closed().await;
            assert_eq!(
                (close.code.0, close.reason.as_str()),
                (4010, reason.as_str()),
                "{srv:?}"
            );
            // Kept for resume unless `discard`.
            wait_metric(addr, "ws_detached_sessions", |v| v == 1);
            let (_, v) = post(
                addr,
                "/api/disconnect",
                json!({"user": "bob", "discard": true}),
            );
            assert_eq!(v, json!({"ok": true, "closed": 0}));
            wait_metric(addr, "ws_detached_sessions", |v| v == 0);
        });
    }
}
