//! Benchmarks: shared pieces of the end-to-end load tools (`wsload`, and
//! `wssload` over TLS) and of the peer servers (`peer-tungstenite`,
//! `peer-fastwebsockets`, `tcp-echo`).
//!
//! The load tool deliberately does not use any WebSocket library in its hot
//! path: frames are pre-encoded once and written with vectored writes, and
//! the read side runs a minimal streaming frame parser ([`wire::FrameParser`])
//! that only counts messages unless it is asked to capture payloads.

pub mod deflate;
pub mod procfs;
pub mod server;
pub mod target;
pub mod tls;
pub mod wire;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new
/// soft limit.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: could not raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}
