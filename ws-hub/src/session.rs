//! Sessions: per-session sequence numbers, the bounded replay buffer used
//! for resume, and the unacknowledged set used for delivery acks.
//!
//! A session outlives its connection: when the connection drops the session
//! is *detached* and kept for the retention time, still a member of its
//! rooms, so every message it misses is numbered and buffered. The buffer
//! is a ring bounded by count and bytes that is also filled while the
//! session is attached, because messages in flight when a socket dies are
//! missed too. A resume presenting `last_seq` is served from the ring if it
//! still holds everything after `last_seq`; otherwise it is an overflow.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::action::Payload;
use crate::id::{ConnId, RoomName, UserId};
use crate::protocol::{message_head, message_head_len};

/// A session id as given to clients in `welcome` (opaque, 43 characters
/// of base64url). Unforgeable without the hub's [`SessionSecret`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret that makes session ids unforgeable: the HMAC key of every id
/// a [`Hub`](crate::Hub) mints, and a required input of
/// [`Hub::new`](crate::Hub::new). Draw it from the operating system's
/// random source; all zeroes is refused. Nodes of a cluster that share the
/// secret recognise each other's ids (as `expired`, not `unknown`).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSecret([u8; 32]);

impl SessionSecret {
    /// Wraps 32 secret bytes.
    pub const fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

/// Internal handle of a session (a counter, unique per hub instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionKey(pub(crate) u64);

/// Mints and checks session ids: `base64url(seed || counter || tag)` with
/// `tag` the first 16 bytes of HMAC-SHA256(key, seed || counter). The seed
/// distinguishes runs of the hub, so an id from an earlier run is reported
/// as `expired`, never confused with a new session.
pub(crate) struct SessionMinter {
    key: SessionSecret,
    seed: u64,
}

impl fmt::Debug for SessionMinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMinter").finish_non_exhaustive()
    }
}

/// What a presented session id turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParsedSession {
    /// Issued by this run of the hub.
    Ours(SessionKey),
    /// Issued under the same key by an earlier run (or another node).
    Foreign,
    /// Not a session id we could have issued.
    Invalid,
}

const ID_RAW_LEN: usize = 32;
const ID_TEXT_LEN: usize = 43;

impl SessionMinter {
    pub(crate) fn new(key: SessionSecret, seed: u64) -> Self {
        Self { key, seed }
    }

    fn tag(&self, seed: u64, counter: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key.0) {
            mac.update(&seed.to_be_bytes());
            mac.update(&counter.to_be_bytes());
            let full = mac.finalize().into_bytes();
            for (o, b) in out.iter_mut().zip(full.iter()) {
                *o = *b;
            }
        }
        out
    }

    pub(crate) fn mint(&self, key: SessionKey) -> SessionId {
        let mut raw = [0u8; ID_RAW_LEN];
        raw[..8].copy_from_slice(&self.seed.to_be_bytes());
        raw[8..16].copy_from_slice(&key.0.to_be_bytes());
        raw[16..].copy_from_slice(&self.tag(self.seed, key.0));
        SessionId(Arc::from(URL_SAFE_NO_PAD.encode(raw)))
    }

    pub(crate) fn parse(&self, text: &str) -> ParsedSession {
        if text.len() != ID_TEXT_LEN {
            return ParsedSession::Invalid;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(text) else {
            return ParsedSession::Invalid;
        };
        let Ok(raw) = <[u8; ID_RAW_LEN]>::try_from(raw.as_slice()) else {
            return ParsedSession::Invalid;
        };
        let (seed, rest) = raw.split_at(8);
        let (counter, tag) = rest.split_at(8);
        let (Ok(seed), Ok(counter)) = (<[u8; 8]>::try_from(seed), <[u8; 8]>::try_from(counter))
        else {
            return ParsedSession::Invalid;
        };
        let (seed, counter) = (u64::from_be_bytes(seed), u64::from_be_bytes(counter));
        // Constant-time comparison of the tag.
        let expect = self.tag(seed, counter);
        let diff = expect
            .iter()
            .zip(tag.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            ParsedSession::Invalid
        } else if seed == self.seed {
            ParsedSession::Ours(SessionKey(counter))
        } else {
            ParsedSession::Foreign
        }
    }
}

/// Ring of the most recent messages of a session, bounded by count and
/// bytes (a message's full length counts, although bodies are shared).
/// The bounds are the hub's, passed to [`push`](Self::push). A session
/// that has been sent nothing holds no storage, and an idle session only
/// a pointer: the ring is boxed on the first push. Only the shared body is
/// kept: a message's head is made from its sequence number again on
/// replay, so buffering a delivery costs no allocation and keeps no
/// per-receiver buffer alive.
#[derive(Debug, Default)]
pub(crate) struct ReplayBuffer(Option<Box<Ring>>);

