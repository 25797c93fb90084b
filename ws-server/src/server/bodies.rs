//! Compress once per publish: every member of a room gets the same body
//! (`Payload::body`, one refcounted buffer), so the first connection task
//! that needs its compressed form compresses it and the others reuse those
//! bytes (`ws_proto::PreparedBody`). Each member's own head goes in front
//! as a stored block, so the compressed body is the same for all.
//!
//! The cache must cover every body still queued in some outbox: a server
//! that falls behind serves each connection's backlog of many publishes in
//! one go, so the first member compresses hundreds of bodies before the
//! second member needs the first of them. With a cache smaller than the
//! backlog every member compressed every body again (measured: 1,000
//! members, the server behind, 3.4 us per delivery became 15.8 us and
//! deliveries fell sixfold). So it keeps as many bodies as an outbox holds
//! before its connection is cut off as a slow consumer, bounded in bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use ws_proto::{Compressor, DeflateParams, PreparedBody};

/// How many recent bodies keep their compressed form: as many as one
/// outbox holds (the default of `outbound_max_messages`), so a member that is a
/// whole outbox behind the first still finds every body compressed.
const SLOTS: usize = 1024;

/// Bound on the bytes (plain plus compressed) the cache keeps alive;
/// past it the oldest bodies go first. Plain bodies queued in outboxes are
/// alive anyway; this bounds what the cache adds after they are sent.
const MAX_BYTES: usize = 8 << 20;

/// A body's identity: its buffer's address and length. The cache holds the
/// `Bytes`, so the buffer cannot be freed and reused while its key is in.
type Key = (usize, usize);

fn key(body: &Bytes) -> Key {
    (body.as_ptr() as usize, body.len())
}

/// The shared compressor and the recently compressed bodies.
pub(crate) struct BodyCache {
    state: Mutex<State>,
    /// Bodies shorter than this are sent uncompressed.
    threshold: usize,
}

struct State {
    compressor: Compressor,
    /// The bodies and their compressed forms (the `PreparedBody` holds the
    /// body's `Bytes`, keeping its key valid).
    recent: HashMap<Key, PreparedBody>,
    /// Keys oldest first, for eviction.
    order: VecDeque<Key>,
    /// Plain plus compressed bytes of the entries.
    bytes: usize,
}

fn size(p: &PreparedBody) -> usize {
    p.plain().len() + p.deflated_payload().map_or(0, |c| c.len())
}

impl BodyCache {
    /// `None` when deflate is off on this server.
    pub(crate) fn new(deflate: Option<ws_proto::DeflateConfig>) -> Option<Self> {
        let config = deflate?;
        let compressor = Compressor::new(config.level, ws_proto::deflate::MAX_WINDOW_BITS).ok()?;
        Some(Self {
            state: Mutex::new(State {
                compressor,
                recent: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
            threshold: config.threshold,
        })
    }

    /// Whether a connection with these parameters can take shared
    /// compressed bodies (no server context takeover, full window).
    pub(crate) fn fits(params: Option<DeflateParams>) -> bool {
        params.is_some_and(|p| {
            p.server_no_context_takeover
                && p.server_max_window_bits >= ws_proto::deflate::MAX_WINDOW_BITS
        })
    }

    /// The body with its compressed form, compressed at most once while it
    /// stays among the recent ones; `None` for a body under the threshold.
    pub(crate) fn prepare(&self, body: &Bytes) -> Option<PreparedBody> {
        if body.len() < self.threshold {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        let k = key(body);
        if let Some(hit) = state.recent.get(&k) {
            return Some(hit.clone());
        }
        let prepared = PreparedBody::new(body.clone()).with_deflate(&mut state.compressor);
        state.bytes += size(&prepared);
        state.recent.insert(k, prepared.clone());
        state.order.push_back(k);
        while state.order.len() > SLOTS || state.bytes > MAX_BYTES {
            let Some(old) = state.order.pop_front() else {
                break;
            };
            if let Some(p) = state.recent.remove(&old) {
                state.bytes -= size(&p);
            }
        }
        Some(prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_compressed_once_and_shared() {
        let cache = BodyCache::new(Some(ws_proto::DeflateConfig::shared())).unwrap();
        let body = Bytes::from("{\"text\":\"hello hello hello hello hello\"}".repeat(100));
        let a = cache.prepare(&body).unwrap();
        let b = cache.prepare(&body).unwrap();
        let (a, b) = (a.deflated_payload().unwrap(), b.deflated_payload().unwrap());
        assert_eq!(a.as_ptr(), b.as_ptr());
        // Another buffer with equal bytes is another body.
        let copy = Bytes::copy_from_slice(&body);
        let c = cache.prepare(&copy).unwrap();
        assert_ne!(c.deflated_payload().unwrap().as_ptr(), a.as_ptr());
        assert!(cache.prepare(&Bytes::from_static(b"tiny")).is_none());
    }

    /// A member a whole outbox behind the first still finds every body
    /// compressed: the first compression is the one every member gets.
    #[test]
    fn a_backlog_as_long_as_an_outbox_is_compressed_once() {
        let cache = BodyCache::new(Some(ws_proto::DeflateConfig::shared())).unwrap();
        let bodies: Vec<Bytes> = (0..SLOTS)
            .map(|i| {
                Bytes::from(format!(
                    "{{\"n\":{i},\"text\":\"{}\"}}",
                    "hello ".repeat(20)
                ))
            })
            .collect();
        let first: Vec<Bytes> = bodies
            .iter()
            .map(|b| {
                cache
                    .prepare(b)
                    .unwrap()
                    .deflated_payload()
                    .unwrap()
                    .clone()
            })
            .collect();
        for (b, f) in bodies.iter().zip(&first) {
            let again = cache.prepare(b).unwrap();
            assert_eq!(again.deflated_payload().unwrap().as_ptr(), f.as_ptr());
        }
        // One more body evicts the oldest, and only it.
        let extra = Bytes::from("x".repeat(100));
        cache.prepare(&extra).unwrap();
        let oldest = cache.prepare(&bodies[0]).unwrap();
        assert_ne!(
            oldest.deflated_payload().unwrap().as_ptr(),
            first[0].as_ptr()
        );
        let state = cache.state.lock().unwrap();
        assert_eq!((state.recent.len(), state.order.len()), (SLOTS, SLOTS));
        assert_eq!(state.bytes, state.recent.values().map(size).sum::<usize>());
    }

    #[test]
    fn the_cache_is_bounded_in_bytes() {
        let cache = BodyCache::new(Some(ws_proto::DeflateConfig::shared())).unwrap();
        for i in 0..40 {
            let body = Bytes::from(format!("{i:06}").repeat(50_000)); // 300 KB each
            cache.prepare(&body).unwrap();
        }
        let state = cache.state.lock().unwrap();
        assert!(state.bytes <= MAX_BYTES);
        assert!(state.recent.len() < 40);
        assert_eq!(state.bytes, state.recent.values().map(size).sum::<usize>());
    }
}
