//! Per-connection token bucket and abuse (violation) window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Milli-tokens per token: integer arithmetic keeps the bucket exact and
/// deterministic.
const MILLI: u64 = 1000;

/// A token bucket: `burst` tokens, refilled at `rate_per_sec`. The rate
/// and burst are the hub's, passed in on each call rather than stored, so
/// that every connection's bucket is only its state.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens.
    pub(crate) fn new(burst: u32, now: Instant) -> Self {
        Self {
            tokens: u64::from(burst) * MILLI,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant, rate_per_sec: u32, burst: u32) {
        let elapsed = now.saturating_duration_since(self.last);
        let add = elapsed
            .as_nanos()
            .saturating_mul(u128::from(rate_per_sec) * u128::from(MILLI))
            / 1_000_000_000;
        if add > 0 {
            let add = u64::try_from(add).unwrap_or(u64::MAX);
            let capacity = u64::from(burst) * MILLI;
            self.tokens = self.tokens.saturating_add(add).min(capacity);
            // Only advance when something was credited, so frequent calls
            // do not lose the fractional remainder forever.
            self.last = now;
        }
    }

    /// Takes one token if available.
    pub(crate) fn try_take(&mut self, now: Instant, rate_per_sec: u32, burst: u32) -> bool {
        self.refill(now, rate_per_sec, burst);
        if self.tokens >= MILLI {
            self.tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

/// Counts protocol violations in a sliding time window; memory is bounded
/// by `max` instants (the hub's bounds, passed in on each call). A
/// connection without violations holds no storage and only a pointer's
/// room: the window is boxed on the first violation.
#[derive(Debug, Clone, Default)]
pub(crate) struct ViolationWindow {
    // The box is the point: 8 bytes in every connection instead of 32.
    #[allow(clippy::box_collection)]
    times: Option<Box<VecDeque<Instant>>>,
}

impl ViolationWindow {
    /// Records one violation; returns `true` when more than `max`
    /// violations happened within `window` (the connection should go).
    pub(crate) fn record(&mut self, now: Instant, max: usize, window: Duration) -> bool {
        let times = self.times.get_or_insert_with(Box::default);
        while let Some(&t) = times.front() {
            if now.saturating_duration_since(t) >= window {
                times.pop_front();
            } else {
                break;
            }
        }
        if times.len() >= max {
            return true;
        }
        times.push_back(now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_burst_then_refill() {
        let t0 = crate::test_instant();
        let mut b = TokenBucket::new(3, t0);
        let mut take = |t| b.try_take(t, 2, 3);
        assert!(take(t0));
        assert!(take(t0));
        assert!(take(t0));
        assert!(!take(t0));
        // 2 tokens/s: one token after 500 ms, not before.
        assert!(!take(t0 + Duration::from_millis(499)));
        assert!(take(t0 + Duration::from_millis(500)));
        assert!(!take(t0 + Duration::from_millis(500)));
        // Long idle refills to burst only.
        let t1 = t0 + Duration::from_secs(3600);
        assert!(take(t1));
        assert!(take(t1));
        assert!(take(t1));
        assert!(!take(t1));
    }

    #[test]
    fn bucket_does_not_lose_fractions() {
        let t0 = crate::test_instant();
        let mut b = TokenBucket::new(1, t0);
        assert!(b.try_take(t0, 1, 1));
        // Poll every 100 us; a token must appear after 1 s.
        let mut got = false;
        for i in 1..=10_000u64 {
            if b.try_take(t0 + Duration::from_micros(100 * i), 1, 1) {
                got = true;
                assert_eq!(i, 10_000);
            }
        }
        assert!(got);
    }

    #[test]
    fn violations_window() {
        let t0 = crate::test_instant();
        let window = Duration::from_secs(10);
        let mut v = ViolationWindow::default();
        assert!(!v.record(t0, 2, window));
        assert!(!v.record(t0, 2, window));
        assert!(v.record(t0, 2, window));
        let mut v = ViolationWindow::default();
        assert!(!v.record(t0, 2, window));
        assert!(!v.record(t0 + Duration::from_secs(5), 2, window));
        assert!(!v.record(t0 + Duration::from_secs(10), 2, window));
        assert!(v.record(t0 + Duration::from_secs(11), 2, window));
    }
}
