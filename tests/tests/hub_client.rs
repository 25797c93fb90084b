//! The async hub client (`ws-hub-client`) over real sockets on both
//! runtimes: a chaos run through a proxy that cuts connections at random
//! moments (mid-frame included), a server restart, and token renewal with
//! two-second tokens (refresh from the provider, then 4001 and resume).
//!
//! Every wait is bounded; the assertions are about what was delivered,
//! never about timing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use ws_async::Runtime;
use ws_hub_client::{ClientOptions, GapReason, HubClient, HubEvent, Reply, State, connect};
use ws_server::server::{ServerConfig, Settings};
use ws_tests::hub_client::{sleep, token, within};
use ws_tests::proxy::CuttingProxy;
use ws_tests::*;

const SECRET: &str = "chaos-secret";

fn server_config() -> ServerConfig {
    let settings = Settings {
        auth_secret: Some(SECRET.to_owned()),
        ..Settings::default()
    };
    ServerConfig::from_settings(&settings).expect("valid settings")
}

fn options(user: &str) -> ClientOptions {
    let mut o = ClientOptions::default();
    o.token = Some(token(SECRET, user));
    o.backoff_min = Duration::from_millis(5);
    o.backoff_max = Duration::from_millis(200);
    o
}

/// Waits (bounded) for a request's answer; panics unless it is an ack.
async fn acked<R: Runtime>(rt: &R, what: &str, reply: Reply) {
    let answer = within(rt, Duration::from_secs(20), reply)
        .await
        .unwrap_or_else(|| panic!("{what}: no answer in time"));
    assert!(answer.is_ok(), "{what}: {answer:?}");
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    /// publisher → the `n`s received, in order.
    from: BTreeMap<String, Vec<u64>>,
    gaps: Vec<GapReason>,
    connects: usize,
}

/// Collects a client's events in the background.
fn collect<R: Runtime>(rt: &R, client: &HubClient) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (events, out) = (client.events(), seen.clone());
    rt.spawn(async move {
        while let Ok(e) = events.recv().await {
            let mut s = out.lock().expect("lock");
            match e {
                HubEvent::Message(m) => {
                    let v: Value = serde_json::from_str(m.data.get()).expect("json");
                    let p = v["p"].as_str().expect("p").to_owned();
                    s.from
                        .entry(p)
                        .or_default()
                        .push(v["n"].as_u64().expect("n"));
                }
                HubEvent::Gap(g) => s.gaps.push(g.reason),
                HubEvent::State(c) if c.to == State::Connected => s.connects += 1,
                _ => {}
            }
        }
    });
    seen
}

