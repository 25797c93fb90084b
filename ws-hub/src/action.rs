//! Outputs of the hub: what the adapter must do.

use bytes::Bytes;

use crate::BusMessage;
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
        /// Close reason (short ASCII, well under the 123-byte limit).
        reason: &'static str,
    },
    /// Publish this message on the cluster bus (only with
    /// [`HubConfig::cluster`](crate::HubConfig::cluster) enabled).
    PublishBus(BusMessage),
    /// Start receiving bus messages for this room: the node now has a
    /// member in it.
    SubscribeBus(RoomName),
    /// Stop receiving bus messages for this room: its last member left.
    UnsubscribeBus(RoomName),
}
