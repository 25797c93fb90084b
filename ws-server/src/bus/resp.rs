//! RESP2, the Redis wire protocol, sans-IO: an encoder for commands and an
//! incremental decoder for replies and pushes.
//!
//! The bus speaks RESP itself over the [`Runtime`](ws_async::Runtime)'s own
//! TCP streams rather than through the `redis` crate, whose async API links
//! tokio (see the [bus docs](super)).
//!
//! - [`encode_command`] appends a command (an array of bulk strings) to a
//!   buffer.
//! - [`Decoder`] takes bytes as they arrive ([`Decoder::feed`], any
//!   chunking) and hands out complete [`Value`]s ([`Decoder::next_value`]).
//!   It never panics on any input, and it never buffers or allocates more
//!   than its [`Limits`] allow: a value that would exceed them is a
//!   [`RespError`], after which the connection is to be dropped.
//!
//! Its tests include property tests (any chunking of any values decodes
//! the same; arbitrary and damaged input never panics and stays within the
//! limits). A cargo-fuzz target needs no more than the loop below over
//! the fuzzer's bytes (`feed`, then `next_value` until it returns
//! `Ok(None)` or an error); it belongs beside the hub's targets in
//! `ws-hub/fuzz` when that crate exists.
//!
//! ```
//! use ws_server::bus::resp::{Decoder, Value, encode_command};
//!
//! let mut out = Vec::new();
//! encode_command(&mut out, [&b"PUBLISH"[..], b"ch", b"hi"]);
//! assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\nhi\r\n");
//!
//! let mut decoder = Decoder::default();
//! decoder.feed(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$");
//! assert_eq!(decoder.next_value(), Ok(None)); // incomplete
//! decoder.feed(b"2\r\nhi\r\n:1\r\n");
//! assert_eq!(
//!     decoder.next_value(),
//!     Ok(Some(Value::Array(Some(vec![
//!         Value::bulk("message"),
//!         Value::bulk("ch"),
//!         Value::bulk("hi"),
//!     ]))))
//! );
//! assert_eq!(decoder.next_value(), Ok(Some(Value::Integer(1))));
//! ```

