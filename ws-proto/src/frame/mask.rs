//! Masking and unmasking of payloads (RFC 6455 section 5.3).
//!
//! Masking is its own inverse: the same call masks and unmasks. The fast
//! path XORs 64-byte blocks against a pre-rotated 64-byte key pattern; this
//! is plain safe Rust that the compiler turns into SIMD loads and XORs (SSE2
//! on x86-64 baseline), so it runs near memory bandwidth without `unsafe`.
//! `benches/mask.rs` compares it with [`apply_mask_bytewise`] and `memcpy`.

/// The block size the fast path works on.
const BLOCK: usize = 64;

/// XORs `buf` with the masking `key`, where `buf[0]` is byte number
/// `offset` of the frame payload. The offset lets a caller unmask a payload
/// that arrives in pieces.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    let mut pattern = [0u8; BLOCK];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = key[i % 4];
    }
    let mut blocks = buf.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for (b, k) in block.iter_mut().zip(pattern.iter()) {
            *b ^= *k;
        }
    }
    // The tail is shorter than a block and starts at a multiple of 4 bytes
    // from the rotated key origin, so the pattern lines up.
    for (b, k) in blocks.into_remainder().iter_mut().zip(pattern.iter()) {
        *b ^= *k;
    }
}

/// The reference implementation: one byte at a time. Kept for tests and for
/// the benchmark that shows what the fast path gains.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) % 4];
    }
}

fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let r = offset % 4;
    [key[r], key[(r + 1) % 4], key[(r + 2) % 4], key[(r + 3) % 4]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_matches_bytewise_for_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..300 {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = data.clone();
                let mut slow = data.clone();
                apply_mask(&mut fast, key, offset);
                apply_mask_bytewise(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
                apply_mask(&mut fast, key, offset);
                assert_eq!(fast, data, "masking twice restores the input");
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = data;
        let mut pos = 0;
        for step in [1, 3, 64, 65, 7, 200, 660] {
            let end = (pos + step).min(pieces.len());
            apply_mask(&mut pieces[pos..end], key, pos);
            pos = end;
        }
        assert_eq!(whole, pieces);
    }

    #[test]
    fn rfc_6455_masked_hello() {
        // Section 5.7: "Hello" masked with 37 fa 21 3d.
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }
}
