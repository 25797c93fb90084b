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
//! - count per publisher: at most `per_publisher` ids, oldest evicted first
//!   (a publisher's flood evicts only its own ids);
//! - count overall: at most `max_entries` ids across all publishers. When
//!   the table is full, a new id from a publisher below its own bound is
//!   **refused** ([`Seen::Full`]): no publisher's id ever leaves the window
//!   early because of other publishers. Memory is bounded whatever clients
//!   send; the price of a flood by many publishers is refused publishes
//!   (retried by their clients), never a silently repeated delivery.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::id::UserId;

#[derive(Debug, Default)]
struct Window {
    ids: HashSet<Arc<str>>,
    /// `(generation, id)`, oldest first; exactly the ids in `ids`.
    order: VecDeque<(u64, Arc<str>)>,
}

/// What [`Dedup::check_and_insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not seen in the window; now recorded.
    New,
    /// Already in the window.
    Duplicate,
    /// Not seen, and not recorded: the table holds `max_entries` ids inside
    /// their window and the publisher is below its own bound.
    Full,
}

/// A bounded, time-limited set of `(publisher, id)` pairs.
#[derive(Debug)]
pub(crate) struct Dedup {
    window: Duration,
    per_publisher: usize,
    max_entries: usize,
    publishers: HashMap<UserId, Window>,
    /// Every live entry by generation: `(first seen, publisher)`.
    order: BTreeMap<u64, (Instant, UserId)>,
    next_gen: u64,
}

impl Dedup {
    pub(crate) fn new(window: Duration, per_publisher: usize, max_entries: usize) -> Self {
        Self {
            window,
            per_publisher: per_publisher.max(1),
            max_entries: max_entries.max(1),
            publishers: HashMap::new(),
            order: BTreeMap::new(),
            next_gen: 0,
        }
    }

    /// Whether `(user, id)` is inside the window at `now`.
    pub(crate) fn contains(&mut self, now: Instant, user: &UserId, id: &str) -> bool {
        self.expire(now);
        self.publishers
            .get(user)
            .is_some_and(|w| w.ids.contains(id))
    }

    /// Checks and records in one step.
    pub(crate) fn check_and_insert(&mut self, now: Instant, user: &UserId, id: &str) -> Seen {
        if self.contains(now, user, id) {
            return Seen::Duplicate;
        }
        let own = self.publishers.get(user).map_or(0, |w| w.order.len());
        if own >= self.per_publisher {
            // The publisher's own oldest id makes room.
            self.pop_front_of(user);
        } else if self.order.len() >= self.max_entries {
            return Seen::Full;
        }
        let generation = self.next_gen;
        self.next_gen += 1;
        let w = self.publishers.entry(user.clone()).or_default();
        let id: Arc<str> = Arc::from(id);
        w.ids.insert(id.clone());
        w.order.push_back((generation, id));
        self.order.insert(generation, (now, user.clone()));
        Seen::New
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, (t, user))) = self.order.first_key_value() {
            if now.saturating_duration_since(*t) < self.window {
                break;
            }
            // The globally oldest entry is its publisher's oldest too.
            let user = user.clone();
            self.pop_front_of(&user);
        }
    }

    /// Removes `user`'s oldest id.
    fn pop_front_of(&mut self, user: &UserId) {
        let Some(w) = self.publishers.get_mut(user) else {
            return;
        };
        if let Some((g, id)) = w.order.pop_front() {
            w.ids.remove(&id);
            self.order.remove(&g);
        }
        if w.order.is_empty() {
            self.publishers.remove(user);
        }
    }

    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Internal bookkeeping size (for invariant checks): the per-publisher
    /// entries, which must equal [`len`](Self::len).
    pub(crate) fn footprint(&self) -> usize {
        self.publishers
            .values()
            .map(|w| w.ids.len().max(w.order.len()))
            .sum()
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
        assert_eq!(d.check_and_insert(t0, &u("a"), "1"), Seen::New);
        assert_eq!(
            d.check_and_insert(t0 + Duration::from_secs(29), &u("a"), "1"),
            Seen::Duplicate
        );
        // Another publisher may use the same id.
        assert_eq!(d.check_and_insert(t0, &u("b"), "1"), Seen::New);
        // Time bound: gone after 30 s from first sight (repeat did not refresh).
        assert_eq!(
            d.check_and_insert(t0 + Duration::from_secs(30), &u("a"), "1"),
            Seen::New
        );
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn per_publisher_lru_bound() {
        let t0 = crate::test_instant();
        let mut d = Dedup::new(Duration::from_secs(30), 3, 100);
        for i in 0..5 {
            assert_eq!(d.check_and_insert(t0, &u("a"), &i.to_string()), Seen::New);
        }
        assert_eq!(d.check_and_insert(t0, &u("b"), "x"), Seen::New);
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
    fn global_bound_refuses_instead_of_evicting_others() {
        let t0 = crate::test_instant();
        let mut d = Dedup::new(Duration::from_secs(30), 2, 4);
        assert_eq!(d.check_and_insert(t0, &u("a"), "a1"), Seen::New);
        assert_eq!(d.check_and_insert(t0, &u("b"), "b1"), Seen::New);
        assert_eq!(d.check_and_insert(t0, &u("c"), "c1"), Seen::New);
        assert_eq!(d.check_and_insert(t0, &u("c"), "c2"), Seen::New);
        // Full: new ids of publishers below their own bound are refused...
        for i in 0..100 {
            let who = u(&format!("x{i}"));
            assert_eq!(d.check_and_insert(t0, &who, "1"), Seen::Full);
            assert_eq!(
                d.check_and_insert(t0, &u("b"), &format!("b{}", i + 2)),
                Seen::Full
            );
            assert!(d.len() <= 4 && d.footprint() == d.len());
        }
        // ...so "a"'s id is still protected, and so is everyone else's.
        assert_eq!(d.check_and_insert(t0, &u("a"), "a1"), Seen::Duplicate);
        assert!(d.contains(t0, &u("b"), "b1"));
        // A publisher at its own bound replaces its own oldest id.
        assert_eq!(d.check_and_insert(t0, &u("c"), "c3"), Seen::New);
        assert!(!d.contains(t0, &u("c"), "c1"));
        assert!(d.contains(t0, &u("a"), "a1"));
        // The window frees room.
        let later = t0 + Duration::from_secs(30);
        assert_eq!(d.check_and_insert(later, &u("x1"), "1"), Seen::New);
        assert_eq!(d.len(), 1);
        assert!(d.publishers.len() <= 4);
    }

    #[test]
    fn expiry_frees_everything() {
        let t0 = crate::test_instant();
        let mut d = Dedup::new(Duration::from_secs(1), 2, 10);
        for i in 0..10 {
            assert_eq!(d.check_and_insert(t0, &u("a"), &i.to_string()), Seen::New);
        }
        assert!(!d.contains(t0 + Duration::from_secs(2), &u("a"), "9"));
        assert_eq!(d.len(), 0);
        assert_eq!(d.footprint(), 0);
        assert!(d.publishers.is_empty());
    }
}