#[derive(Debug, Default)]
struct Ring {
    items: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Highest sequence number evicted (0: none yet).
    lost_upto: u64,
}

/// The bounds of every session's [`ReplayBuffer`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayLimits {
    pub(crate) max_messages: usize,
    pub(crate) max_bytes: usize,
}

impl ReplayBuffer {
    /// Buffers message `seq` with this `body`, evicting the oldest ones
    /// past the bounds.
    pub(crate) fn push(&mut self, seq: u64, body: Bytes, limits: ReplayLimits) {
        let ring = self.0.get_or_insert_with(Box::default);
        ring.bytes += message_head_len(seq) + body.len();
        ring.items.push_back((seq, body));
        while ring.items.len() > limits.max_messages || ring.bytes > limits.max_bytes {
            let Some((s, b)) = ring.items.pop_front() else {
                break;
            };
            ring.bytes -= message_head_len(s) + b.len();
            ring.lost_upto = s;
        }
    }

    /// Every buffered message after `last_seq`, in order, as it was
    /// delivered, or `None` if some of them were evicted.
    pub(crate) fn after(&self, last_seq: u64) -> Option<impl Iterator<Item = (u64, Payload)>> {
        let ring = self.0.as_deref();
        if ring.is_some_and(|r| last_seq < r.lost_upto) {
            return None;
        }
        Some(
            ring.into_iter()
                .flat_map(|r| r.items.iter())
                .filter(move |(s, _)| *s > last_seq)
                .map(|(s, body)| (*s, room_message(*s, body))),
        )
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |r| r.items.len())
    }

    pub(crate) fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |r| r.bytes)
    }
}

/// The sessions of one user: almost always exactly one, held inline so
/// that the user index costs no allocation per connection.
#[derive(Debug)]
pub(crate) enum SessionSet {
    /// A single session.
    One(SessionKey),
    /// Several sessions (or none, transiently, before the entry goes);
    /// boxed, so that the common case keeps the index's entries small.
    #[allow(clippy::box_collection)]
    Many(Box<BTreeSet<SessionKey>>),
}

impl SessionSet {
    /// Adds `key`.
    pub(crate) fn insert(&mut self, key: SessionKey) {
        match self {
            Self::One(k) if *k == key => {}
            Self::One(k) => *self = Self::Many(Box::new(BTreeSet::from([*k, key]))),
            Self::Many(set) => {
                set.insert(key);
            }
        }
    }

    /// Removes `key`; `true` if the set is now empty.
    pub(crate) fn remove(&mut self, key: SessionKey) -> bool {
        match self {
            Self::One(k) => *k == key,
            Self::Many(set) => {
                set.remove(&key);
                if set.len() == 1
                    && let Some(&last) = set.first()
                {
                    *self = Self::One(last);
                    return false;
                }
                set.is_empty()
            }
        }
    }

    /// Whether `key` is in the set.
    pub(crate) fn contains(&self, key: &SessionKey) -> bool {
        match self {
            Self::One(k) => k == key,
            Self::Many(set) => set.contains(key),
        }
    }

    /// The sessions, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &SessionKey> {
        let (one, many) = match self {
            Self::One(k) => (Some(k), None),
            Self::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Number of sessions.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(set) => set.len(),
        }
    }
}

/// A delivered message awaiting the client's delivery ack.
#[derive(Debug)]
pub(crate) struct Unacked {
    pub(crate) payload: Payload,
    pub(crate) attempts: u32,
    pub(crate) due: Instant,
}

/// One client session. Its id's text is not stored: the hub mints it
/// again from the key when it is needed (`welcome`, `resumed`), which
/// saves every session an allocation.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) user: UserId,
    pub(crate) anonymous: bool,
    /// The attached connection; `None` while detached.
    pub(crate) conn: Option<ConnId>,
    pub(crate) rooms: BTreeSet<RoomName>,
    next_seq: u64,
    pub(crate) replay: ReplayBuffer,
    pub(crate) delivery_acks: bool,
    pub(crate) unacked: BTreeMap<u64, Unacked>,
}

impl Session {
    pub(crate) fn new(user: UserId, anonymous: bool, replay: ReplayBuffer) -> Self {
        Self {
            user,
            anonymous,
            conn: None,
            rooms: BTreeSet::new(),
            next_seq: 1,
            replay,
            delivery_acks: false,
            unacked: BTreeMap::new(),
        }
    }