fn chaos(rt: Rt, seed: u64) {
    const PUBLISHERS: usize = 3;
    const SUBSCRIBERS: usize = 2;
    const PER_PUBLISHER: u64 = 60;
    let server = start_hub(rt, server_config());
    let proxy = CuttingProxy::start(server.addr, seed, Duration::from_millis(60));
    let url = proxy.url();
    on_runtime!(rt, |r| async move {
        let names: Vec<String> = (0..PUBLISHERS)
            .map(|i| format!("pub{i}"))
            .chain((0..SUBSCRIBERS).map(|i| format!("sub{i}")))
            .collect();
        let mut clients = Vec::new();
        for name in &names {
            let c = connect(r.clone(), &url, options(name)).expect("client");
            let seen = collect(&r, &c);
            acked(&r, "join", c.join("chaos")).await;
            clients.push((name.clone(), c, seen));
        }
        proxy.set_chaos(true);
        let mut replies = Vec::new();
        for n in 1..=PER_PUBLISHER {
            for (name, c, _) in &clients[..PUBLISHERS] {
                let reply = c
                    .publish("chaos", &json!({"p": name, "n": n}))
                    .expect("serialisable");
                replies.push(reply);
            }
            sleep(&r, Duration::from_millis(3)).await;
        }
        for reply in replies {
            acked(&r, "publish", reply).await;
        }
        proxy.set_chaos(false);
        // Everything acked reaches everyone (bounded wait).
        let complete = |seen: &Seen| {
            (0..PUBLISHERS).all(|i| {
                seen.from
                    .get(&format!("pub{i}"))
                    .is_some_and(|v| v.len() as u64 >= PER_PUBLISHER)
            })
        };
        for _ in 0..1000 {
            if clients.iter().all(|(_, _, s)| {
                complete(&s.lock().expect("lock")) || !s.lock().expect("lock").gaps.is_empty()
            }) {
                break;
            }
            sleep(&r, Duration::from_millis(20)).await;
        }
        let expected: Vec<u64> = (1..=PER_PUBLISHER).collect();
        let mut reconnects = 0;
        for (name, _, seen) in &clients {
            let seen = seen.lock().expect("lock");
            reconnects += seen.connects.saturating_sub(1);
            for i in 0..PUBLISHERS {
                let got = seen
                    .from
                    .get(&format!("pub{i}"))
                    .cloned()
                    .unwrap_or_default();
                if seen.gaps.is_empty() {
                    assert_eq!(got, expected, "{rt:?} {name} from pub{i}");
                } else {
                    // A reported gap excuses losses, never duplicates or
                    // reordering.
                    assert!(got.windows(2).all(|w| w[0] < w[1]), "{name}: {got:?}");
                }
            }
        }
        for (_, c, _) in &clients {
            c.close().await;
        }
        assert!(proxy.cuts() >= 5, "only {} cuts", proxy.cuts());
        assert!(reconnects >= 5, "only {reconnects} reconnects");
    });
}

#[test]
fn chaos_every_acked_publish_exactly_once_in_order_tokio() {
    chaos(Rt::Tokio, 1);
}

#[test]
fn chaos_every_acked_publish_exactly_once_in_order_smol() {
    chaos(Rt::Smol, 2);
}

fn restart(rt: Rt) {
    let first = start_hub(rt, server_config());
    let proxy = CuttingProxy::start(first.addr, 7, Duration::from_secs(1));
    let url = proxy.url();
    let first = Mutex::new(Some(first));
    on_runtime!(rt, |r| async move {
        let a = connect(r.clone(), &url, options("alice")).expect("client");
        let b = connect(r.clone(), &url, options("bob")).expect("client");
        let (seen_a, _seen_b) = (collect(&r, &a), collect(&r, &b));
        for c in [&a, &b] {
            acked(&r, "join", c.join("room")).await;
        }
        let reply = b
            .publish("room", &json!({"p": "bob", "n": 1}))
            .expect("data");
        acked(&r, "publish", reply).await;
        // The server restarts: every session is gone.
        drop(first.lock().expect("lock").take());
        let second = start_hub(rt, server_config());
        proxy.set_upstream(second.addr);
        // alice reconnects, fails to resume, rejoins and reports the gap.
        for _ in 0..1000 {
            if !seen_a.lock().expect("lock").gaps.is_empty() {
                break;
            }
            sleep(&r, Duration::from_millis(10)).await;
        }
        // An acked (idempotent) join: the rejoin before it is processed.
        acked(&r, "join", a.join("room")).await;
        // bob's next publish reaches her in the rejoined room.
        let reply = b
            .publish("room", &json!({"p": "bob", "n": 2}))
            .expect("data");
        acked(&r, "publish", reply).await;
        for _ in 0..500 {
            if seen_a
                .lock()
                .expect("lock")
                .from
                .get("bob")
                .is_some_and(|v| v.len() == 2)
            {
                break;
            }
            sleep(&r, Duration::from_millis(20)).await;
        }
        {
            let seen = seen_a.lock().expect("lock");
            assert_eq!(seen.from.get("bob"), Some(&vec![1, 2]));
            assert_eq!(seen.gaps.len(), 1, "{:?}", seen.gaps);
            assert!(
                matches!(seen.gaps[0], GapReason::ResumeFailed(_)),
                "{:?}",
                seen.gaps
            );
        }
        a.close().await;
        b.close().await;
        drop(second);
    });
}

