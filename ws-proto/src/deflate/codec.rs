//! The compressor and decompressor of one direction (RFC 7692 section 7.2):
//! raw DEFLATE, a sync flush per message with its `00 00 ff ff` tail
//! removed on send and put back on receive.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::ProtocolError;
use crate::utf8::Utf8Validator;

/// The empty stored block a sync flush ends with.
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The most inflated output produced per step before the limit is checked
/// again: a decompression bomb is stopped within this much of the limit.
const INFLATE_STEP: usize = 64 << 10;

/// A raw-DEFLATE compressor for whole messages.
pub(crate) struct Deflater {
    inner: Compress,
    level: u32,
    window_bits: u8,
}

impl Deflater {
    /// `level` 0..=9, `window_bits` 9..=15 (checked by the caller).
    pub(crate) fn new(level: u32, window_bits: u8) -> Self {
        Self {
            inner: Compress::new_with_window_bits(Compression::new(level), false, window_bits),
            level,
            window_bits,
        }
    }

    pub(crate) fn window_bits(&self) -> u8 {
        self.window_bits
    }

    pub(crate) fn level(&self) -> u32 {
        self.level
    }

    /// Compresses the concatenation of `parts` as one message and returns
    /// the payload without the sync-flush tail. With `reset`, the context
    /// starts afresh for the next message (no context takeover). `None` if
    /// the backend reports an error (the caller then sends uncompressed).
    pub(crate) fn compress(&mut self, parts: &[&[u8]], reset: bool) -> Option<Bytes> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        // Most messages shrink; incompressible ones grow by a few bytes per
        // 16 KiB stored block.
        let mut out = Vec::with_capacity(total / 2 + 64);
        let ok = parts
            .iter()
            .all(|p| self.run(p, &mut out, FlushCompress::None))
            && self.run(&[], &mut out, FlushCompress::Sync);
        if reset || !ok {
            self.inner.reset();
        }
        if !ok {
            return None;
        }
        if out.is_empty() {
            // zlib flushes nothing when it has nothing pending (an empty
            // message with context takeover): a lone stored-block header,
            // which the receiver completes with the tail (RFC 7692 7.2.3.6).
            return Some(Bytes::from_static(&[0x00]));
        }
        if !out.ends_with(&TAIL) {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        Some(Bytes::from(out))
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) -> bool {
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(input.len() / 2 + 256);
            }
            let before = self.inner.total_in();
            let room = out.capacity() - out.len();
            let filled = out.len();
            if self.inner.compress_vec(input, out, flush).is_err() {
                return false;
            }
            let consumed = (self.inner.total_in() - before) as usize;
            input = &input[consumed..];
            // Done once the input is in and zlib did not fill the output
            // (a full output may hide pending flush bytes).
            if input.is_empty() && out.len() - filled < room {
                return true;
            }
        }
    }
}

/// A raw-DEFLATE decompressor that inflates a message as its frames arrive.
pub(crate) struct Inflater {
    inner: Decompress,
    /// The peer ended the stream with a final block: the rest of the
    /// message is ignored and the context starts afresh after it.
    ended: bool,
}

impl Inflater {
    /// `window_bits` 9..=15; a bigger window than the peer's is harmless.
    pub(crate) fn new(window_bits: u8) -> Self {
        Self {
            inner: Decompress::new_with_window_bits(false, window_bits),
            ended: false,
        }
    }