    /// The last sequence number issued (0: none yet).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Starts tracking a delivered message for delivery acks; `false` if
    /// the session already has `max` unacknowledged messages.
    pub(crate) fn track(&mut self, seq: u64, payload: &Payload, due: Instant, max: usize) -> bool {
        if self.unacked.len() >= max {
            return false;
        }
        self.unacked.insert(
            seq,
            Unacked {
                payload: payload.clone(),
                attempts: 0,
                due,
            },
        );
        true
    }

    /// Numbers a message for this session and buffers it for replay;
    /// returns the per-receiver payload (its body shares `body`).
    pub(crate) fn stamp(&mut self, body: &Bytes, limits: ReplayLimits) -> (u64, Payload) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.replay.push(seq, body.clone(), limits);
        (seq, room_message(seq, body))
    }
}

/// Message `seq` of a session: its own head, then the shared `body`.
fn room_message(seq: u64, body: &Bytes) -> Payload {
    Payload {
        head: message_head(seq),
        body: body.clone(),
        essential: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_verify() {
        let m = SessionMinter::new(SessionSecret::new([7; 32]), 42);
        let id = m.mint(SessionKey(5));
        assert_eq!(id.as_str().len(), ID_TEXT_LEN);
        assert_eq!(m.parse(id.as_str()), ParsedSession::Ours(SessionKey(5)));
        let earlier_run = SessionMinter::new(SessionSecret::new([7; 32]), 41).mint(SessionKey(5));
        assert_eq!(m.parse(earlier_run.as_str()), ParsedSession::Foreign);
        let other_key = SessionMinter::new(SessionSecret::new([8; 32]), 42).mint(SessionKey(5));
        assert_eq!(m.parse(other_key.as_str()), ParsedSession::Invalid);
        assert_eq!(m.parse("short"), ParsedSession::Invalid);
        assert_eq!(m.parse(&"!".repeat(43)), ParsedSession::Invalid);
        let mut tampered = id.as_str().to_owned();
        tampered.replace_range(20..21, if &tampered[20..21] == "A" { "B" } else { "A" });
        assert_eq!(m.parse(&tampered), ParsedSession::Invalid);
    }

    #[test]
    fn replayed_messages_are_made_again_from_their_sequence_number() {
        let mut r = ReplayBuffer::default();
        let limits = ReplayLimits {
            max_messages: 10,
            max_bytes: 10_000,
        };
        let bodies = [9, 10, 11].map(|seq| (seq, Bytes::from(format!("\"n\":{seq}}}"))));
        for (seq, body) in &bodies {
            r.push(*seq, body.clone(), limits);
        }
        let replayed: Vec<(u64, Payload)> = r.after(8).unwrap().collect();
        assert_eq!(replayed.len(), 3);
        for ((seq, p), (want_seq, body)) in replayed.iter().zip(&bodies) {
            assert_eq!(seq, want_seq);
            let text = [&p.head[..], &p.body[..]].concat();
            let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
            assert_eq!(v["type"], "message");
            assert_eq!(v["seq"], *seq);
            assert_eq!(v["n"], *seq);
            assert_eq!(p.body.as_ptr(), body.as_ptr(), "the body is shared");
            assert!(!p.essential);
        }
        for seq in [0, 9, 10, 99, 100, u64::MAX] {
            assert_eq!(message_head(seq).len(), message_head_len(seq));
        }
    }

    #[test]
    fn replay_ring_bounds_and_gaps() {
        let mut r = ReplayBuffer::default();
        let limits = ReplayLimits {
            max_messages: 3,
            max_bytes: 1000,
        };
        let body = |n: usize| Bytes::from(vec![b' '; n]);
        for s in 1..=5 {
            r.push(s, body(10), limits);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.after(2).map(Iterator::count), Some(3));
        assert_eq!(r.after(4).map(Iterator::count), Some(1));
        assert_eq!(r.after(5).map(Iterator::count), Some(0));
        assert!(r.after(1).is_none());
        // A message's full length counts: its head too.
        let one = message_head_len(1) + 10;
        let mut r = ReplayBuffer::default();
        let limits = ReplayLimits {
            max_messages: 100,
            max_bytes: 2 * one + 5,
        };
        r.push(1, body(10), limits);
        r.push(2, body(10), limits);
        r.push(3, body(10), limits);
        assert_eq!(r.bytes(), 2 * one);
        assert!(r.after(0).is_none());
        assert_eq!(r.after(1).map(Iterator::count), Some(2));
        assert_eq!(r.after(1).map(Iterator::count), Some(2));
    }
}
