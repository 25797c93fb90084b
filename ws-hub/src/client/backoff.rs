//! The reconnect schedule: full-jitter exponential backoff, driven by a
//! seeded PRNG (the core reads no OS randomness).

use std::time::Duration;

/// SplitMix64: a tiny, well-distributed PRNG, seeded by the caller.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=bound` (multiply-shift; the bias is below 2^-64 of
    /// the range and irrelevant for jitter).
    pub(crate) fn up_to(&mut self, bound: u64) -> u64 {
        let span = u128::from(bound) + 1;
        // The product shifted right by 64 is below `span`, so it fits u64.
        u64::try_from((u128::from(self.next_u64()) * span) >> 64).unwrap_or(bound)
    }
}

/// Full-jitter exponential backoff between `min` and `max`.
///
/// Attempt `n` (from 0) waits `min(max, min + U[0, min(max, min * 2^n)])`:
/// the window doubles per failed attempt, every delay lies in
/// `[min, max]`, and the jitter spreads a crowd of clients that lost the
/// same server over the whole window (the scheme centrifuge-js uses).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt; advances the schedule.
    pub(crate) fn next_delay(&mut self, rng: &mut SplitMix64) -> Duration {
        let min = nanos(self.min);
        let max = nanos(self.max);
        let window = min.saturating_mul(1u64 << self.attempt.min(31)).min(max);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_nanos(min.saturating_add(rng.up_to(window)).min(max))
    }

    /// Back to the first step (after a stable connection).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_within_bounds_and_doubling_window() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(20));
        let mut rng = SplitMix64::new(7);
        let mut b = Backoff::new(min, max);
        for attempt in 0..40u32 {
            let d = b.next_delay(&mut rng);
            let window = min * 2u32.saturating_pow(attempt.min(20));
            assert!(d >= min && d <= max, "{d:?}");
            assert!(d <= min + window, "attempt {attempt}: {d:?}");
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= min * 2);
    }

    #[test]
    fn up_to_covers_range() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [false; 4];
        for _ in 0..200 {
            let v = rng.up_to(3);
            seen[usize::try_from(v).unwrap_or(0)] = true;
        }
        assert_eq!(seen, [true; 4]);
        assert_eq!(rng.up_to(0), 0);
    }
}
