//! [proptest](https://docs.rs/proptest) strategies for WebSocket traffic (cargo feature `proptest`).
//!
//! The generators this crate's own property tests use, for anyone who
//! property-tests a frame codec or a WebSocket stack:
//!
//! - messages: [`message`], [`payload_len`] (lengths around the three
//!   header length forms), and [`outgoing`] (a message, ping or pong as an
//!   endpoint sends it, with the event its peer must report);
//! - fragmentations: [`fragment_size`] for [`Config::fragment_size`], and
//!   [`fragmented`] / [`fragmented_message`], which split one message into
//!   valid frames at arbitrary points (empty fragments included);
//! - chunkings: [`chunking`], arbitrary read sizes to cut a byte stream into;
//! - frames: [`arbitrary_frame`] (any header bits, reserved opcodes, bad
//!   lengths, masked or not) and [`arbitrary_frames`];
//! - frame streams: [`frame_stream`], a valid stream of fragmented messages
//!   with control frames between any two frames, masked as its sender
//!   role requires, plus the events a receiver must report.
//!
//! Nothing here reads a clock or the OS: every value, masking keys
//! included, comes from the proptest runner, so failures shrink and replay.
//!
//! # Example: testing a codec
//!
//! A stream of frames, encoded and cut into arbitrary reads, must decode to
//! the same frames. Here the codec under test is a small decoder built on
//! [`FrameHeader::decode`]; the same pattern tests any decoder.
//!
//! ```
//! use proptest::prelude::*;
//! use proptest::test_runner::{Config, TestRunner};
//! use ws_proto::Role;
//! use ws_proto::frame::{FrameHeader, apply_mask};
//! use ws_proto::strategies::{Frame, chunking, frame_stream};
//!
//! /// The codec under test: decodes every complete frame at the front of
//! /// `buf` and removes it.
//! fn decode(buf: &mut Vec<u8>, out: &mut Vec<Frame>) {
//!     while let Ok(Some((header, n))) = FrameHeader::decode(buf) {
//!         let len = header.payload_len as usize;
//!         if buf.len() < n + len {
//!             return;
//!         }
//!         let mut payload = buf[n..n + len].to_vec();
//!         if let Some(key) = header.mask {
//!             apply_mask(&mut payload, key, 0);
//!         }
//!         buf.drain(..n + len);
//!         out.push(Frame {
//!             fin: header.fin,
//!             rsv: header.rsv,
//!             opcode: header.opcode,
//!             mask: header.mask,
//!             payload: payload.into(),
//!         });
//!     }
//! }
//!
//! let mut runner = TestRunner::new(Config::with_cases(32));
//! let input = (frame_stream(Role::Client), chunking(300));
//! runner
//!     .run(&input, |(stream, chunks)| {
//!         let (mut buf, mut decoded) = (Vec::new(), Vec::new());
//!         for read in chunks.split(&stream.encode()) {
//!             buf.extend_from_slice(read);
//!             decode(&mut buf, &mut decoded);
//!         }
//!         prop_assert!(buf.is_empty());
//!         prop_assert_eq!(decoded, stream.frames);
//!         Ok(())
//!     })
//!     .unwrap();
//! ```
//!
//! The crate's `tests/proptest.rs` drives whole [`Connection`]s the same
//! way: [`FrameStream::events`] is what a connection must report for the
//! stream, under any [`Chunking`].

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

#[cfg(doc)]
use crate::config::Config;
use crate::connection::{Connection, Role};
use crate::error::SendError;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, OpCode, apply_mask};
use crate::message::{Event, Message};

/// Payload lengths that cover the three header length forms and their
/// edges: 0 to 129 (7-bit, with 125 and 126 on the boundary), exactly 126,
/// and 60,000 to 70,000 (across the 16-bit/64-bit boundary at 65,536).
pub fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..130, Just(126usize), 60_000usize..70_000]
}

/// A text message (any Unicode, up to 200 characters) or a binary one
/// (length from [`payload_len`]).
pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        4 => ".{0,200}".prop_map(Message::text),
        3 => payload_len()
            .prop_flat_map(|n| vec(any::<u8>(), n))
            .prop_map(Message::binary),
    ]
}

/// A control payload: at most 125 bytes.
fn control_payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=MAX_CONTROL_PAYLOAD).prop_map(Bytes::from)
}

/// One thing an endpoint sends, with the event its peer reports for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A data message.
    Message(Message),
    /// A ping (payload at most 125 bytes).
    Ping(Bytes),
    /// An unsolicited pong (payload at most 125 bytes).
    Pong(Bytes),
}

