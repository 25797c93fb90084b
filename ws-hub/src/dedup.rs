//! The de-duplication window.
//!
//! Keyed **per publisher**: the key is `(publishing user, client message
//! id)`. Client-chosen ids are only unique per publisher (two clients may
//! both count "1", "2", ...), so the publisher must be part of the key
//! whatever the window's scope; scoping the LRU bound per publisher as well
//! means that one chatty (or hostile) publisher evicts only its own entries
//! and can never push another publisher's ids out of the window early. A
//! per-room window would let any member of a busy room shrink everyone
//! else's protection. The same key is used for messages from the cluster
//! bus, so a message retried on another node is still delivered once.
//!
//! Bounds (all three hold at all times):
//! - time: an entry lives at most `window` after it was first seen (a
//!   repeat does not refresh it, so repeats cannot keep an id alive);
//! - count per publisher: at most `per_publisher` ids, oldest evicted first;
//! - count overall: at most `max_entries` ids across all publishers, oldest
//!   evicted first, so memory is bounded whatever clients send.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::id::UserId;

#[derive(Debug, Default)]
struct Window {
    ids: HashMap<Arc<str>, u64>,
    order: VecDeque<(u64, Arc<str>)>,
}

/// A bounded, time-limited set of `(publisher, id)` pairs.
#[derive(Debug)]
pub(crate) struct Dedup {
    window: Duration,
    per_publisher: usize,
    max_entries: usize,
    publishers: HashMap<UserId, Window>,
    /// Global insertion order: `(first seen, generation, publisher)`.
    order: VecDeque<(Instant, u64, UserId)>,
    next_gen: u64,
    live: usize,
}

impl Dedup {
    pub(crate) fn new(window: Duration, per_publisher: usize, max_entries: usize) -> Self {
        Self {
            window,
            per_publisher: per_publisher.max(1),
            max_entries: max_entries.max(1),
            publishers: HashMap::new(),
            order: VecDeque::new(),
            next_gen: 0,
            live: 0,
        }
    }

    /// Whether `(user, id)` is inside the window at `now`.
    pub(crate) fn contains(&mut self, now: Instant, user: &UserId, id: &str) -> bool {
        self.expire(now);
        self.publishers
            .get(user)
            .is_some_and(|w| w.ids.contains_key(id))
    }

    /// Checks and records in one step: returns `true` if `(user, id)` was
    /// already in the window (a duplicate), otherwise records it.
    pub(crate) fn check_and_insert(&mut self, now: Instant, user: &UserId, id: &str) -> bool {
        if self.contains(now, user, id) {
            return true;
        }
        self.insert(now, user, id);
        false
    }

    fn insert(&mut self, now: Instant, user: &UserId, id: &str) {
        let generation = self.next_gen;
        self.next_gen += 1;
        let w = self.publishers.entry(user.clone()).or_default();
        let id: Arc<str> = Arc::from(id);
        if w.ids.insert(id.clone(), generation).is_none() {
            self.live += 1;
        }
        w.order.push_back((generation, id));
        while w.order.len() > self.per_publisher {
            if let Some((g, old)) = w.order.pop_front()
                && w.ids.get(&old) == Some(&g)
            {
                w.ids.remove(&old);
                self.live -= 1;
            }
        }
        self.order.push_back((now, generation, user.clone()));
        while self.order.len() > self.max_entries {
            self.pop_oldest();
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, _, _)) = self.order.front() {
            if now.saturating_duration_since(t) >= self.window {
                self.pop_oldest();
            } else {
                break;
            }
        }
    }

    /// Removes the globally oldest entry (and anything of the same
    /// publisher that is older still, which can only be stale).
    fn pop_oldest(&mut self) {
        let Some((_, generation, user)) = self.order.pop_front() else {
            return;
        };
        let Some(w) = self.publishers.get_mut(&user) else {
            return;
        };
        while let Some(&(g, _)) = w.order.front() {
            if g > generation {
                break;
            }
            if let Some((g, id)) = w.order.pop_front()
                && w.ids.get(&id) == Some(&g)
            {
                w.ids.remove(&id);
                self.live -= 1;
            }
        }
        if w.order.is_empty() {
            self.publishers.remove(&user);
        }
    }

    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Internal bookkeeping size (for invariant checks): the global order
    /// queue, which bounds everything else.
    pub(crate) fn footprint(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::new(s)
    }

    #[test]
    fn repeat_in_window_is_duplicate() {
        let t0 = crate::test_instant();
        let mut d = Dedup::new(Duration::from_secs(30), 10, 100);
        assert!(!d.check_and_insert(t0, &u("a"), "1"));
        assert!(d.check_and_insert(t0 + Duration::from_secs(29), &u("a"), "1"));
        // Another publisher may use the same id.
        assert!(!d.check_and_insert(t0, &u("b"), "1"));
        // Time bound: gone after 30 s from first sight (repeat did not refresh).
        assert!(!d.check_and_insert(t0 + Duration::from_secs(30), &u("a"), "1"));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn per_publisher_lru_bound() {
        let t0 = crate::test_instant();
        let mut d = Dedup::new(Duration::from_secs(30), 3, 100);
        for i in 0..5 {
            assert!(!d.check_and_insert(t0, &u("a"), &i.to_string()));
        }
        assert!(!d.check_and_insert(t0, &u("b"), "x"));
        // Only the 3 newest of "a" are remembered.
        assert!(!d.contains(t0, &u("a"), "0"));
        assert!(!d.contains(t0, &u("a"), "1"));
        assert!(d.contains(t0, &u("a"), "2"));
        assert!(d.contains(t0, &u("a"), "4"));
        // "a" flooding did not evict "b".
        assert!(d.contains(t0, &u("b"), "x"));
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn global_bound() {
        let t0 = crate::test_instant();
        let mut d = Dedup::new(Duration::from_secs(30), 1000, 5);
        for i in 0..100 {
            d.check_and_insert(t0, &u(&format!("u{i}")), "id");
            assert!(d.len() <= 5);
            assert!(d.footprint() <= 5);
        }
        assert!(d.contains(t0, &u("u99"), "id"));
        assert!(!d.contains(t0, &u("u94"), "id"));
        assert!(d.publishers.len() <= 5);
    }

    #[test]
    fn expiry_frees_everything() {
        let t0 = crate::test_instant();
        let mut d = Dedup::new(Duration::from_secs(1), 2, 10);
        for i in 0..10 {
            d.check_and_insert(t0, &u("a"), &i.to_string());
        }
        assert!(!d.contains(t0 + Duration::from_secs(2), &u("a"), "9"));
        assert_eq!(d.len(), 0);
        assert_eq!(d.footprint(), 0);
        assert!(d.publishers.is_empty());
    }
}
