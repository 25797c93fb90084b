//! Outputs of the hub: what the adapter must do.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use crate::BusMessage;
use crate::error::CloseReasonError;
use crate::hub::PresenceQuery;
use crate::id::{ConnId, RoomName};

/// The bytes of one outbound WebSocket **text** message, in two parts.
///
/// The message on the wire is `head` followed by `body`, written as a
/// single text message (one frame, or a vectored write of the two slices).
///
/// For a room message, `body` is encoded once per publish and shared by every
/// receiver (the same allocation, refcounted); `head` is the small
/// per-receiver part that carries the receiver's own sequence number, e.g.
/// `{"type":"message","seq":17,` + `"room":"r","id":"x","from":"u","data":1}`.
/// For control messages (acks, errors, ...) `head` is empty and `body` is
/// the whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Per-receiver prefix (may be empty).
    pub head: Bytes,
    /// Shared remainder.
    pub body: Bytes,
    /// `true` for messages that an [`OutboundQueue`](crate::OutboundQueue)
    /// must never drop (acks, nacks, errors, welcome, resume results,
    /// drop notices); `false` for room/user/broadcast messages.
    pub essential: bool,
}

impl Payload {
    /// A control message: empty head, the whole JSON in `body`, essential.
    pub fn control(body: Bytes) -> Self {
        Self {
            head: Bytes::new(),
            body,
            essential: true,
        }
    }

    /// Total length in bytes (`head` + `body`).
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Whether both parts are empty.
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.body.is_empty()
    }

    /// The two parts, in wire order, for a vectored write.
    pub fn chunks(&self) -> [&[u8]; 2] {
        [&self.head, &self.body]
    }

    /// Copies the message into one contiguous buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&self.head);
        v.extend_from_slice(&self.body);
        v
    }
}

/// The reason text of a WebSocket close frame: valid UTF-8 of at most
/// [`CloseReason::MAX_LEN`] (123) bytes, the room RFC 6455 leaves in a
/// control frame (125 bytes) after the two-byte code.
///
/// ```
/// use ws_hub::CloseReason;
///
/// assert_eq!(CloseReason::new("maintenance".to_owned()).unwrap().as_str(), "maintenance");
/// assert!(CloseReason::new("é".repeat(62)).is_err()); // 124 bytes
/// // The hub's own fixed reasons are cut (at a character boundary) if needed.
/// assert_eq!(CloseReason::from("idle timeout").as_str(), "idle timeout");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloseReason(Cow<'static, str>);

impl CloseReason {
    /// Longest reason, in bytes.
    pub const MAX_LEN: usize = 123;

    /// `reason`, if it has at most [`MAX_LEN`](Self::MAX_LEN) bytes.
    pub fn new(reason: String) -> Result<Self, CloseReasonError> {
        if reason.len() > Self::MAX_LEN {
            return Err(CloseReasonError::TooLong { len: reason.len() });
        }
        Ok(Self(Cow::Owned(reason)))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for CloseReason {
    /// A fixed reason, cut to [`MAX_LEN`](Self::MAX_LEN) bytes at a
    /// character boundary if longer.
    fn from(reason: &'static str) -> Self {
        let mut end = reason.len().min(Self::MAX_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self(Cow::Borrowed(&reason[..end]))
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something the adapter must do, pulled with
/// [`Hub::poll_action`](crate::Hub::poll_action).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[must_use]
pub enum Action {
    /// Send `payload` to `conn` as one WebSocket text message (through the
    /// connection's [`OutboundQueue`](crate::OutboundQueue)).
    Deliver {
        /// The receiving connection.
        conn: ConnId,
        /// The message bytes.
        payload: Payload,
    },
    /// Send a WebSocket ping to `conn`; its pong should come back as
    /// [`Command::Activity`](crate::Command::Activity).
    Ping {
        /// The connection to ping.
        conn: ConnId,
    },
    /// Flush what is queued for `conn`, then close it with this code. The
    /// hub has already forgotten the connection: later commands for it are
    /// ignored, and a later [`Command::Disconnected`](crate::Command::Disconnected)
    /// is a harmless no-op.
    Close {
        /// The connection to close.
        conn: ConnId,
        /// WebSocket close code (see `docs/PROTOCOL.md`).
        code: u16,
        /// Close reason.
        reason: CloseReason,
    },
    /// Publish this message on the cluster bus (only with
    /// [`HubConfig::cluster`](crate::HubConfig::cluster) enabled).
    PublishBus(BusMessage),
    /// Start receiving bus messages for this room: the node now has a
    /// member in it.
    SubscribeBus(RoomName),
    /// Stop receiving bus messages for this room: its last member left.
    UnsubscribeBus(RoomName),
    /// Read the other nodes' parts of the presence table for this query
    /// (only with [`HubConfig::cluster`](crate::HubConfig::cluster)), then
    /// feed them back with
    /// [`Command::ClusterPresence`](crate::Command::ClusterPresence); the
    /// hub answers the client then. An adapter that cannot read them
    /// feeds back `None` (the client is nacked `unavailable`).
    QueryPresence(PresenceQuery),
}