impl Outgoing {
    /// Queues it on `conn` ([`Connection::send`], [`Connection::ping`] or
    /// [`Connection::pong`]).
    pub fn send(&self, conn: &mut Connection) -> Result<(), SendError> {
        match self {
            Self::Message(m) => conn.send(m.clone()),
            Self::Ping(p) => conn.ping(p.clone()),
            Self::Pong(p) => conn.pong(p.clone()),
        }
    }

    /// The event the peer's [`Connection::poll_event`] reports for it.
    pub fn event(&self) -> Event {
        match self {
            Self::Message(m) => Event::Message(m.clone()),
            Self::Ping(p) => Event::Ping(p.clone()),
            Self::Pong(p) => Event::Pong(p.clone()),
        }
    }
}

/// A message (most of the time), ping or pong.
pub fn outgoing() -> impl Strategy<Value = Outgoing> {
    prop_oneof![
        7 => message().prop_map(Outgoing::Message),
        1 => control_payload().prop_map(Outgoing::Ping),
        1 => control_payload().prop_map(Outgoing::Pong),
    ]
}

/// A value for [`Config::fragment_size`]: `None` (one frame per message)
/// or a fragment size from 1 to 299 bytes.
pub fn fragment_size() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![Just(None), (1usize..300).prop_map(Some)]
}

/// Read sizes to cut a byte stream into, cycled: what one `read` returns
/// each time. Any chunking of the same bytes must give the same events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunking {
    sizes: Vec<usize>,
}

impl Chunking {
    /// Read sizes used in turn, cycled (zeros count as one).
    pub fn new(sizes: Vec<usize>) -> Self {
        Self { sizes }
    }

    /// Every byte at once, in one read.
    pub fn whole() -> Self {
        Self::new(vec![usize::MAX])
    }

    /// The read sizes, used in turn and cycled.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// Cuts `data` into consecutive pieces of the chunking's sizes; the
    /// pieces concatenate to `data`.
    pub fn split<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut sizes = self.sizes.clone().into_iter().cycle();
        let mut rest = data;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let n = sizes.next().unwrap_or(usize::MAX).clamp(1, rest.len());
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            Some(piece)
        })
    }
}

/// A chunking: 1 to 7 read sizes from 1 to `max` bytes (`max` of 1 or
/// less means one byte at a time).
pub fn chunking(max: usize) -> impl Strategy<Value = Chunking> {
    vec(1usize..=max.max(1), 1..8).prop_map(Chunking::new)
}

/// One frame as it is on the wire, with its payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN: the last frame of a message.
    pub fin: bool,
    /// RSV1-3 as the low three bits.
    pub rsv: u8,
    /// The 4-bit opcode, reserved values included.
    pub opcode: u8,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload, unmasked.
    pub payload: Bytes,
}

impl Frame {
    /// Its header.
    pub fn header(&self) -> FrameHeader {
        FrameHeader {
            fin: self.fin,
            rsv: self.rsv,
            opcode: self.opcode,
            mask: self.mask,
            payload_len: self.payload.len() as u64,
        }
    }

    /// Appends the encoded frame (header, then the payload masked with
    /// `mask` if set) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.header().encode(out);
        let start = out.len();
        out.extend_from_slice(&self.payload);
        if let Some(key) = self.mask {
            apply_mask(&mut out[start..], key, 0);
        }
    }
}

/// Encodes frames back to back.
pub fn encode_frames(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        frame.encode(&mut out);
    }
    out
}

/// The mask key a sender in `role` puts on its frames: clients always
/// mask, servers never do.
fn mask_for(role: Role) -> BoxedStrategy<Option<[u8; 4]>> {
    match role {
        Role::Client => any::<[u8; 4]>().prop_map(Some).boxed(),
        Role::Server => Just(None).boxed(),
    }
}

/// `message` split into 1 to 5 valid frames at arbitrary points (empty
/// fragments and cuts inside a UTF-8 character included), masked as a
/// sender in `sender` role masks.
pub fn fragmented(message: Message, sender: Role) -> impl Strategy<Value = Vec<Frame>> {
    (vec(any::<Index>(), 0..5), vec(mask_for(sender), 5)).prop_map(move |(cuts, masks)| {
        let (opcode, payload) = match &message {
            Message::Text(t) => (OpCode::Text, t.as_bytes().clone()),
            Message::Binary(b) => (OpCode::Binary, b.clone()),
        };
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
        points.sort_unstable();
        points.push(payload.len());
        let mut start = 0;
        let last = points.len() - 1;
        points
            .into_iter()
            .zip(masks)
            .enumerate()
            .map(|(i, (end, mask))| {
                let frame = Frame {
                    fin: i == last,
                    rsv: 0,
                    opcode: if i == 0 { opcode } else { OpCode::Continuation }.to_wire(),
                    mask,
                    payload: payload.slice(start..end),
                };
                start = end;
                frame
            })
            .collect()
    })
}

