//! Memory of permessage-deflate, counted by a counting global allocator
//! (heap bytes live, not RSS): `cargo bench -p ws-proto --bench deflate_memory`.
//!
//! 1. Per context of the backend (zlib through flate2): a compressor and an
//!    inflater at every window size 9 to 15, after construction and after
//!    one 16 KiB JSON message (zlib allocates the inflate window lazily).
//! 2. Per idle server connection, in each mode: 1,000 server connections
//!    open, each receives and sends one compressed 4 KiB JSON message, then
//!    idles (`release_idle_buffers`); the live heap per connection is
//!    reported against a connection without deflate.
// A global allocator needs `unsafe impl`; it only forwards to `System`.
#![allow(unsafe_code, missing_docs, clippy::disallowed_methods)]

#[path = "support/json.rs"]
mod json;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Instant;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use ws_proto::{
    AcceptOptions, ClientRequest, Config, Connection, DeflateConfig, Event, Message, SeededMaskKeys,
};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to `System` with the caller's arguments; the
// counter is a side effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: as above, for `dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: as above, for `realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Relaxed)
}

fn per_context() {
    let data = json::typical_json(16 << 10);
    println!(
        "| window bits | deflate context | after a message | inflate context | after a message |"
    );
    println!("|---|---|---|---|---|");
    for bits in 9..=15u8 {
        let base = live();
        let mut c = Compress::new_with_window_bits(Compression::new(6), false, bits);
        let deflate_new = live() - base;
        let mut out = Vec::with_capacity(32 << 10);
        c.compress_vec(data.as_bytes(), &mut out, FlushCompress::Sync)
            .unwrap();
        let deflate_used = live() - base - out.capacity() as isize;
        let base = live();
        let mut d = Decompress::new_with_window_bits(false, bits);
        let inflate_new = live() - base;
        let mut back = Vec::with_capacity(32 << 10);
        d.decompress_vec(&out, &mut back, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(back, data.as_bytes());
        let inflate_used = live() - base - back.capacity() as isize;
        println!(
            "| {bits} | {:.1} KiB | {:.1} KiB | {:.1} KiB | {:.1} KiB |",
            deflate_new as f64 / 1024.0,
            deflate_used as f64 / 1024.0,
            inflate_new as f64 / 1024.0,
            inflate_used as f64 / 1024.0,
        );
    }
}

const CONNECTIONS: usize = 1000;

fn per_connection(name: &str, deflate: Option<DeflateConfig>, offer: bool) -> isize {
    let per = open_and_idle(CONNECTIONS, deflate, offer);
    println!(
        "| {name} | {} | {per} B |",
        if deflate.is_some() { "yes" } else { "no" }
    );
    per
}

/// Opens `connections` pairs, one compressed message each way on each,
/// keeps the idle servers; returns the live heap per server connection.
fn open_and_idle(connections: usize, deflate: Option<DeflateConfig>, offer: bool) -> isize {
    let now = Instant::now();
    let mut config = Config::default();
    config.deflate = deflate;
    let mut client_config = Config::default();
    if offer {
        client_config.deflate = Some(DeflateConfig::dedicated(15));
    }
    let text = json::typical_json(4 << 10);
    let base = live();
    let mut servers = Vec::with_capacity(connections);
    let vec_bytes = live() - base;
    for i in 0..connections {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let request = ClientRequest::new("localhost", "/", key);
        let mut c = Connection::client(
            client_config.clone(),
            request,
            Box::new(SeededMaskKeys::new([7; 32])),
            now,
        )
        .unwrap();
        let mut s = Connection::server(config.clone(), now).unwrap();
        pump(&mut c, &mut s, now);
        assert!(matches!(s.poll_event(), Some(Event::Request(_))));
        s.accept(AcceptOptions::default()).unwrap();
        pump(&mut s, &mut c, now);
        assert!(matches!(c.poll_event(), Some(Event::Accepted(_))));
        c.send(Message::text(text.clone())).unwrap();
        pump(&mut c, &mut s, now);
        assert!(matches!(s.poll_event(), Some(Event::Message(_))));
        s.send(Message::text(text.clone())).unwrap();
        pump(&mut s, &mut c, now);
        assert!(matches!(c.poll_event(), Some(Event::Message(_))));
        s.release_idle_buffers();
        servers.push(s);
    }
    assert_eq!(servers[0].deflate().is_some(), deflate.is_some());
    (live() - base - vec_bytes) / connections as isize
}

fn pump(from: &mut Connection, to: &mut Connection, now: Instant) {
    let mut wire = Vec::new();
    while from.poll_transmit(&mut wire).is_some() {}
    to.handle_data(now, &wire);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it too.
    println!("## Per context (zlib via flate2)\n");
    per_context();
    println!("\n## Per idle server connection ({CONNECTIONS} connections)\n");
    println!(
        "heap beyond the `Connection` struct itself ({} B inline)\n",
        size_of::<Connection>()
    );
    // Messages sent without context takeover use the thread's one spare
    // compressor, allocated by the first of them: per thread, not per
    // connection, so it is allocated before counting.
    let spare = open_and_idle(1, Some(DeflateConfig::shared()), true);
    println!(
        "(the thread's compressor for messages without context takeover: {spare} B, once per thread, not counted below)\n"
    );
    println!("| mode | negotiated | heap per connection |");
    println!("|---|---|---|");
    let plain = per_connection("no deflate", None, false);
    let shared = per_connection("shared (default)", Some(DeflateConfig::shared()), true);
    for bits in [9, 12, 15] {
        per_connection(
            &format!("dedicated, window {bits}"),
            Some(DeflateConfig::dedicated(bits)),
            true,
        );
    }
    println!(
        "\nshared mode costs {} B per idle connection over no deflate",
        shared - plain
    );
}