    /// Inflates `input` onto `out` in steps of bounded size, validating the
    /// new text with `utf8` as it appears, and fails as soon as `out` would
    /// pass `limit` bytes.
    pub(crate) fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        mut utf8: Option<&mut Utf8Validator>,
    ) -> Result<(), ProtocolError> {
        while !self.ended {
            // One byte past the limit is room enough to see it crossed.
            let room = limit.saturating_sub(out.len()) + 1;
            if out.capacity() == out.len() {
                let want = (input.len() * 4).max(out.len()).clamp(256, INFLATE_STEP);
                out.reserve_exact(want.min(room));
            }
            // Growth is capped at `room`, so the capacity never passes
            // `limit + 1`: zlib cannot write further than that.
            let spare = out.capacity() - out.len();
            let start = out.len();
            let before = self.inner.total_in();
            let status = self
                .inner
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            let consumed = (self.inner.total_in() - before) as usize;
            input = &input[consumed..];
            let produced = out.len() - start;
            if let Some(v) = utf8.as_deref_mut()
                && v.feed(&out[start..]).is_err()
            {
                return Err(ProtocolError::InvalidUtf8);
            }
            if out.len() > limit {
                return Err(ProtocolError::MessageTooLarge {
                    size: out.len() as u64,
                    limit,
                });
            }
            match status {
                Status::StreamEnd => self.ended = true,
                Status::Ok | Status::BufError => {
                    if input.is_empty() && produced < spare {
                        return Ok(());
                    }
                    if consumed == 0 && produced == 0 {
                        // No progress with input and output room left.
                        return Err(ProtocolError::InvalidCompressedData);
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends a message: inflates the sync-flush tail. A stream the peer
    /// ended with a final block starts afresh.
    pub(crate) fn finish_message(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
        utf8: Option<&mut Utf8Validator>,
    ) -> Result<(), ProtocolError> {
        self.inflate(&TAIL, out, limit, utf8)?;
        if self.ended {
            self.inner.reset(false);
            self.ended = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_all(payload: &[u8], limit: usize) -> Result<Vec<u8>, ProtocolError> {
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        inf.inflate(payload, &mut out, limit, None)?;
        inf.finish_message(&mut out, limit, None)?;
        Ok(out)
    }

    #[test]
    fn rfc_7692_hello_examples() {
        // Section 7.2.3.1: "Hello" compressed without context takeover.
        let mut d = Deflater::new(6, 15);
        let hello = d.compress(&[b"Hello"], true).unwrap();
        assert_eq!(&hello[..], [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(
            inflate_all(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
            b"Hello"
        );
        // Section 7.2.3.2: the second "Hello" with context takeover is a
        // back-reference.
        let mut d = Deflater::new(6, 15);
        d.compress(&[b"Hello"], false).unwrap();
        let again = d.compress(&[b"Hello"], false).unwrap();
        assert_eq!(&again[..], [0xf2, 0x00, 0x11, 0x00, 0x00]);
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        for msg in [&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00][..], &again] {
            out.clear();
            inf.inflate(msg, &mut out, 100, None).unwrap();
            inf.finish_message(&mut out, 100, None).unwrap();
            assert_eq!(out, b"Hello");
        }
        // Section 7.2.3.3: a stored (uncompressed) block.
        assert_eq!(
            inflate_all(
                &[
                    0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00
                ],
                100
            )
            .unwrap(),
            b"Hello"
        );
        // Section 7.2.3.4: a block with BFINAL set.
        assert_eq!(
            inflate_all(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
            b"Hello"
        );
        // Section 7.2.3.6: an empty message compresses to a single 0x00.
        assert_eq!(&d.compress(&[], true).unwrap()[..], [0x00]);
        assert_eq!(inflate_all(&[0x00], 100).unwrap(), b"");
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let mut d = Deflater::new(9, 15);
        let zeros = vec![0u8; 10 << 20];
        let bomb = d.compress(&[&zeros], true).unwrap();
        assert!(bomb.len() < 20 << 10, "{}", bomb.len());
        let limit = 100_000;
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        let err = inf.inflate(&bomb, &mut out, limit, None).unwrap_err();
        assert!(matches!(err, ProtocolError::MessageTooLarge { .. }));
        // It stopped one byte past the limit, not after inflating it all.
        assert_eq!(out.len(), limit + 1);
        assert!(out.capacity() <= limit + 1);
    }

    #[test]
    fn garbage_is_invalid_data() {
        assert_eq!(
            inflate_all(&[0xff, 0xff, 0xff, 0xff], 100),
            Err(ProtocolError::InvalidCompressedData)
        );
    }

    #[test]
    fn invalid_text_fails_on_the_inflated_stream() {
        let mut d = Deflater::new(6, 15);
        let mut bytes = vec![b'a'; 50_000];
        bytes.extend_from_slice(&[0xc0, 0x80]);
        bytes.extend(vec![b'b'; 50_000]);
        let payload = d.compress(&[&bytes], true).unwrap();
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        let mut v = Utf8Validator::new();
        let err = inf.inflate(&payload, &mut out, 1 << 20, Some(&mut v));
        assert_eq!(err, Err(ProtocolError::InvalidUtf8));
        assert!(out.len() < bytes.len(), "failed before inflating it all");
    }

    #[test]
    fn every_window_size_round_trips() {
        let text: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("{{\"id\":{},\"v\":\"x{}\"}}", i % 97, i % 13).into_bytes())
            .take(40_000)
            .collect();
        for bits in 9..=15 {
            let mut d = Deflater::new(6, bits);
            let payload = d.compress(&[&text[..1000], &text[1000..]], true).unwrap();
            let mut inf = Inflater::new(bits);
            let mut out = Vec::new();
            inf.inflate(&payload, &mut out, 1 << 20, None).unwrap();
            inf.finish_message(&mut out, 1 << 20, None).unwrap();
            assert_eq!(out, text, "window {bits}");
        }
    }
}