#[test]
fn server_restart_resume_fails_rejoins_and_reports_the_gap_tokio() {
    restart(Rt::Tokio);
}

#[test]
fn server_restart_resume_fails_rejoins_and_reports_the_gap_smol() {
    restart(Rt::Smol);
}

/// Over `wss://` (through the proxy, which cuts every connection once in
/// the middle): the client reconnects over TLS and resumes.
fn over_tls(rt: Rt) {
    let pki = tls::Pki::new();
    let mut config = server_config();
    config.tls = Some(pki.server(None));
    let server = start_hub(rt, config);
    let proxy = CuttingProxy::start(server.addr, 5, Duration::from_secs(1));
    let url = format!("wss://127.0.0.1:{}/ws", proxy.addr.port());
    let tls = pki.client(None);
    on_runtime!(rt, |r| async move {
        let open = |user: &str| {
            let mut o = options(user);
            o.tls = Some(tls.clone());
            connect(r.clone(), &url, o).expect("client")
        };
        let (a, b) = (open("alice"), open("bob"));
        let seen = collect(&r, &a);
        for c in [&a, &b] {
            acked(&r, "join", c.join("tls")).await;
        }
        for n in 1..=2u64 {
            let reply = b
                .publish("tls", &json!({"p": "bob", "n": n}))
                .expect("data");
            acked(&r, "publish", reply).await;
            if n == 1 {
                proxy.cut_all();
            }
        }
        for _ in 0..500 {
            if seen
                .lock()
                .expect("lock")
                .from
                .get("bob")
                .is_some_and(|v| v.len() == 2)
            {
                break;
            }
            sleep(&r, Duration::from_millis(20)).await;
        }
        {
            let seen = seen.lock().expect("lock");
            assert_eq!(seen.from.get("bob"), Some(&vec![1, 2]), "{rt:?}");
            assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
            assert!(seen.connects >= 2, "reconnected over TLS");
        }
        a.close().await;
        b.close().await;
    });
}

#[test]
fn over_tls_reconnects_and_resumes_tokio() {
    over_tls(Rt::Tokio);
}

#[test]
fn over_tls_reconnects_and_resumes_smol() {
    over_tls(Rt::Smol);
}

