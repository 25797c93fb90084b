//! Where a client's masking keys come from.
//!
//! RFC 6455 section 5.3 wants keys an attacker cannot predict. This crate
//! reads no randomness itself: the caller passes a [`MaskKeySource`].
//! [`SeededMaskKeys`] is a xoshiro256** generator; seed it from the OS
//! random source (the adapters do) and it produces unpredictable keys
//! cheaply, without a system call per frame.

/// A source of 4-byte masking keys.
pub trait MaskKeySource: Send {
    /// The next key.
    fn next_key(&mut self) -> [u8; 4];
}

/// xoshiro256** seeded with 32 bytes.
#[derive(Debug, Clone)]
pub struct SeededMaskKeys {
    s: [u64; 4],
    spare: Option<[u8; 4]>,
}

impl SeededMaskKeys {
    /// A generator from a 32-byte seed (an all-zero seed is replaced, as
    /// xoshiro cannot leave the zero state).
    pub fn new(seed: [u8; 32]) -> Self {
        let mut s = [0u64; 4];
        for (word, chunk) in s.iter_mut().zip(seed.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        if s == [0; 4] {
            s = [
                0x9e37_79b9_7f4a_7c15,
                0xbf58_476d_1ce4_e5b9,
                0x94d0_49bb_1331_11eb,
                1,
            ];
        }
        Self { s, spare: None }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }
}

impl MaskKeySource for SeededMaskKeys {
    fn next_key(&mut self) -> [u8; 4] {
        if let Some(key) = self.spare.take() {
            return key;
        }
        let b = self.next_u64().to_le_bytes();
        self.spare = Some([b[4], b[5], b[6], b[7]]);
        [b[0], b[1], b[2], b[3]]
    }
}

impl<F: FnMut() -> [u8; 4] + Send> MaskKeySource for F {
    fn next_key(&mut self) -> [u8; 4] {
        self()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_vary_and_are_reproducible_from_the_seed() {
        let mut a = SeededMaskKeys::new([7; 32]);
        let mut b = SeededMaskKeys::new([7; 32]);
        let ka: Vec<_> = (0..64).map(|_| a.next_key()).collect();
        let kb: Vec<_> = (0..64).map(|_| b.next_key()).collect();
        assert_eq!(ka, kb);
        let distinct: std::collections::HashSet<_> = ka.iter().collect();
        assert!(distinct.len() > 60);
        let mut z = SeededMaskKeys::new([0; 32]);
        assert_ne!(z.next_key(), z.next_key());
    }
}