use bytes::{Buf as _, Bytes, BytesMut};
use thiserror::Error;

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`: a simple string.
    Simple(Bytes),
    /// `-ERR ...`: an error reply.
    Error(Bytes),
    /// `:1`: an integer.
    Integer(i64),
    /// `$2\r\nhi`: a bulk string; `None` is the null bulk string (`$-1`).
    Bulk(Option<Bytes>),
    /// `*2\r\n...`: an array; `None` is the null array (`*-1`).
    Array(Option<Vec<Self>>),
}

impl Value {
    /// A (non-null) bulk string.
    pub fn bulk(data: impl AsRef<[u8]>) -> Self {
        Self::Bulk(Some(Bytes::copy_from_slice(data.as_ref())))
    }

    /// The bytes of a simple or (non-null) bulk string.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Self::Simple(b) | Self::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// Bounds on what a [`Decoder`] accepts, so that a faulty or hostile
/// server cannot make it allocate without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string, in bytes.
    pub max_bulk: usize,
    /// Most elements in one array.
    pub max_elements: usize,
    /// Deepest nesting of arrays (1: an array of scalars).
    pub max_depth: usize,
    /// Largest encoded value, in bytes, all nested elements included; this
    /// also bounds what the decoder buffers.
    pub max_value: usize,
    /// Longest line (a simple string, an error, an integer, a length).
    pub max_line: usize,
}

impl Default for Limits {
    /// Generous for the bus (whose payloads are hub messages, at most the
    /// server's message size limit) and small enough to be safe: 64 MiB a
    /// bulk string and a value, 1 Mi elements, depth 8, 64 KiB a line.
    fn default() -> Self {
        Self {
            max_bulk: 64 << 20,
            max_elements: 1 << 20,
            max_depth: 8,
            max_value: 64 << 20,
            max_line: 64 << 10,
        }
    }
}

/// Why the input is not acceptable RESP2 (the stream cannot be resynchronised
/// after any of these; drop the connection).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RespError {
    /// A value starts with a byte that is no RESP2 type marker.
    #[error("unknown RESP type byte {0:#04x}")]
    UnknownType(u8),
    /// A length or an integer is not a valid decimal number.
    #[error("invalid number in RESP line")]
    BadNumber,
    /// A line or a bulk string is not terminated by CRLF.
    #[error("missing CRLF in RESP input")]
    MissingCrlf,
    /// A line is longer than [`Limits::max_line`].
    #[error("RESP line longer than {0} bytes")]
    LineTooLong(usize),
    /// A bulk string is longer than [`Limits::max_bulk`].
    #[error("RESP bulk string of {len} bytes exceeds the limit of {max}")]
    BulkTooLong {
        /// Announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// An array has more elements than [`Limits::max_elements`].
    #[error("RESP array of {len} elements exceeds the limit of {max}")]
    TooManyElements {
        /// Announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// Arrays nest deeper than [`Limits::max_depth`].
    #[error("RESP arrays nested deeper than {0}")]
    TooDeep(usize),
    /// One value is larger than [`Limits::max_value`].
    #[error("RESP value larger than {0} bytes")]
    ValueTooLarge(usize),
}

/// Appends `args` as one command: an array of bulk strings.
pub fn encode_command<I, A>(out: &mut Vec<u8>, args: I)
where
    I: IntoIterator<Item = A>,
    I::IntoIter: ExactSizeIterator,
    A: AsRef<[u8]>,
{
    let args = args.into_iter();
    push_header(out, b'*', args.len());
    for arg in args {
        let arg = arg.as_ref();
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, marker: u8, n: usize) {
    out.push(marker);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Incremental RESP2 decoder: feed bytes, pull complete values.
///
/// Any chunking of the input yields the same values. After an error the
/// decoder keeps returning it.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    limits: Limits,
    /// The buffer length below which the value at the front cannot be
    /// complete (so a long bulk string arriving in many reads is scanned
    /// once, not once per read).
    needed: usize,
    failed: Option<RespError>,
}

/// Outcome of scanning a prefix of the buffer.
enum Scan {
    /// A value ends at this offset.
    Complete(usize),
    /// At least this many bytes in all are needed.
    Incomplete(usize),
}

impl Decoder {
    /// A decoder with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The buffer to read into directly (appending), instead of [`feed`].
    ///
    /// [`feed`]: Self::feed
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete value, `Ok(None)` if more input is needed.
    pub fn next_value(&mut self) -> Result<Option<Value>, RespError> {
        if let Some(error) = &self.failed {
            // Whatever was read into `buffer_mut` since is discarded.
            self.buf.clear();
            return Err(error.clone());
        }
        if self.buf.is_empty() || self.buf.len() < self.needed {
            return Ok(None);
        }
        match scan(&self.buf, 0, 0, &self.limits) {
            Ok(Scan::Complete(end)) => {
                self.needed = 0;
                let (value, used) = build(&self.buf, 0);
                debug_assert_eq!(used, end);
                self.buf.advance(end);
                Ok(Some(value))
            }
            Ok(Scan::Incomplete(needed)) if needed > self.limits.max_value => {
                self.fail(RespError::ValueTooLarge(self.limits.max_value))
            }
            Ok(Scan::Incomplete(needed)) => {
                self.needed = needed;
                Ok(None)
            }
            Err(error) => self.fail(error),
        }
    }

    fn fail(&mut self, error: RespError) -> Result<Option<Value>, RespError> {
        self.buf = BytesMut::new();
        self.failed = Some(error.clone());
        Err(error)
    }
}

/// Validates the value starting at `at` against the limits, allocating
/// nothing.
fn scan(buf: &[u8], at: usize, depth: usize, limits: &Limits) -> Result<Scan, RespError> {
    if at >= buf.len() {
        return Ok(Scan::Incomplete(at + 1));
    }
    let marker = buf[at];
    if !matches!(marker, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(RespError::UnknownType(marker));
    }
    let Some((line, next)) = line(buf, at + 1, limits)? else {
        return Ok(Scan::Incomplete(buf.len() + 1));
    };
    let too_large = |end: usize| end > limits.max_value;
    match marker {
        b'+' | b'-' => Ok(Scan::Complete(next)),
        b':' => number(line).map(|_| Scan::Complete(next)),
        b'$' => {
            let Some(len) = length(line)? else {
                return Ok(Scan::Complete(next));
            };
            if len > limits.max_bulk as u64 {
                return Err(RespError::BulkTooLong {
                    len,
                    max: limits.max_bulk,
                });
            }
            // Both fit in usize: len <= max_bulk.
            let end = next + len as usize + 2;
            if too_large(end) {
                return Err(RespError::ValueTooLarge(limits.max_value));
            }
            if buf.len() < end {
                return Ok(Scan::Incomplete(end));
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(RespError::MissingCrlf);
            }
            Ok(Scan::Complete(end))
        }
        b'*' => {
            let Some(len) = length(line)? else {
                return Ok(Scan::Complete(next));
            };
            if len > limits.max_elements as u64 {
                return Err(RespError::TooManyElements {
                    len,
                    max: limits.max_elements,
                });
            }
            if depth >= limits.max_depth {
                return Err(RespError::TooDeep(limits.max_depth));
            }
            let mut pos = next;
            for _ in 0..len {
                match scan(buf, pos, depth + 1, limits)? {
                    Scan::Complete(end) => pos = end,
                    incomplete => return Ok(incomplete),
                }
                if too_large(pos) {
                    return Err(RespError::ValueTooLarge(limits.max_value));
                }
            }
            Ok(Scan::Complete(pos))
        }
        other => Err(RespError::UnknownType(other)),
    }
}

/// The line starting at `at` (without its CRLF) and the offset after the
/// CRLF; `None` if the CRLF has not arrived yet.
fn line<'a>(
    buf: &'a [u8],
    at: usize,
    limits: &Limits,
) -> Result<Option<(&'a [u8], usize)>, RespError> {
    let rest = buf.get(at..).unwrap_or_default();
    let window = &rest[..rest.len().min(limits.max_line + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) if lf > 0 && window[lf - 1] == b'\r' => Ok(Some((&rest[..lf - 1], at + lf + 1))),
        Some(_) => Err(RespError::MissingCrlf),
        None if window.len() > limits.max_line + 1 => Err(RespError::LineTooLong(limits.max_line)),
        None => Ok(None),
    }
}

/// The length of a bulk string or an array; `None` for null (`-1`).
fn length(line: &[u8]) -> Result<Option<u64>, RespError> {
    match number(line)? {
        -1 => Ok(None),
        n => u64::try_from(n).map(Some).map_err(|_| RespError::BadNumber),
    }
}

/// A decimal `i64` (RESP allows a leading `-`).
fn number(line: &[u8]) -> Result<i64, RespError> {
    let text = std::str::from_utf8(line).map_err(|_| RespError::BadNumber)?;
    if text.starts_with('+') {
        return Err(RespError::BadNumber);
    }
    text.parse().map_err(|_| RespError::BadNumber)
}

/// Builds the value at `at`, which [`scan`] found complete and valid;
/// returns it and the offset after it. Allocates in proportion to the
/// input only (an array's elements are all present).
fn build(buf: &[u8], at: usize) -> (Value, usize) {
    let lf = at + buf[at..].iter().position(|&b| b == b'\n').unwrap_or(0);
    let line = &buf[at + 1..lf - 1];
    let next = lf + 1;
    let n = || number(line).unwrap_or(-1);
    match buf[at] {
        b'+' => (Value::Simple(Bytes::copy_from_slice(line)), next),
        b'-' => (Value::Error(Bytes::copy_from_slice(line)), next),
        b':' => (Value::Integer(n()), next),
        b'$' => match usize::try_from(n()) {
            Ok(len) => (
                Value::Bulk(Some(Bytes::copy_from_slice(&buf[next..next + len]))),
                next + len + 2,
            ),
            Err(_) => (Value::Bulk(None), next),
        },
        _ => match usize::try_from(n()) {
            Ok(len) => {
                let mut items = Vec::with_capacity(len);
                let mut pos = next;
                for _ in 0..len {
                    let (item, end) = build(buf, pos);
                    items.push(item);
                    pos = end;
                }
                (Value::Array(Some(items)), pos)
            }
            Err(_) => (Value::Array(None), next),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(decoder: &mut Decoder) -> Result<Vec<Value>, RespError> {
        let mut out = Vec::new();
        while let Some(v) = decoder.next_value()? {
            out.push(v);
        }
        Ok(out)
    }

    fn decode(input: &[u8]) -> Result<Vec<Value>, RespError> {
        let mut decoder = Decoder::default();
        decoder.feed(input);
        decode_all(&mut decoder)
    }

    /// Encodes any value (the decoder's inverse, for tests).
    fn encode(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Simple(s) => {
                out.push(b'+');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Value::Error(s) => {
                out.push(b'-');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Value::Integer(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Value::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Value::Bulk(Some(b)) => {
                push_header(out, b'$', b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(Some(items)) => {
                push_header(out, b'*', items.len());
                for item in items {
                    encode(item, out);
                }
            }
        }
    }

    fn line_text() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(
            any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            0..20,
        )
        .prop_map(Bytes::from)
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            line_text().prop_map(Value::Simple),
            line_text().prop_map(Value::Error),
            any::<i64>().prop_map(Value::Integer),
            Just(Value::Bulk(None)),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Value::Bulk(Some(b.into()))),
            Just(Value::Array(None)),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(|v| Value::Array(Some(v)))
        })
    }

    #[test]
    fn every_type_decodes() {
        let input = b"+OK\r\n-ERR wrong\r\n:-42\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n\
                      *2\r\n*1\r\n:1\r\n$3\r\na\r\n\r\n";
        assert_eq!(
            decode(input),
            Ok(vec![
                Value::Simple(Bytes::from_static(b"OK")),
                Value::Error(Bytes::from_static(b"ERR wrong")),
                Value::Integer(-42),
                Value::bulk(""),
                Value::Bulk(None),
                Value::Array(None),
                Value::Array(Some(vec![])),
                Value::Array(Some(vec![
                    Value::Array(Some(vec![Value::Integer(1)])),
                    Value::bulk("a\r\n"),
                ])),
            ])
        );
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, ["SUBSCRIBE", "a", ""]);
        assert_eq!(out, b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$0\r\n\r\n");
        assert_eq!(
            decode(&out),
            Ok(vec![Value::Array(Some(vec![
                Value::bulk("SUBSCRIBE"),
                Value::bulk("a"),
                Value::bulk(""),
            ]))])
        );
    }

    #[test]
    fn malformed_input_is_an_error_that_sticks() {
        for (input, error) in [
            (&b"?x\r\n"[..], RespError::UnknownType(b'?')),
            (b":12a\r\n", RespError::BadNumber),
            (b":+1\r\n", RespError::BadNumber),
            (b"?", RespError::UnknownType(b'?')),
            (b"$-2\r\n", RespError::BadNumber),
            (b"*-5\r\n", RespError::BadNumber),
            (b"+OK\n", RespError::MissingCrlf),
            (b"$2\r\nabcd", RespError::MissingCrlf),
        ] {
            let mut decoder = Decoder::default();
            decoder.feed(input);
            assert_eq!(decoder.next_value(), Err(error.clone()), "{input:?}");
            decoder.feed(b"+OK\r\n");
            assert_eq!(decoder.next_value(), Err(error), "{input:?}");
        }
    }

    #[test]
    fn limits_are_errors_not_allocations() {
        let limits = Limits {
            max_bulk: 10,
            max_elements: 3,
            max_depth: 2,
            max_value: 50,
            max_line: 20,
        };
        for (input, error) in [
            (&b"$11\r\n"[..], RespError::BulkTooLong { len: 11, max: 10 }),
            (b"$99999999999999999999\r\n", RespError::BadNumber),
            (b"*4\r\n", RespError::TooManyElements { len: 4, max: 3 }),
            (
                b"*9223372036854775807\r\n",
                RespError::TooManyElements {
                    len: i64::MAX as u64,
                    max: 3,
                },
            ),
            (b"*1\r\n*1\r\n*1\r\n", RespError::TooDeep(2)),
            (b"+0123456789abcdefghijklm", RespError::LineTooLong(20)),
            (
                b"*3\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n",
                RespError::ValueTooLarge(50),
            ),
        ] {
            let mut decoder = Decoder::new(limits);
            decoder.feed(input);
            assert_eq!(decoder.next_value(), Err(error), "{input:?}");
            assert_eq!(decoder.buffered(), 0, "buffer released");
        }
        // Within the limits, the same shapes decode.
        let mut decoder = Decoder::new(limits);
        decoder.feed(b"*2\r\n*1\r\n$10\r\n0123456789\r\n+0123456789abcdef\r\n");
        assert!(matches!(
            decoder.next_value(),
            Ok(Some(Value::Array(Some(_))))
        ));
    }

    #[test]
    fn a_huge_announced_bulk_is_refused_before_it_arrives() {
        let mut decoder = Decoder::default();
        decoder.feed(b"$536870912\r\n");
        assert_eq!(
            decoder.next_value(),
            Err(RespError::BulkTooLong {
                len: 536_870_912,
                max: 64 << 20
            })
        );
    }

    #[test]
    fn a_long_bulk_in_many_reads_is_complete_once() {
        let payload = vec![b'x'; 100_000];
        let mut input = Vec::new();
        encode(&Value::bulk(&payload), &mut input);
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for chunk in input.chunks(1000) {
            decoder.feed(chunk);
            got.extend(decode_all(&mut decoder).unwrap());
        }
        assert_eq!(got, vec![Value::bulk(&payload)]);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_values(
            values in proptest::collection::vec(value(), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut input = Vec::new();
            for v in &values {
                encode(v, &mut input);
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut decoder = Decoder::default();
            let mut got = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([input.len()]) {
                decoder.feed(&input[from..cut]);
                from = cut;
                got.extend(decode_all(&mut decoder).unwrap());
            }
            prop_assert_eq!(got, values);
            prop_assert_eq!(decoder.buffered(), 0);
        }

        /// Fuzz-style: valid streams with bytes overwritten and cut short
        /// reach deeper into the decoder than random bytes do. It never
        /// panics, and the values wholly before the first damaged byte
        /// still decode as they were.
        #[test]
        fn mutated_valid_input_never_panics(
            values in proptest::collection::vec(value(), 1..6),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            chunk in 1usize..32,
        ) {
            let mut input = Vec::new();
            let mut ends = Vec::new();
            for v in &values {
                encode(v, &mut input);
                ends.push(input.len());
            }
            let mut first_damage = cut.index(input.len() + 1);
            for (at, byte) in edits {
                let at = at.index(input.len());
                first_damage = first_damage.min(at);
                input[at] = byte;
            }
            input.truncate(cut.index(input.len() + 1));
            let mut decoder = Decoder::default();
            let mut decoded = Vec::new();
            for piece in input.chunks(chunk) {
                decoder.feed(piece);
                while let Ok(Some(v)) = decoder.next_value() {
                    decoded.push(v);
                }
            }
            let intact = ends.iter().filter(|&&end| end <= first_damage).count();
            prop_assert!(decoded.len() >= intact);
            prop_assert_eq!(&decoded[..intact], &values[..intact]);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            input in proptest::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..64,
        ) {
            let limits = Limits { max_bulk: 100, max_elements: 10, max_depth: 3, max_value: 256, max_line: 32 };
            let mut decoder = Decoder::new(limits);
            for piece in input.chunks(chunk) {
                decoder.feed(piece);
                while let Ok(Some(_)) = decoder.next_value() {}
                // What stays buffered is one incomplete value (plus the
                // last read), never more than the limit allows.
                prop_assert!(decoder.buffered() <= limits.max_value + chunk);
            }
        }
    }
}
