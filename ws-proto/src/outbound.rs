//! The queue of encoded bytes waiting to be written.
//!
//! Small frames are copied into one growing buffer, so many of them leave in
//! a single write; payloads at or above [`SHARE_THRESHOLD`] are queued by
//! reference (a `Bytes` clone), so a large or broadcast payload is never
//! copied on the way out. The caller drains it as one contiguous copy
//! (`poll_transmit`), as owned chunks, or as `IoSlice`s for a vectored write.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Payloads at least this long are queued by reference instead of copied.
pub(crate) const SHARE_THRESHOLD: usize = 2048;

/// An idle connection keeps a tail buffer up to this size (a 50-byte
/// message and its header): 64 bytes of idle memory against an allocation
/// and a free per small message.
pub(crate) const KEEP_TAIL: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// Chunks ready to go, in order, before `tail`.
    chunks: VecDeque<Bytes>,
    /// Small writes accumulate here after the last chunk.
    tail: BytesMut,
    /// Total queued bytes.
    len: usize,
}

impl Outbound {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer to encode small writes into; call [`Self::commit`] with
    /// the number of bytes appended.
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Makes room for `n` more bytes in the tail. An empty tail (released
    /// while the connection was idle) is allocated afresh, which is much
    /// cheaper than growing it.
    pub(crate) fn reserve_tail(&mut self, n: usize) {
        if self.tail.capacity() == 0 {
            // Small ones at the size that is kept while idle, so that
            // messages of varying small sizes reuse it.
            self.tail = BytesMut::with_capacity(n.max(KEEP_TAIL));
        } else {
            self.tail.reserve(n);
        }
    }

    /// How many bytes [`Self::push_shared`] copies into the tail for
    /// `bytes` (0 when it queues them by reference).
    pub(crate) fn copied_len(&self, bytes: &Bytes) -> usize {
        if bytes.len() < SHARE_THRESHOLD {
            bytes.len()
        } else {
            0
        }
    }

    /// Queues a payload, copying it only when it is small.
    pub(crate) fn push_shared(&mut self, bytes: &Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if bytes.len() < SHARE_THRESHOLD {
            self.tail.extend_from_slice(bytes);
        } else {
            self.seal_tail();
            self.chunks.push_back(bytes.clone());
        }
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// Appends everything to `out`; returns the number of bytes.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.len;
        out.reserve(n);
        for chunk in self.chunks.drain(..) {
            out.extend_from_slice(&chunk);
        }
        out.extend_from_slice(&self.tail);
        self.tail.clear();
        self.len = 0;
        self.release_if_large();
        n
    }

    /// Takes the next chunk.
    pub(crate) fn pop_chunk(&mut self) -> Option<Bytes> {
        let chunk = match self.chunks.pop_front() {
            Some(c) => c,
            None if !self.tail.is_empty() => self.tail.split().freeze(),
            None => return None,
        };
        self.len -= chunk.len();
        Some(chunk)
    }

    /// Fills `dst` with slices of the queued bytes, in order; returns how
    /// many slices were filled.
    pub(crate) fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let parts = self
            .chunks
            .iter()
            .map(|c| &c[..])
            .chain(std::iter::once(&self.tail[..]))
            .filter(|s| !s.is_empty());
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(parts) {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes (after a partial or vectored write).
    pub(crate) fn consume(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                // All of it written: clearing (not advancing) keeps the
                // buffer's whole capacity for the next frame.
                if n >= self.tail.len() {
                    self.tail.clear();
                } else {
                    self.tail.advance(n);
                }
                break;
            };
            if n < front.len() {
                front.advance(n);
                break;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
        if self.len == 0 {
            self.tail.clear();
            self.release_if_large();
        }
    }

    /// Frees the buffers when nothing is queued, except a tail of at most
    /// [`KEEP_TAIL`] bytes: a connection that sends small messages then
    /// reuses it instead of allocating one per message.
    pub(crate) fn release_if_empty(&mut self) {
        if self.len != 0 {
            return;
        }
        if self.tail.capacity() > KEEP_TAIL {
            self.tail = BytesMut::new();
        }
        if self.chunks.capacity() > 0 {
            self.chunks = VecDeque::new();
        }
    }

    /// Frees a large tail buffer once it is empty, so an idle connection
    /// does not keep the memory of its biggest burst.
    fn release_if_large(&mut self) {
        if self.tail.capacity() > 64 * 1024 {
            self.tail = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(q: &mut Outbound) -> Vec<u8> {
        let big = Bytes::from(vec![7u8; SHARE_THRESHOLD + 5]);
        let mut expected = Vec::new();
        for i in 0..5u8 {
            q.tail().extend_from_slice(&[i; 3]);
            q.commit(3);
            expected.extend_from_slice(&[i; 3]);
            q.push_shared(&big);
            expected.extend_from_slice(&big);
        }
        q.tail().extend_from_slice(b"end");
        q.commit(3);
        expected.extend_from_slice(b"end");
        expected
    }

    #[test]
    fn every_drain_style_preserves_order() {
        let mut q = Outbound::default();
        let expected = fill(&mut q);
        let mut out = Vec::new();
        assert_eq!(q.drain_into(&mut out), expected.len());
        assert_eq!(out, expected);
        assert!(q.is_empty());

        let expected = fill(&mut q);
        let mut out = Vec::new();
        while let Some(c) = q.pop_chunk() {
            out.extend_from_slice(&c);
        }
        assert_eq!(out, expected);

        let expected = fill(&mut q);
        let mut out = Vec::new();
        while !q.is_empty() {
            let mut slots = [IoSlice::new(&[]); 3];
            let n = q.slices(&mut slots);
            // Simulate a short write: take the first slice and 1 byte more.
            let mut take = slots[0].len();
            out.extend_from_slice(&slots[0]);
            if n > 1 {
                out.push(slots[1][0]);
                take += 1;
            }
            q.consume(take);
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn large_payloads_are_shared_not_copied() {
        let mut q = Outbound::default();
        let big = Bytes::from(vec![1u8; SHARE_THRESHOLD]);
        q.push_shared(&big);
        assert_eq!(q.pop_chunk().unwrap().as_ptr(), big.as_ptr());
    }
}
