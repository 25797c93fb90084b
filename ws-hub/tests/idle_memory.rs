//! Heap held by the hub per idle connection (welcome sent, nothing else),
//! counted by a counting global allocator: bytes requested and live, not
//! RSS, so the figure is exact and the same on every run.
//! `cargo test -p ws-hub --test idle_memory -- --nocapture` prints it.
// A global allocator needs `unsafe impl`; it only forwards to `System`.
#![allow(unsafe_code, missing_docs)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use ws_hub::{Action, Command, ConnId, Hub, HubConfig, Identity};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to `System` with the caller's arguments; the
// counters are a side effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        ALLOCS.fetch_sub(1, Relaxed);
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

/// Connections measured. The hub's hash maps grow by doubling, so their
/// share per connection depends on where `N` falls between two powers of
/// two; 10,000 is the figure the server is measured at.
const N: u64 = 10_000;

/// Opens connections `first..first + n` as anonymous users named as the
/// server's authenticator names them, and drops every action (the
/// welcomes), as an adapter does once it has handed them on.
fn open(hub: &mut Hub, now: std::time::Instant, first: u64, n: u64) {
    for conn in first..first + n {
        hub.handle(
            now,
            Command::Connected {
                conn: ConnId(conn),
                identity: Identity::anonymous(format!("anon-node-1a2b3c4d-{conn}")),
                remote_addr: Some(([127, 0, 0, 1], 40_000).into()),
                resume: None,
            },
        );
        while let Some(action) = hub.poll_action() {
            assert!(matches!(action, Action::Deliver { .. }), "{action:?}");
        }
    }
}

// One test in this file: the counters are global to the process, and a
// test running beside it would disturb them.
#[test]
fn an_idle_connection_holds_at_most_480_bytes_of_hub_heap() {
    let config = HubConfig {
        max_connections: 2 * N as usize,
        ..HubConfig::default()
    };
    let mut hub = Hub::with_defaults(config, common::secret()).expect("valid config");
    let now = common::origin();
    // The first connection allocates what the hub keeps for all.
    open(&mut hub, now, 1, 1);
    let (bytes, allocs) = (LIVE.load(Relaxed), ALLOCS.load(Relaxed));
    open(&mut hub, now, 2, N);
    let per_conn = (LIVE.load(Relaxed) - bytes) as f64 / N as f64;
    let allocs_per_conn = (ALLOCS.load(Relaxed) - allocs) as f64 / N as f64;
    println!(
        "hub heap per idle connection at {N}: {per_conn:.0} bytes in {allocs_per_conn:.2} allocations"
    );
    assert_eq!(hub.metrics().connections, N + 1);
    hub.check_invariants().expect("consistent");
    // 468 bytes in 3.5 allocations when this was written (the connection,
    // the session, the user name and a share of the maps' nodes), against
    // 832 bytes in 4.67 before the work of issue 15 (53143ed).
    assert!(per_conn <= 480.0, "{per_conn:.0} bytes per idle connection");
    assert!(allocs_per_conn <= 4.0, "{allocs_per_conn:.2} allocations");
}
