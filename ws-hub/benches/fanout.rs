//! Fan-out and de-dup benchmarks for the hub (no IO: pure state machine).
//!
//! - `fanout/publish/N`: one publish to a room of N members, draining every
//!   resulting action. Throughput is in deliveries (actions out).
//! - `dedup/hit` and `dedup/miss`: a publish whose id is (or is not) already
//!   in the de-dup window, end to end (parse, lookup, ack).

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ws_hub::{Action, Command, ConnId, Hub, HubConfig, Identity, SessionSecret};

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn hub_with_room(n: u64, now: Instant) -> Hub {
    let config = HubConfig {
        max_connections: n as usize + 1,
        rate_per_sec: u32::MAX / 2,
        rate_burst: u32::MAX / 2,
        idle_timeout: None,
        ..HubConfig::default()
    };
    let mut hub = Hub::with_defaults(config, SessionSecret::new([7; 32])).expect("valid config");
    for c in 0..n {
        hub.handle(
            now,
            Command::Connected {
                conn: ConnId(c),
                identity: Identity::user(format!("user-{c}")),
                remote_addr: None,
                resume: None,
            },
        );
        hub.handle(
            now,
            Command::Received {
                conn: ConnId(c),
                data: Bytes::from_static(br#"{"type":"join","room":"lobby"}"#),
                is_text: true,
            },
        );
    }
    while hub.poll_action().is_some() {}
    hub
}

fn publish(hub: &mut Hub, now: Instant, id: u64) -> usize {
    let data = format!(
        r#"{{"type":"publish","room":"lobby","id":"m{id}","data":{{"text":"hello, world","n":{id}}}}}"#
    );
    hub.handle(
        now,
        Command::Received {
            conn: ConnId(0),
            data: Bytes::from(data),
            is_text: true,
        },
    );
    let mut n = 0;
    while let Some(a) = hub.poll_action() {
        if let Action::Deliver { payload, .. } = &a {
            black_box(payload.len());
        }
        n += 1;
    }
    n
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for n in [1_000u64, 10_000] {
        let now = origin();
        let mut hub = hub_with_room(n, now);
        let mut id = 0u64;
        g.throughput(Throughput::Elements(n));
        g.bench_function(BenchmarkId::new("publish", n), |b| {
            b.iter(|| {
                id += 1;
                publish(&mut hub, now, id)
            });
        });
    }
    g.finish();
}

fn dedup(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(1));
    let now = origin();
    let mut hub = hub_with_room(1, now);
    publish(&mut hub, now, 1);
    g.bench_function("hit", |b| b.iter(|| publish(&mut hub, now, 1)));
    let mut hub = hub_with_room(1, now);
    let mut id = 0u64;
    g.bench_function("miss", |b| {
        b.iter(|| {
            id += 1;
            publish(&mut hub, now, id)
        });
    });
    g.finish();
}

criterion_group!(benches, fanout, dedup);
criterion_main!(benches);
