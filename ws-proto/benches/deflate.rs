//! permessage-deflate throughput and bytes on the wire for a typical 1 KiB
//! and 16 KiB JSON message (`benches/support/json.rs`).
//!
//! Messages rotate through 64 different events, so context takeover is
//! measured on similar, not identical, messages.
//!
//! - `deflate_send/{size}/...`: a server connection sends one text message
//!   and the bytes are drained: `plain` (no deflate, the baseline),
//!   `shared_own` (shared mode, the connection's own compressor created
//!   and dropped per message), `shared_compressor` (shared mode with a
//!   caller-held [`Compressor`] via `send_with`), `dedicated_15` (context
//!   takeover, window 15).
//! - `deflate_receive/{size}/...`: a server connection decodes one masked
//!   client frame and the message is taken out: `plain`, `shared`
//!   (inflater created per message), `dedicated_15` (inflater kept).
//!
//! Throughput is in bytes of the uncompressed message. Wire sizes are
//! printed before the groups run. Runs are short (1 s warm-up, 2 s
//! measurement) since the machine is shared; compare figures of one run.
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs, clippy::disallowed_methods)]

#[path = "support/json.rs"]
mod json;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ws_proto::frame::FrameHeader;
use ws_proto::{
    AcceptOptions, ClientRequest, Compressor, Config, Connection, DeflateConfig, Event, Message,
    SeededMaskKeys,
};

const SIZES: [(usize, &str); 2] = [(1 << 10, "1KiB"), (16 << 10, "16KiB")];

fn config(deflate: Option<DeflateConfig>) -> Config {
    let mut c = Config::default();
    c.deflate = deflate;
    c
}

fn pair(deflate: Option<DeflateConfig>) -> (Connection, Connection) {
    let now = Instant::now();
    let request = ClientRequest::new("localhost", "/", *b"the sample nonce");
    let keys = Box::new(SeededMaskKeys::new([3; 32]));
    let mut c = Connection::client(config(deflate), request, keys, now).unwrap();
    let mut s = Connection::server(config(deflate), now).unwrap();
    let mut wire = Vec::new();
    while c.poll_transmit(&mut wire).is_some() {}
    s.handle_data(now, &wire);
    assert!(matches!(s.poll_event(), Some(Event::Request(_))));
    s.accept(AcceptOptions::default()).unwrap();
    wire.clear();
    while s.poll_transmit(&mut wire).is_some() {}
    c.handle_data(now, &wire);
    assert!(matches!(c.poll_event(), Some(Event::Accepted(_))));
    (c, s)
}

const MODES: [(&str, Option<DeflateConfig>); 3] = [
    ("plain", None),
    ("shared", Some(DeflateConfig::shared())),
    ("dedicated_15", Some(DeflateConfig::dedicated(15))),
];

fn drain(conn: &mut Connection, wire: &mut Vec<u8>) {
    wire.clear();
    while conn.poll_transmit(wire).is_some() {}
}

fn wire_sizes() {
    println!("bytes on the wire (server frame incl. header) for typical JSON:");
    for (size, name) in SIZES {
        let text = json::typical_json(size);
        for (mode, deflate) in MODES {
            let (_, mut s) = pair(deflate);
            let mut wire = Vec::new();
            s.send(Message::text(text.clone())).unwrap();
            drain(&mut s, &mut wire);
            let first = wire.len();
            s.send(Message::text(json::typical_json_seeded(size, 1)))
                .unwrap();
            drain(&mut s, &mut wire);
            println!(
                "  {name:>5} {mode:<13} first message {first:>6} B, a similar next one {:>6} B",
                wire.len()
            );
        }
    }
}

fn send(c: &mut Criterion) {
    wire_sizes();
    for (size, name) in SIZES {
        let texts: Vec<Message> = (0..64)
            .map(|seed| Message::text(json::typical_json_seeded(size, seed)))
            .collect();
        let mut next = texts.iter().cycle();
        let mut group = c.benchmark_group(format!("deflate_send/{name}"));
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Bytes(size as u64));
        let mut wire = Vec::with_capacity(size * 2);
        for (mode, deflate) in MODES {
            let (_, mut s) = pair(deflate);
            let label = if mode == "shared" { "shared_own" } else { mode };
            group.bench_function(label, |b| {
                b.iter(|| {
                    s.send(black_box(next.next().unwrap().clone())).unwrap();
                    drain(&mut s, &mut wire);
                })
            });
        }
        let (_, mut s) = pair(Some(DeflateConfig::shared()));
        let mut compressor = Compressor::new(6, 15).unwrap();
        group.bench_function("shared_compressor", |b| {
            b.iter(|| {
                s.send_with(black_box(next.next().unwrap().clone()), &mut compressor)
                    .unwrap();
                drain(&mut s, &mut wire);
            })
        });
        group.finish();
    }
}

fn receive(c: &mut Criterion) {
    let now = Instant::now();
    for (size, name) in SIZES {
        let mut group = c.benchmark_group(format!("deflate_receive/{name}"));
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Bytes(size as u64));
        for (mode, deflate) in MODES {
            let (mut client, mut s) = pair(deflate);
            // With context takeover every frame depends on the previous
            // ones, so a batch is encoded once and replayed in order on a
            // fresh connection each time it runs out.
            let mut frames = Vec::new();
            let mut wire = Vec::new();
            for seed in 0..64 {
                let text = json::typical_json_seeded(size, seed);
                client.send(Message::text(text)).unwrap();
                drain(&mut client, &mut wire);
                let (h, n) = FrameHeader::decode(&wire).unwrap().unwrap();
                assert_eq!(n + h.payload_len as usize, wire.len());
                frames.push(wire.clone());
            }
            let mut i = 0;
            group.bench_function(mode, |b| {
                b.iter(|| {
                    if i == frames.len() {
                        if mode == "dedicated_15" {
                            s = pair(deflate).1;
                        }
                        i = 0;
                    }
                    s.handle_data(now, &frames[i]);
                    i += 1;
                    match s.poll_event() {
                        Some(Event::Message(m)) => black_box(m),
                        other => panic!("{other:?}"),
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, send, receive);
criterion_main!(benches);