/// A [`message`] with its [`fragmented`] frames.
pub fn fragmented_message(sender: Role) -> impl Strategy<Value = (Message, Vec<Frame>)> {
    message().prop_flat_map(move |m| (Just(m.clone()), fragmented(m, sender)))
}

/// Any frame: all header bits (reserved opcodes and RSV bits included),
/// masked or not, payloads of 0 to 299 bytes (so control frames can be too
/// long). Most such frames are protocol violations.
pub fn arbitrary_frame() -> impl Strategy<Value = Frame> {
    (
        any::<bool>(),
        0u8..8,
        0u8..16,
        any::<Option<[u8; 4]>>(),
        vec(any::<u8>(), 0..300),
    )
        .prop_map(|(fin, rsv, opcode, mask, payload)| Frame {
            fin,
            rsv,
            opcode,
            mask,
            payload: payload.into(),
        })
}

/// A stream of up to `max` frames, each valid or [`arbitrary_frame`]: mostly
/// well-formed traffic with violations anywhere in it.
pub fn arbitrary_frames(max: usize) -> impl Strategy<Value = Vec<Frame>> {
    let valid = fragmented_message(Role::Client).prop_map(|(_, frames)| frames);
    let one = prop_oneof![valid, arbitrary_frame().prop_map(|f| vec![f])];
    vec(one, 0..=max.max(1)).prop_map(|groups| groups.into_iter().flatten().collect())
}

/// A valid frame stream and what a receiving connection reports for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameStream {
    /// The frames in wire order.
    pub frames: Vec<Frame>,
    /// The events a [`Connection`] receiving `frames` (open, `auto_pong`
    /// on or off) reports, in order: a message when its last fragment
    /// arrives, a ping or pong when its frame does.
    pub events: Vec<Event>,
}

impl FrameStream {
    /// The frames, encoded back to back.
    pub fn encode(&self) -> Vec<u8> {
        encode_frames(&self.frames)
    }
}

/// Up to 6 fragmented messages with up to 6 pings and pongs inserted
/// anywhere (inside fragmented messages too, as RFC 6455 allows), masked
/// as a sender in `sender` role masks.
pub fn frame_stream(sender: Role) -> impl Strategy<Value = FrameStream> {
    let control = (
        prop_oneof![Just(OpCode::Ping), Just(OpCode::Pong)],
        control_payload(),
        mask_for(sender),
        any::<Index>(),
    );
    (vec(fragmented_message(sender), 0..6), vec(control, 0..6)).prop_map(|(messages, controls)| {
        let mut frames: Vec<Frame> = messages.into_iter().flat_map(|(_, f)| f).collect();
        for (opcode, payload, mask, at) in controls {
            let frame = Frame {
                fin: true,
                rsv: 0,
                opcode: opcode.to_wire(),
                mask,
                payload,
            };
            frames.insert(at.index(frames.len() + 1), frame);
        }
        let events = expected_events(&frames);
        FrameStream { frames, events }
    })
}

/// What a receiver reports for a valid stream of data and ping/pong frames.
fn expected_events(frames: &[Frame]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut message: Option<(OpCode, Vec<u8>)> = None;
    for frame in frames {
        match OpCode::from_wire(frame.opcode) {
            Some(OpCode::Ping) => events.push(Event::Ping(frame.payload.clone())),
            Some(OpCode::Pong) => events.push(Event::Pong(frame.payload.clone())),
            Some(op @ (OpCode::Text | OpCode::Binary | OpCode::Continuation)) => {
                let (kind, data) = message.get_or_insert_with(|| (op, Vec::new()));
                data.extend_from_slice(&frame.payload);
                if frame.fin {
                    let data = Bytes::from(std::mem::take(data));
                    events.push(Event::Message(match kind {
                        OpCode::Text => {
                            Message::text(String::from_utf8(data.to_vec()).unwrap_or_default())
                        }
                        _ => Message::binary(data),
                    }));
                    message = None;
                }
            }
            Some(OpCode::Close) | None => {}
        }
    }
    events
}
