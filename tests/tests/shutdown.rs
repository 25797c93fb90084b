//! Graceful shutdown under load (issue 15): everything the hub
//! acknowledged before the shutdown (what SIGTERM triggers) reaches every
//! connected member of the room before its close 1001, once and in each
//! publisher's order, on both runtimes.
//!
//! Publishers pipeline their publishes without waiting for acks; the
//! shutdown is triggered while most of them are still in flight. Every
//! wait is bounded; the test asserts what arrived, never when.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use ws_proto::CloseCode;
use ws_server::server::{ServerConfig, Settings};
use ws_tests::hub_client::*;
use ws_tests::*;

const ROOM: &str = "load";
const PUBLISHERS: usize = 4;
const LISTENERS: usize = 8;
const PER_PUBLISHER: usize = 400;

fn config() -> ServerConfig {
    // The load must not be refused by the rate limit or cut off as a slow
    // consumer: what is under test is the shutdown.
    let s = Settings {
        rate_per_sec: Some(1_000_000),
        rate_burst: Some(1_000_000),
        outbound_max_messages: Some(16 * PUBLISHERS * PER_PUBLISHER),
        outbound_max_bytes: Some(64 << 20),
        ..Settings::default()
    };
    ServerConfig::from_settings(&s).expect("valid settings")
}

/// `(publisher, k)` from a publish id `p{publisher}-{k}`.
fn parse_id(id: &str) -> Option<(usize, usize)> {
    let (p, k) = id.strip_prefix('p')?.split_once('-')?;
    Some((p.parse().ok()?, k.parse().ok()?))
}

/// Ids of the publishes acknowledged to a publisher (plain acks).
fn acked(seen: &[Value]) -> BTreeSet<String> {
    seen.iter()
        .filter(|v| v["type"] == "ack" && v["op"] == "publish" && v["duplicate"] != true)
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

/// Checks one member's deliveries: no duplicates, each publisher's
/// messages in publish order; returns the set of ids received.
fn check_order(who: &str, seen: &[Value]) -> BTreeSet<String> {
    let mut last: BTreeMap<usize, usize> = BTreeMap::new();
    let mut got = BTreeSet::new();
    for id in message_ids(seen) {
        let (p, k) = parse_id(&id).unwrap_or_else(|| panic!("{who}: unexpected id {id}"));
        assert!(got.insert(id.clone()), "{who}: {id} delivered twice");
        if let Some(prev) = last.insert(p, k) {
            assert!(
                prev < k,
                "{who}: publisher {p} out of order ({prev} then {k})"
            );
        }
    }
    got
}

#[test]
fn everything_acknowledged_before_shutdown_reaches_members_before_1001() {
    for (srv, cli) in [(Rt::Tokio, Rt::Smol), (Rt::Smol, Rt::Tokio)] {
        let server = start_hub(srv, config());
        let addr = server.addr;
        let server = &server;
        on_runtime!(cli, |rt| async move {
            let mut clients = Vec::new();
            for _ in 0..PUBLISHERS + LISTENERS {
                let mut c = HubClient::connect(rt.clone(), addr, "/ws")
                    .await
                    .unwrap_or_else(|e| panic!("{srv:?}: connect: {e}"));
                let reply = c.join(ROOM).await;
                assert_eq!(reply["type"], "ack", "{srv:?}: join: {reply}");
                clients.push(c);
            }
            // Pipeline the publishes; no publisher waits for its acks. The
            // shutdown comes after the first ack, while the rest are still
            // being written: publishers keep sending into the shutdown.
            let first = "p0-0";
            let mut consumed = None;
            for k in 0..PER_PUBLISHER {
                if k == PER_PUBLISHER / 4 {
                    consumed = Some(clients[0].reply("publish", "id", first).await);
                    server.trigger_shutdown();
                }
                for (p, c) in clients.iter_mut().take(PUBLISHERS).enumerate() {
                    let id = format!("p{p}-{k}");
                    let publish = json!({"type": "publish", "room": ROOM, "id": id, "data": k});
                    // After the close, sending fails: that publish was never
                    // acknowledged, which is what the test allows.
                    let _ = c.send_json(&publish).await;
                }
            }
            let mut seen = Vec::new();
            for (i, c) in clients.iter_mut().enumerate() {
                let info = c.closed().await;
                assert_eq!(info.code, CloseCode(1001), "{srv:?}: client {i}: {info:?}");
                assert!(info.clean, "{srv:?}: client {i}: {info:?}");
                let mut all: Vec<Value> = c.take_pending();
                all.retain(|v| v["type"] != "pong");
                seen.push(all);
            }
            let mut acked: BTreeSet<String> =
                seen[..PUBLISHERS].iter().flat_map(|s| acked(s)).collect();
            let consumed = consumed.unwrap_or_default();
            assert_eq!(consumed["type"], "ack", "{srv:?}: {consumed}");
            acked.insert(first.to_owned());
            eprintln!(
                "{srv:?}: {} of {} publishes acknowledged around the shutdown",
                acked.len(),
                PUBLISHERS * PER_PUBLISHER
            );
            for (i, s) in seen.iter().enumerate() {
                let who = format!("{srv:?}: client {i}");
                let got = check_order(&who, s);
                let missing: Vec<&String> = acked.difference(&got).collect();
                assert!(
                    missing.is_empty(),
                    "{who}: {} acknowledged publishes not delivered before 1001: {missing:?}",
                    missing.len()
                );
            }
        });
        assert!(
            server.wait_active_at_most(0, WAIT),
            "{srv:?}: every connection ended"
        );
    }
}
