//! Messages exchanged between hub nodes over a broker (e.g. Redis pub/sub).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::BusDecodeError;
use crate::id::{RoomName, UserId};

/// Where a published message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum BusTarget {
    /// Every member of a room.
    Room(RoomName),
    /// Every session of a user.
    User(UserId),
    /// Every session on every node.
    Broadcast,
}

/// A message published by one node for delivery on the others.
///
/// Serialise it with [`BusMessage::to_json`] and put it on
/// [`BusMessage::channel`]; feed what comes back in with
/// [`Command::Bus`](crate::Command::Bus). A node ignores messages whose
/// `origin` is its own `node_id` (echoes from the broker), and de-duplicates
/// on `(from, id)` exactly as for local publishes, so a message retried on
/// another node is delivered once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusMessage {
    /// `node_id` of the publishing node.
    pub origin: String,
    /// Destination.
    pub target: BusTarget,
    /// The publishing user.
    pub from: UserId,
    /// The client-chosen message id.
    pub id: String,
    /// The message data, verbatim JSON.
    pub data: Box<RawValue>,
}

impl PartialEq for BusMessage {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin
            && self.target == other.target
            && self.from == other.from
            && self.id == other.id
            && self.data.get() == other.data.get()
    }
}

/// Prefix of per-room bus channels.
pub const ROOM_CHANNEL_PREFIX: &str = "ws-hub:room:";
/// The channel for user and broadcast messages; every node subscribes to it
/// at start-up.
pub const GLOBAL_CHANNEL: &str = "ws-hub:global";

impl BusMessage {
    /// The broker channel for this message: [`BusMessage::room_channel`] for
    /// room messages, [`GLOBAL_CHANNEL`] otherwise.
    pub fn channel(&self) -> String {
        match &self.target {
            BusTarget::Room(room) => Self::room_channel(room),
            BusTarget::User(_) | BusTarget::Broadcast => GLOBAL_CHANNEL.to_owned(),
        }
    }

    /// The broker channel of a room (what
    /// [`Action::SubscribeBus`](crate::Action::SubscribeBus) asks for).
    pub fn room_channel(room: &RoomName) -> String {
        format!("{ROOM_CHANNEL_PREFIX}{room}")
    }

    /// JSON encoding.
    pub fn to_json(&self) -> Vec<u8> {
        // Only strings and a RawValue: serialisation cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes [`BusMessage::to_json`] output.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BusDecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let m = BusMessage {
            origin: "n1".into(),
            target: BusTarget::Room(RoomName::new("lobby")),
            from: UserId::new("alice"),
            id: "m1".into(),
            data: RawValue::from_string(r#"{"t":"hi"}"#.into()).unwrap_or_default(),
        };
        let back = BusMessage::from_json(&m.to_json()).ok();
        assert_eq!(back.as_ref(), Some(&m));
        assert_eq!(m.channel(), "ws-hub:room:lobby");
        assert!(BusMessage::from_json(b"{").is_err());
    }
}
