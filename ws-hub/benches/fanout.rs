//! Fan-out and de-dup benchmarks for the hub (no IO: pure state machine).
//!
//! - `fanout/publish/N`: one publish to a room of N members, draining every
//!   resulting action. Throughput is in deliveries (actions out).
//! - `serial/raw/S` and `serial/parsed/S`: the hub's own cost of one
//!   S-byte publish to a room of 100, handed over raw (`Command::Received`,
//!   the hub parses) or parsed beforehand (`Command::Request`; the parse,
//!   done on a connection task in the server, is not timed): what parsing
//!   off the serial path saves the hub.
//! - `dedup/hit` and `dedup/miss`: a publish whose id is (or is not) already
//!   in the de-dup window, end to end (parse, lookup, ack).

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ws_hub::{Action, Command, ConnId, Hub, HubConfig, Identity, Request, SessionSecret};

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
    drain(hub)
}

/// A publish of `size` bytes (at least about 70) with id `m<id>`.
fn publish_of_size(id: u64, size: usize) -> Bytes {
    let head = format!(r#"{{"type":"publish","room":"lobby","id":"m{id}","data":{{"text":""#);
    let pad = size.saturating_sub(head.len() + 3);
    Bytes::from(format!(r#"{head}{}"}}}}"#, "x".repeat(pad)))
}

/// Takes every action out of `hub`; returns how many there were.
fn drain(hub: &mut Hub) -> usize {
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

fn serial(c: &mut Criterion) {
    let mut g = c.benchmark_group("serial");
    g.throughput(Throughput::Elements(1));
    let now = origin();
    let limit = HubConfig::default().max_message_size;
    for size in [100usize, 2048] {
        let mut hub = hub_with_room(100, now);
        let mut id = 0u64;
        g.bench_function(BenchmarkId::new("raw", size), |b| {
            b.iter_batched(
                || {
                    id += 1;
                    publish_of_size(id, size)
                },
                |data| {
                    hub.handle(
                        now,
                        Command::Received {
                            conn: ConnId(0),
                            data,
                            is_text: true,
                        },
                    );
                    drain(&mut hub)
                },
                BatchSize::SmallInput,
            );
        });
        let mut hub = hub_with_room(100, now);
        g.bench_function(BenchmarkId::new("parsed", size), |b| {
            b.iter_batched(
                || {
                    id += 1;
                    Request::parse(&publish_of_size(id, size), true, limit)
                },
                |request| {
                    hub.handle(
                        now,
                        Command::Request {
                            conn: ConnId(0),
                            request,
                        },
                    );
                    drain(&mut hub)
                },
                BatchSize::SmallInput,
            );
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

criterion_group!(benches, fanout, serial, dedup);
criterion_main!(benches);
