//! Token renewal in virtual time: `token_expiring` ahead of expiry,
//! `refresh` accepted for the same user and refused otherwise, and the
//! close with 4001 at expiry that keeps the session for resume.

mod common;

use common::*;
use ws_hub::{AllowAll, Command, ConnId, HmacTokenAuth, Hub, HubConfig};

const T0: u64 = 1_000_000;

fn sim() -> (Sim, HmacTokenAuth) {
    let auth = HmacTokenAuth::new(b"key".to_vec());
    let config = HubConfig {
        token_expiring_before: secs(30),
        ..quiet_config()
    };
    let hub = Hub::new(config, secret(), auth.clone(), AllowAll).unwrap();
    (Sim::with_hub(hub), auth)
}

fn expiry(s: &mut Sim, conn: u64, expires: u64) -> Vec<String> {
    s.cmd(Command::TokenExpiry {
        conn: ConnId(conn),
        now_unix_secs: T0 + s.elapsed().as_secs(),
        expires_unix_secs: expires,
    })
}

fn pongs(hub: &mut Hub, t: std::time::Instant, conn: ConnId) {
    hub.handle(t, Command::Activity { conn });
}

/// Advances `n` seconds answering pings; returns the log without pings.
fn advance(s: &mut Sim, n: u64) -> Vec<String> {
    s.advance_with(secs(n), pongs)
        .into_iter()
        .filter(|l| !l.contains(" ping "))
        .collect()
}

fn refresh(token: &str) -> String {
    format!(r#"{{"type":"refresh","token":"{token}","id":"r1"}}"#)
}

#[test]
fn token_expiring_then_close_4001_keeping_the_session() {
    let (mut s, auth) = sim();
    s.connect(1, "alice");
    s.send(1, &join("r"));
    assert_eq!(
        s.hub.token_expiry(&auth.issue("alice", T0 + 100)),
        Some(T0 + 100)
    );
    assert_eq!(expiry(&mut s, 1, T0 + 100), Vec::<String>::new());
    assert_eq!(
        advance(&mut s, 200),
        [
            r#"@70 1 <- {"type":"token_expiring","expires_in_ms":30000}"#,
            "@100 close 1 4001 token expired",
        ]
    );
    let m = s.hub.metrics();
    assert_eq!(
        (m.connections, m.detached_sessions, m.token_expiry_closes),
        (0, 1, 1)
    );
    s.hub.check_invariants().unwrap();
}

#[test]
fn refresh_with_a_new_token_of_the_same_user_moves_the_expiry() {
    let (mut s, auth) = sim();
    s.connect(1, "alice");
    expiry(&mut s, 1, T0 + 100);
    s.advance_with(secs(80), pongs);
    // Another user's token, a forged one, an expired one: refused.
    assert_eq!(
        s.send(1, &refresh(&auth.issue("bob", T0 + 1000))),
        [nack(1, "refresh", "r1", "forbidden")]
    );
    let forged = HmacTokenAuth::new(b"other".to_vec()).issue("alice", T0 + 1000);
    assert_eq!(
        s.send(1, &refresh(&forged)),
        [nack(1, "refresh", "r1", "invalid_token")]
    );
    assert_eq!(
        s.send(1, &refresh(&auth.issue("alice", T0 + 50))),
        [nack(1, "refresh", "r1", "invalid_token")]
    );
    assert_eq!(
        s.send(1, r#"{"type":"refresh"}"#),
        [r#"1 <- {"type":"nack","op":"refresh","reason":"bad_request"}"#]
    );
    // The right one: acked, and the connection lives to the new expiry.
    assert_eq!(
        s.send(1, &refresh(&auth.issue("alice", T0 + 300))),
        [ack(1, "refresh", "r1")]
    );
    assert_eq!(
        advance(&mut s, 300),
        [
            r#"@270 1 <- {"type":"token_expiring","expires_in_ms":30000}"#,
            "@300 close 1 4001 token expired",
        ]
    );
    s.hub.check_invariants().unwrap();
}

#[test]
fn refresh_without_an_expiring_token_is_a_bad_request() {
    let (mut s, auth) = sim();
    s.connect(1, "alice");
    assert_eq!(
        s.send(1, &refresh(&auth.issue("alice", T0 + 300))),
        [nack(1, "refresh", "r1", "bad_request")]
    );
}
