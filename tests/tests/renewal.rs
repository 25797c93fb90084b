//! Token renewal over real sockets on both servers (docs/PROTOCOL.md,
//! "Token renewal"): `token_expiring`, `refresh` accepted for the same
//! user and refused for another, and the 4001 close at expiry with the
//! session kept for resume.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use ws_async::Runtime;
use ws_hub::HmacTokenAuth;
use ws_server::server::{ServerConfig, Settings};
use ws_tests::hub_client::*;
use ws_tests::*;

const SECRET: &str = "renewal-secret";

fn config() -> ServerConfig {
    let settings = Settings {
        auth_secret: Some(SECRET.into()),
        token_expiring_before_ms: Some(1500),
        ..Settings::default()
    };
    ServerConfig::from_settings(&settings).expect("valid settings")
}

/// A token for `user` that expires `ttl` seconds from now.
fn token_for(user: &str, ttl: u64) -> String {
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    HmacTokenAuth::new(SECRET.as_bytes().to_vec()).issue(user, now + ttl)
}

async fn connect_with<R: Runtime>(rt: &R, addr: SocketAddr, query: &str) -> HubClient<R> {
    HubClient::connect(rt.clone(), addr, &format!("/ws?{query}"))
        .await
        .unwrap_or_else(|e| panic!("connect {query}: {e}"))
}

#[test]
fn refresh_is_accepted_for_the_same_user_and_refused_for_another() {
    for (i, srv) in RUNTIMES.into_iter().enumerate() {
        let server = start_hub(srv, config());
        let addr = server.addr;
        on_runtime!(RUNTIMES[(i + 1) % 2], |rt| async move {
            let query = format!("token={}", token_for("alice", 2));
            let mut a = connect_with(&rt, addr, &query).await;
            let warning = a.expect("token_expiring").await;
            assert!(
                warning["expires_in_ms"]
                    .as_u64()
                    .is_some_and(|ms| ms <= 2000),
                "{srv:?}: {warning}"
            );
            a.request(json!({"type": "refresh", "token": token_for("bob", 3600), "id": "x"}))
                .await;
            let nack = a.reply("refresh", "id", "x").await;
            assert_eq!(nack["reason"], "forbidden", "{srv:?}: {nack}");
            a.request(json!({"type": "refresh", "token": "garbage", "id": "y"}))
                .await;
            let nack = a.reply("refresh", "id", "y").await;
            assert_eq!(nack["reason"], "invalid_token", "{srv:?}: {nack}");
            a.request(json!({"type": "refresh", "token": token_for("alice", 3600), "id": "z"}))
                .await;
            let ack = a.reply("refresh", "id", "z").await;
            assert_eq!(
                ack,
                json!({"type": "ack", "op": "refresh", "id": "z"}),
                "{srv:?}"
            );
            // Past the first token's expiry the connection is still open.
            sleep(&rt, Duration::from_millis(2500)).await;
            let seen = a.barrier().await;
            assert!(
                seen.iter().all(|v| v["type"] != "token_expiring"),
                "{seen:?}"
            );
        });
    }
}

#[test]
fn an_expired_token_closes_with_4001_and_the_session_resumes() {
    for (i, srv) in RUNTIMES.into_iter().enumerate() {
        let server = start_hub(srv, config());
        let addr = server.addr;
        on_runtime!(RUNTIMES[i], |rt| async move {
            // Expiry is in whole seconds: a 1-second token may lapse a few
            // milliseconds after it was made, before the handshake.
            let query = format!("token={}", token_for("alice", 2));
            let mut a = connect_with(&rt, addr, &query).await;
            assert_eq!(a.join("r").await["type"], "ack");
            let session = a.session();
            let close = a.closed().await;
            assert_eq!(close.code.0, 4001, "{srv:?}: {close:?}");
            assert_eq!(close.reason, "token expired");
            let query = format!(
                "token={}&session={session}&last_seq=0",
                token_for("alice", 3600)
            );
            let mut b = connect_with(&rt, addr, &query).await;
            assert_eq!(b.next().await["type"], "resumed", "{srv:?}");
        });
        assert_eq!(metrics(addr).get("ws_token_expiry_closes_total"), Some(&1));
    }
}
