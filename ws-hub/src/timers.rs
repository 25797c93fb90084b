//! Timer sets: at most one deadline per key, ordered by time.
//!
//! Every pending deadline is one entry in an ordered set, so the earliest
//! deadline is the set's minimum (O(log n)) and popping what is due visits
//! only the entries that are due. Nothing ever scans all keys, so the cost
//! per tick does not grow with the number of armed timers. The hub keys a
//! [`TimerSet`] by its own timer kinds (see `hub::timeouts`), and keeps the
//! one timer every connection has in [`Deadlines`].

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// An ordered set of `(deadline, key)` with at most one deadline per key:
/// [`Deadlines`] plus an index by key.
#[derive(Debug)]
pub(crate) struct TimerSet<K> {
    by_time: Deadlines<K>,
    by_key: HashMap<K, Instant>,
}

impl<K: Ord + Hash + Copy> Default for TimerSet<K> {
    fn default() -> Self {
        Self {
            by_time: Deadlines::default(),
            by_key: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Copy> TimerSet<K> {
    /// Arms (or re-arms) `key` to fire at `at`.
    pub(crate) fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.by_time.remove(old, key);
        }
        self.by_time.insert(at, key);
    }

    /// Disarms `key`; a no-op if it is not armed.
    pub(crate) fn cancel(&mut self, key: K) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(old, key);
        }
    }

    /// The deadline of `key`, if armed.
    pub(crate) fn get(&self, key: K) -> Option<Instant> {
        self.by_key.get(&key).copied()
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.next()
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let (at, key) = self.by_time.pop_due(now)?;
        self.by_key.remove(&key);
        Some((at, key))
    }

    /// Number of armed timers.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// An ordered set of `(deadline, key)` without an index by key: the owner
/// of each key remembers its deadline and passes it to
/// [`remove`](Self::remove). This is for a timer that every connection
/// has, where an index entry would cost each idle one about 50 bytes.
#[derive(Debug)]
pub(crate) struct Deadlines<K> {
    by_time: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Copy> Default for Deadlines<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Copy> Deadlines<K> {
    /// Arms `key` at `at`; the caller disarms any earlier deadline of it.
    pub(crate) fn insert(&mut self, at: Instant, key: K) {
        self.by_time.insert((at, key));
    }

    /// Disarms `key`, armed at `at`; a no-op if it is not.
    pub(crate) fn remove(&mut self, at: Instant, key: K) {
        self.by_time.remove(&(at, key));
    }

    /// Whether `key` is armed at `at`.
    pub(crate) fn contains(&self, at: Instant, key: K) -> bool {
        self.by_time.contains(&(at, key))
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|&(t, _)| t)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let &(at, key) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.pop_first();
        Some((at, key))
    }

    /// Number of armed deadlines.
    pub(crate) fn len(&self) -> usize {
        self.by_time.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ordered_and_rearmable() {
        let t0 = crate::test_instant();
        let s = Duration::from_secs;
        let mut t = TimerSet::default();
        t.set(('p', 1), t0 + s(30));
        t.set(('p', 2), t0 + s(10));
        t.set(('l', 1), t0 + s(20));
        assert_eq!(t.next(), Some(t0 + s(10)));
        t.set(('p', 2), t0 + s(40));
        assert_eq!(t.len(), 3);
        assert_eq!(t.next(), Some(t0 + s(20)));
        assert_eq!(t.pop_due(t0 + s(19)), None);
        assert_eq!(t.pop_due(t0 + s(35)), Some((t0 + s(20), ('l', 1))));
        assert_eq!(t.pop_due(t0 + s(35)), Some((t0 + s(30), ('p', 1))));
        assert_eq!(t.pop_due(t0 + s(35)), None);
        t.cancel(('p', 2));
        assert_eq!(t.next(), None);
        assert_eq!(t.len(), 0);
        assert_eq!(t.get(('p', 2)), None);
    }

    #[test]
    fn deadlines_are_ordered_and_removed_by_their_instant() {
        let t0 = crate::test_instant();
        let s = Duration::from_secs;
        let mut d = Deadlines::default();
        d.insert(t0 + s(30), 1);
        d.insert(t0 + s(10), 2);
        d.insert(t0 + s(10), 1);
        assert_eq!(d.next(), Some(t0 + s(10)));
        d.remove(t0 + s(30), 1);
        d.remove(t0 + s(20), 2);
        assert!(d.contains(t0 + s(10), 2));
        assert_eq!(d.len(), 2);
        assert_eq!(d.pop_due(t0 + s(9)), None);
        assert_eq!(d.pop_due(t0 + s(10)), Some((t0 + s(10), 1)));
        assert_eq!(d.pop_due(t0 + s(10)), Some((t0 + s(10), 2)));
        assert_eq!(d.next(), None);
    }
}