/// Unix seconds now (the token scheme's clock).
fn unix_now() -> u64 {
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the renewal test's client saw, in order.
fn renewal_log(e: &HubEvent) -> Option<String> {
    match e {
        HubEvent::State(s) => Some(format!("{} {:?} {}", s.to, s.code, s.reason)),
        HubEvent::TokenExpiring { expires_in_ms } => Some(format!("expiring {expires_in_ms}")),
        HubEvent::TokenRefreshed => Some("refreshed".into()),
        HubEvent::TokenRefreshFailed { reason } => Some(format!("refresh failed {reason}")),
        HubEvent::Gap(g) => Some(format!("gap {}", g.to_json())),
        _ => None,
    }
}

/// Against a server with `--auth-secret` and tokens that live two
/// seconds: the client renews its token from its provider on every
/// `token_expiring`, so the connection outlives its first token. Then the
/// provider has nothing new: the server closes with 4001 at expiry, and
/// the client reconnects with a fresh token from the provider and resumes
/// its session (no gap).
fn token_renewal(rt: Rt) {
    let settings = Settings {
        auth_secret: Some(SECRET.to_owned()),
        token_expiring_before_ms: Some(1500),
        ..Settings::default()
    };
    let server = start_hub(
        rt,
        ServerConfig::from_settings(&settings).expect("settings"),
    );
    let url = format!("ws://{}/ws", server.addr);
    // The provider mints two-second tokens (each expiring after the last:
    // HMAC tokens of one user and expiry are identical). In mode REPEAT it
    // hands out the last token once more (nothing new to renew with), then
    // mints tokens that live an hour.
    const RENEW: u8 = 0;
    const REPEAT: u8 = 1;
    const LONG: u8 = 2;
    let auth = ws_hub::HmacTokenAuth::new(SECRET.as_bytes().to_vec());
    let mode = Arc::new(AtomicU8::new(RENEW));
    let issued: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let provider: ws_hub_client::TokenProvider = {
        let (mode, issued) = (mode.clone(), issued.clone());
        Arc::new(move || {
            let mut issued = issued.lock().expect("lock");
            let ttl = match mode.load(Ordering::SeqCst) {
                RENEW => 2,
                REPEAT => {
                    mode.store(LONG, Ordering::SeqCst);
                    return issued.last().map(|(t, _)| t.clone());
                }
                _ => 3600,
            };
            let after_last = issued.last().map_or(0, |(_, e)| e + 1);
            let expires = (unix_now() + ttl).max(after_last);
            let token = auth.issue("alice", expires);
            issued.push((token.clone(), expires));
            Some(token)
        })
    };
    on_runtime!(rt, |r| async move {
        let mut o = ClientOptions::default();
        o.token_provider = Some(provider);
        o.backoff_min = Duration::from_millis(5);
        o.backoff_max = Duration::from_millis(200);
        let client = connect(r.clone(), &url, o).expect("client");
        let events = client.events();
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = log.clone();
        r.spawn(async move {
            while let Ok(e) = events.recv().await {
                if let Some(line) = renewal_log(&e) {
                    seen.lock().expect("lock").push(line);
                }
            }
        });
        acked(&r, "join", client.join("renewal")).await;
        let first_expiry = issued.lock().expect("lock")[0].1;
        // Bounded wait until the first token has expired and a refresh
        // went through.
        for _ in 0..1000 {
            let refreshed = log.lock().expect("lock").iter().any(|l| l == "refreshed");
            if refreshed && unix_now() > first_expiry {
                break;
            }
            sleep(&r, Duration::from_millis(10)).await;
        }
        assert!(
            unix_now() > first_expiry,
            "{rt:?}: never past the first expiry"
        );
        acked(
            &r,
            "publish after the first expiry",
            client.publish("renewal", &json!(1)).expect("data"),
        )
        .await;
        {
            let log = log.lock().expect("lock");
            assert!(log.iter().any(|l| l == "refreshed"), "{rt:?}: {log:?}");
            assert_eq!(
                log.iter().filter(|l| l.starts_with("connected")).count(),
                1,
                "{rt:?}: the connection stayed up: {log:?}"
            );
            assert!(
                !log.iter().any(|l| l.starts_with("disconnected")),
                "{rt:?}: {log:?}"
            );
        }
        // No new token any more: 4001 at expiry, then a reconnection with
        // a fresh one that resumes the session.
        mode.store(REPEAT, Ordering::SeqCst);
        for _ in 0..1000 {
            if log
                .lock()
                .expect("lock")
                .iter()
                .any(|l| l.ends_with("resumed"))
            {
                break;
            }
            sleep(&r, Duration::from_millis(10)).await;
        }
        {
            let log = log.lock().expect("lock");
            let expired = log
                .iter()
                .position(|l| l == "disconnected Some(4001) token expired")
                .unwrap_or_else(|| panic!("{rt:?}: no 4001 close: {log:?}"));
            assert!(
                log[..expired]
                    .iter()
                    .any(|l| l == "refresh failed no_token"),
                "{rt:?}: {log:?}"
            );
            assert_eq!(
                log.last().map(String::as_str),
                Some("connected None resumed"),
                "{rt:?}: {log:?}"
            );
            assert!(!log.iter().any(|l| l.starts_with("gap")), "{rt:?}: {log:?}");
        }
        acked(
            &r,
            "publish after the resume",
            client.publish("renewal", &json!(2)).expect("data"),
        )
        .await;
        client.close().await;
    });
    drop(server);
}

#[test]
fn token_renewal_keeps_the_connection_and_4001_resumes_tokio() {
    token_renewal(Rt::Tokio);
}

#[test]
fn token_renewal_keeps_the_connection_and_4001_resumes_smol() {
    token_renewal(Rt::Smol);
}
