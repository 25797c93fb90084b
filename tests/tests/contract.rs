//! Claims of docs/PROTOCOL.md and docs/API.md that an audit found
//! untested, checked against a real server with default settings on both
//! runtimes: the WebSocket frame limit (1 MiB), what a nack echoes, and
//! the room parameter of `GET /api/presence`.

use std::net::SocketAddr;

use serde_json::{Value, json};
use ws_proto::CloseCode;
use ws_server::server::api::ApiKeys;
use ws_server::server::{ServerConfig, Settings};
use ws_tests::hub_client::*;
use ws_tests::*;

/// PROTOCOL.md, "Size limits": `max_frame_size` defaults to 1 MiB. A
/// message between `max_message_size` (64 KiB) and it is nacked
/// `too_large` and the connection stays; a bigger frame closes it with
/// 1009 and the session is kept for resume.
#[test]
fn the_default_frame_limit_is_one_mib() {
    for (i, srv) in RUNTIMES.into_iter().enumerate() {
        let server = start_hub(srv, ServerConfig::default());
        let addr = server.addr;
        on_runtime!(RUNTIMES[(i + 1) % 2], |rt| async move {
            let mut c = HubClient::connect(rt.clone(), addr, "/ws")
                .await
                .expect("connect");
            assert_eq!(c.welcome()["max_message_size"], 65_536);
            assert_eq!(c.join("r").await["type"], "ack");
            let between = "x".repeat(1 << 19);
            let reply = c.publish("r", "half", json!(between)).await;
            assert_eq!(
                (&reply["type"], &reply["reason"]),
                (&json!("nack"), &json!("too_large")),
                "{srv:?}"
            );
            let session = c.session();
            let above = json!({"type": "publish", "room": "r", "id": "two",
                "data": "x".repeat(2 << 20)});
            let _ = c.send_json(&above).await;
            let info = c.closed().await;
            assert_eq!(info.code, CloseCode(1009), "{srv:?}: {info:?}");
            assert!(info.reason.contains("1048576"), "{srv:?}: {info:?}");
            wait_metric(addr, "ws_detached_sessions", |v| v == 1);
            let target = format!("/ws?session={session}&last_seq=0");
            let mut c = HubClient::connect(rt.clone(), addr, &target)
                .await
                .expect("resume");
            assert_eq!(c.next().await["type"], "resumed", "{srv:?}");
            c.close().await;
        });
    }
}

/// PROTOCOL.md, "ack / nack": a nack carries the request's `id` (and
/// `room` for join/leave) so that the client can match it, except an `id`
/// or `room` that is itself invalid (empty or above `max_name_len`).
#[test]
fn a_nack_never_echoes_an_invalid_id_or_room() {
    for (i, srv) in RUNTIMES.into_iter().enumerate() {
        let server = start_hub(srv, ServerConfig::default());
        let addr = server.addr;
        on_runtime!(RUNTIMES[i], |rt| async move {
            let mut c = HubClient::connect(rt.clone(), addr, "/ws")
                .await
                .expect("connect");
            assert_eq!(c.join("r").await["type"], "ack");
            let long = "i".repeat(129);
            c.request(json!({"type": "publish", "room": "r", "id": long, "data": 1}))
                .await;
            c.request(json!({"type": "join", "room": long, "id": "j1"}))
                .await;
            c.request(json!({"type": "send", "user": "u", "id": "", "data": 1}))
                .await;
            let replies: Vec<Value> = [c.next().await, c.next().await, c.next().await].into();
            assert_eq!(
                replies,
                [
                    json!({"type": "nack", "op": "publish", "reason": "bad_request"}),
                    json!({"type": "nack", "op": "join", "id": "j1", "reason": "bad_request"}),
                    json!({"type": "nack", "op": "send", "reason": "bad_request"}),
                ],
                "{srv:?}"
            );
            c.close().await;
        });
    }
}

fn api_config() -> ServerConfig {
    let mut config = ServerConfig::from_settings(&Settings::default()).expect("valid settings");
    config.api_keys = ApiKeys::new(["key".to_owned()]);
    config
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let reply = http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key\r\n\r\n"),
    );
    let value = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
    (reply.status, value)
}

/// API.md, "Presence and statistics": `room` is a query parameter, so it
/// is percent-encoded (`+` a space), and like every name it has 1 to
/// `max_name_len` bytes.
#[test]
fn the_presence_room_is_form_decoded_and_bounded() {
    for (i, srv) in RUNTIMES.into_iter().enumerate() {
        let server = start_hub(srv, api_config());
        let addr = server.addr;
        on_runtime!(RUNTIMES[i], |rt| async move {
            let mut c = HubClient::connect(rt.clone(), addr, "/ws")
                .await
                .expect("connect");
            let room = "café & co+1";
            assert_eq!(c.join(room).await["type"], "ack");
            let user = c.user();
            for query in ["caf%C3%A9+%26+co%2B1", "caf%c3%a9%20%26%20co%2b1"] {
                let (status, v) = get(addr, &format!("/api/presence?room={query}"));
                assert_eq!(status, 200, "{srv:?} {query}: {v}");
                assert_eq!(
                    v,
                    json!({"room": room, "user_count": 1, "connection_count": 1,
                        "users": [{"user": user, "connections": 1}]}),
                    "{srv:?} {query}"
                );
            }
            let long = "r".repeat(129);
            for query in [long.as_str(), "", "50%", "%FF"] {
                let (status, v) = get(addr, &format!("/api/presence?room={query}"));
                assert_eq!(
                    (status, &v["error"]),
                    (400, &json!("bad_request")),
                    "{srv:?} {query}"
                );
            }
            c.close().await;
        });
    }
}
