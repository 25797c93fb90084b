//! Compress once per publish: every member of a room gets the same body
//! (`Payload::body`, one refcounted buffer), so the first connection task
//! that needs its compressed form compresses it and the others reuse those
//! bytes (`ws_proto::PreparedBody`). Each member's own head goes in front
//! as a stored block, so the compressed body is the same for all.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use ws_proto::{Compressor, DeflateParams, PreparedBody};

/// How many recent bodies keep their compressed form: publishes to
/// different rooms interleave across connection tasks.
const SLOTS: usize = 16;

/// The shared compressor and the recently compressed bodies.
pub(crate) struct BodyCache {
    state: Mutex<State>,
    /// Bodies shorter than this are sent uncompressed.
    threshold: usize,
}

struct State {
    compressor: Compressor,
    /// Most recent first; the `Bytes` key keeps its buffer alive, so a
    /// pointer match is the same body.
    recent: VecDeque<(Bytes, PreparedBody)>,
}

impl BodyCache {
    /// `None` when deflate is off on this server.
    pub(crate) fn new(deflate: Option<ws_proto::DeflateConfig>) -> Option<Self> {
        let config = deflate?;
        let compressor = Compressor::new(config.level, ws_proto::deflate::MAX_WINDOW_BITS).ok()?;
        Some(Self {
            state: Mutex::new(State {
                compressor,
                recent: VecDeque::with_capacity(SLOTS),
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
        let same =
            |(b, _): &(Bytes, PreparedBody)| b.as_ptr() == body.as_ptr() && b.len() == body.len();
        if let Some(hit) = state.recent.iter().find(|e| same(e)) {
            return Some(hit.1.clone());
        }
        let prepared = PreparedBody::new(body.clone()).with_deflate(&mut state.compressor);
        if state.recent.len() == SLOTS {
            state.recent.pop_back();
        }
        state.recent.push_front((body.clone(), prepared.clone()));
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
}
