//! The hub's wire protocol: JSON text messages (see `docs/PROTOCOL.md`).
//!
//! Client messages are parsed borrowing from the received bytes (and
//! turned into an owned [`Request`](crate::Request) to cross to the hub's
//! task): the `data` of a publish is kept as raw JSON ([`RawValue`]) and
//! copied verbatim into the outgoing message, never re-serialised. Server messages
//! are encoded here; room messages are split into a per-receiver head and a
//! shared body (see [`Payload`]).

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::action::Payload;
use crate::bus::BusTarget;
use crate::id::UserId;

/// Why a request (join, leave, publish, send, broadcast) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NackReason {
    /// Publish or leave for a room the connection is not a member of.
    NotMember,
    /// The message exceeds `max_message_size`.
    TooLarge,
    /// The connection's token bucket is empty.
    RateLimited,
    /// Publish to a room that has no members on this node.
    UnknownRoom,
    /// Direct message to a user with no session (single-node mode only).
    UnknownUser,
    /// The authoriser refused.
    Forbidden,
    /// A required field is missing or invalid (empty or too long name/id).
    BadRequest,
    /// Join beyond `max_rooms_per_conn`.
    TooManyRooms,
    /// The de-dup table is full (`dedup_max_entries` ids inside their
    /// window); the message was not delivered. Retry later.
    Busy,
    /// A `refresh` token that is malformed, badly signed or expired.
    InvalidToken,
    /// The answer needs a shared service that could not be reached (the
    /// cluster presence table in Redis); nothing changed. Retry later.
    Unavailable,
}

impl NackReason {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotMember => "not_member",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::UnknownRoom => "unknown_room",
            Self::UnknownUser => "unknown_user",
            Self::Forbidden => "forbidden",
            Self::BadRequest => "bad_request",
            Self::TooManyRooms => "too_many_rooms",
            Self::Busy => "busy",
            Self::InvalidToken => "invalid_token",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Code of an `error` message: input the hub could not attribute to a
/// request it could nack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, not an object, or a field of the wrong type.
    Malformed,
    /// The `type` field names no known message.
    UnknownType,
    /// A binary WebSocket message (the protocol is text only).
    BinaryUnsupported,
    /// A message that is not a request (ack, configure, ping) exceeds
    /// `max_message_size`.
    TooLarge,
    /// A non-request message lacks a required field.
    BadRequest,
}

/// Why a resume failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResumeFailure {
    /// The session existed but is gone: its retention time is over, it was
    /// discarded (a clean close, a 1008 close, the detached-session bound),
    /// or it belonged to an earlier run of the hub under the same
    /// session secret. A new session was started.
    Expired,
    /// The session was kept, but messages after `last_seq` were evicted
    /// from its bounded buffer: the client missed some and must resync.
    /// Nothing is replayed; the session (rooms, sequence numbers)
    /// continues with live messages.
    Overflow,
    /// The session id is not one this hub can verify: mistyped or forged,
    /// issued by another node, or issued before a restart of a server that
    /// draws a new session secret per run (as the `serve` command does). A
    /// new session was started.
    Unknown,
    /// The session belongs to another user. A new session was started.
    Forbidden,
    /// `last_seq` is beyond anything the session was sent, or is not a
    /// decimal number. A new session was started.
    InvalidSeq,
}

/// The operation an ack or nack answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Op {
    Join,
    Leave,
    Publish,
    Send,
    Broadcast,
    Presence,
    PresenceStats,
    Refresh,
}

/// A parsed client message, borrowing from the received bytes (or owned,
/// see [`into_owned`](Self::into_owned)).
#[derive(Debug, Clone)]
pub(crate) enum ClientMessage<'a> {
    Join {
        room: Cow<'a, str>,
        id: Option<Cow<'a, str>>,
    },
    Leave {
        room: Cow<'a, str>,
        id: Option<Cow<'a, str>>,
    },
    Publish {
        room: Cow<'a, str>,
        id: Cow<'a, str>,
        data: Cow<'a, RawValue>,
    },
    Send {
        user: Cow<'a, str>,
        id: Cow<'a, str>,
        data: Cow<'a, RawValue>,
    },
    Broadcast {
        id: Cow<'a, str>,
        data: Cow<'a, RawValue>,
    },
    Ack {
        seq: u64,
    },
    Configure {
        delivery_acks: bool,
    },
    Ping {
        id: Option<Cow<'a, str>>,
    },
    Presence {
        room: Cow<'a, str>,
        id: Option<Cow<'a, str>>,
    },
    PresenceStats {
        room: Cow<'a, str>,
        id: Option<Cow<'a, str>>,
    },
    Refresh {
        token: Cow<'a, str>,
        id: Option<Cow<'a, str>>,
    },
}

impl ClientMessage<'_> {
    /// The same message, owning its strings and data.
    pub(crate) fn into_owned(self) -> ClientMessage<'static> {
        fn own(s: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(s.into_owned())
        }
        fn own_raw(d: Cow<'_, RawValue>) -> Cow<'static, RawValue> {
            Cow::Owned(d.into_owned())
        }
        match self {
            Self::Join { room, id } => ClientMessage::Join {
                room: own(room),
                id: id.map(own),
            },
            Self::Leave { room, id } => ClientMessage::Leave {
                room: own(room),
                id: id.map(own),
            },
            Self::Publish { room, id, data } => ClientMessage::Publish {
                room: own(room),
                id: own(id),
                data: own_raw(data),
            },
            Self::Send { user, id, data } => ClientMessage::Send {
                user: own(user),
                id: own(id),
                data: own_raw(data),
            },
            Self::Broadcast { id, data } => ClientMessage::Broadcast {
                id: own(id),
                data: own_raw(data),
            },
            Self::Ack { seq } => ClientMessage::Ack { seq },
            Self::Configure { delivery_acks } => ClientMessage::Configure { delivery_acks },
            Self::Ping { id } => ClientMessage::Ping { id: id.map(own) },
            Self::Presence { room, id } => ClientMessage::Presence {
                room: own(room),
                id: id.map(own),
            },
            Self::PresenceStats { room, id } => ClientMessage::PresenceStats {
                room: own(room),
                id: id.map(own),
            },
            Self::Refresh { token, id } => ClientMessage::Refresh {
                token: own(token),
                id: id.map(own),
            },
        }
    }

    /// The request kind, for requests that get an ack or nack.
    pub(crate) fn op(&self) -> Option<Op> {
        match self {
            Self::Join { .. } => Some(Op::Join),
            Self::Leave { .. } => Some(Op::Leave),
            Self::Publish { .. } => Some(Op::Publish),
            Self::Send { .. } => Some(Op::Send),
            Self::Broadcast { .. } => Some(Op::Broadcast),
            Self::Presence { .. } => Some(Op::Presence),
            Self::PresenceStats { .. } => Some(Op::PresenceStats),
            Self::Refresh { .. } => Some(Op::Refresh),
            Self::Ack { .. } | Self::Configure { .. } | Self::Ping { .. } => None,
        }
    }

    /// The room a join or leave names (echoed in its ack or nack).
    pub(crate) fn room(&self) -> Option<&str> {
        match self {
            Self::Join { room, .. }
            | Self::Leave { room, .. }
            | Self::Presence { room, .. }
            | Self::PresenceStats { room, .. } => Some(room),
            _ => None,
        }
    }

    /// The client-chosen id, if any.
    pub(crate) fn id(&self) -> Option<&str> {
        match self {
            Self::Publish { id, .. } | Self::Send { id, .. } | Self::Broadcast { id, .. } => {
                Some(id)
            }
            Self::Join { id, .. }
            | Self::Leave { id, .. }
            | Self::Presence { id, .. }
            | Self::PresenceStats { id, .. }
            | Self::Refresh { id, .. }
            | Self::Ping { id } => id.as_deref(),
            Self::Ack { .. } | Self::Configure { .. } => None,
        }
    }
}

/// A message that parsed as JSON but is not a valid request.
#[derive(Debug)]
pub(crate) struct BadMessage<'a> {
    /// Set when the message is a request we can nack.
    pub(crate) op: Option<Op>,
    pub(crate) id: Option<Cow<'a, str>>,
    pub(crate) code: ErrorCode,
    pub(crate) detail: &'static str,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present_raw")]
    data: Option<Cow<'a, RawValue>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    delivery_acks: Option<bool>,
    #[serde(default, borrow)]
    token: Option<Cow<'a, str>>,
}

/// `data: null` is valid data, not an absent field.
fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, RawValue>>, D::Error> {
    <&'de RawValue>::deserialize(d).map(|raw| Some(Cow::Borrowed(raw)))
}

/// Parses one client text message.
pub(crate) fn parse(bytes: &[u8]) -> Result<ClientMessage<'_>, BadMessage<'_>> {
    let raw: RawMessage<'_> = serde_json::from_slice(bytes).map_err(|_| BadMessage {
        op: None,
        id: None,
        code: ErrorCode::Malformed,
        detail: "not a JSON object with valid field types",
    })?;
    let op = match &*raw.kind {
        "join" => Some(Op::Join),
        "leave" => Some(Op::Leave),
        "publish" => Some(Op::Publish),
        "send" => Some(Op::Send),
        "broadcast" => Some(Op::Broadcast),
        "presence" => Some(Op::Presence),
        "presence_stats" => Some(Op::PresenceStats),
        "refresh" => Some(Op::Refresh),
        _ => None,
    };
    let RawMessage {
        kind,
        room,
        id,
        user,
        data,
        seq,
        delivery_acks,
        token,
    } = raw;
    fn missing<'a>(
        op: Option<Op>,
        field: &'static str,
        id: Option<Cow<'a, str>>,
    ) -> BadMessage<'a> {
        BadMessage {
            op,
            id,
            code: ErrorCode::BadRequest,
            detail: field,
        }
    }
    Ok(match &*kind {
        "join" => ClientMessage::Join {
            room: room.ok_or_else(|| missing(op, "missing field `room`", id.clone()))?,
            id,
        },
        "leave" => ClientMessage::Leave {
            room: room.ok_or_else(|| missing(op, "missing field `room`", id.clone()))?,
            id,
        },
        "publish" => match (room, id, data) {
            (Some(room), Some(id), Some(data)) => ClientMessage::Publish { room, id, data },
            (_, id, _) => return Err(missing(op, "publish needs `room`, `id` and `data`", id)),
        },
        "send" => match (user, id, data) {
            (Some(user), Some(id), Some(data)) => ClientMessage::Send { user, id, data },
            (_, id, _) => return Err(missing(op, "send needs `user`, `id` and `data`", id)),
        },
        "broadcast" => match (id, data) {
            (Some(id), Some(data)) => ClientMessage::Broadcast { id, data },
            (id, _) => return Err(missing(op, "broadcast needs `id` and `data`", id)),
        },
        "ack" => ClientMessage::Ack {
            seq: seq.ok_or_else(|| missing(op, "missing field `seq`", None))?,
        },
        "configure" => ClientMessage::Configure {
            delivery_acks: delivery_acks
                .ok_or_else(|| missing(op, "missing field `delivery_acks`", None))?,
        },
        "ping" => ClientMessage::Ping { id },
        "presence" => ClientMessage::Presence {
            room: room.ok_or_else(|| missing(op, "missing field `room`", id.clone()))?,
            id,
        },
        "refresh" => ClientMessage::Refresh {
            token: token.ok_or_else(|| missing(op, "missing field `token`", id.clone()))?,
            id,
        },
        "presence_stats" => ClientMessage::PresenceStats {
            room: room.ok_or_else(|| missing(op, "missing field `room`", id.clone()))?,
            id,
        },
        _ => {
            return Err(BadMessage {
                op: None,
                id: None,
                code: ErrorCode::UnknownType,
                detail: "unknown message type",
            });
        }
    })
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Server-to-client control messages (everything but `message` and
/// `dropped`, which are encoded by hand for speed).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMessage<'a> {
    Welcome {
        session: &'a str,
        user: &'a str,
        node: &'a str,
        ping_interval_ms: u64,
        retention_ms: u64,
        max_message_size: usize,
    },
    Ack {
        op: Op,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        #[serde(skip_serializing_if = "is_false")]
        duplicate: bool,
    },
    Nack {
        op: Op,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        reason: NackReason,
    },
    Resumed {
        session: &'a str,
        last_seq: u64,
        replayed: u64,
    },
    ResumeFailed {
        reason: ResumeFailure,
        session: &'a str,
    },
    Configured {
        delivery_acks: bool,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
    },
    Presence {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        user_count: u64,
        connection_count: u64,
        /// `None` when the room has more than `presence_max_users` users.
        #[serde(skip_serializing_if = "Option::is_none")]
        users: Option<Vec<PresenceEntry<'a>>>,
        #[serde(skip_serializing_if = "is_false")]
        truncated: bool,
    },
    PresenceStats {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        user_count: u64,
        connection_count: u64,
    },
    /// The connection's token expires in `expires_in_ms`: send `refresh`.
    TokenExpiring {
        expires_in_ms: u64,
    },
    /// A user's first session entered a room (presence events).
    Join {
        room: &'a str,
        user: &'a str,
    },
    /// A user's last session left a room (presence events).
    Leave {
        room: &'a str,
        user: &'a str,
    },
}

/// One user in a `presence` answer.
#[derive(Debug, Serialize)]
pub(crate) struct PresenceEntry<'a> {
    pub(crate) user: &'a str,
    pub(crate) connections: u64,
}

impl ServerMessage<'_> {
    /// Encodes as an essential control payload.
    pub(crate) fn encode(&self) -> Payload {
        // Serialising these plain structs cannot fail; an empty object is a
        // harmless fallback rather than a panic.
        let v = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        Payload::control(Bytes::from(v))
    }
}

/// What every room message starts with, before its sequence number.
const MESSAGE_PREFIX: &[u8] = br#"{"type":"message","seq":"#;

/// The length of [`message_head`]`(seq)`, without making it.
pub(crate) fn message_head_len(seq: u64) -> usize {
    let digits = seq.checked_ilog10().map_or(1, |l| l as usize + 1);
    MESSAGE_PREFIX.len() + digits + 1
}

/// The per-receiver head of a room/user/broadcast message:
/// `{"type":"message","seq":<seq>,`.
///
/// Built on the stack and copied into an exactly-sized buffer: one small
/// allocation per receiver (a `Vec` with spare capacity would cost `Bytes`
/// a second allocation).
pub(crate) fn message_head(seq: u64) -> Bytes {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = seq;
    loop {
        i -= 1;
        // `n % 10` is a single digit, so the cast cannot truncate.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut buf = [0u8; MESSAGE_PREFIX.len() + 21];
    let digits = &digits[i..];
    let end = MESSAGE_PREFIX.len() + digits.len();
    buf[..MESSAGE_PREFIX.len()].copy_from_slice(MESSAGE_PREFIX);
    buf[MESSAGE_PREFIX.len()..end].copy_from_slice(digits);
    buf[end] = b',';
    Bytes::copy_from_slice(&buf[..=end])
}

fn push_json_str(v: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *v, s);
}

/// The shared body of a message, encoded once per publish:
/// `"room":"r","id":"x","from":"u","data":<raw>}` (or `"to":"user"` /
/// `"broadcast":true` instead of `"room"`).
pub(crate) fn message_body(target: &BusTarget, id: &str, from: &UserId, data: &RawValue) -> Bytes {
    let raw = data.get();
    let mut v = Vec::with_capacity(raw.len() + id.len() + 64);
    match target {
        BusTarget::Room(room) => {
            v.extend_from_slice(br#""room":"#);
            push_json_str(&mut v, room.as_str());
        }
        BusTarget::User(user) => {
            v.extend_from_slice(br#""to":"#);
            push_json_str(&mut v, user.as_str());
        }
        BusTarget::Broadcast => v.extend_from_slice(br#""broadcast":true"#),
    }
    v.extend_from_slice(br#","id":"#);
    push_json_str(&mut v, id);
    v.extend_from_slice(br#","from":"#);
    push_json_str(&mut v, from.as_str());
    v.extend_from_slice(br#","data":"#);
    v.extend_from_slice(raw.as_bytes());
    v.push(b'}');
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RoomName;

    #[test]
    fn parses_requests() {
        let m = parse(br#"{"type":"publish","room":"r","id":"1","data":{"a":[1,2]}}"#);
        match m {
            Ok(ClientMessage::Publish { room, id, data }) => {
                assert_eq!(room, "r");
                assert_eq!(id, "1");
                assert_eq!(data.get(), r#"{"a":[1,2]}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(br#"{"type":"broadcast","id":"1","data":null}"#),
            Ok(ClientMessage::Broadcast { .. })
        ));
        assert!(matches!(
            parse(br#"{"type":"ack","seq":3,"extra":true}"#),
            Ok(ClientMessage::Ack { seq: 3 })
        ));
        let escaped = parse(br#"{"type":"join","room":"a\"b"}"#);
        assert!(matches!(escaped, Ok(ClientMessage::Join { ref room, .. }) if room == "a\"b"));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"{\"type\":1}",
            b"{\"type\":\"ack\",\"seq\":-1}",
            b"\xff\xfe",
            // A field of the protocol with the wrong type is malformed even
            // in a message that does not use it (docs/PROTOCOL.md).
            b"{\"type\":\"ping\",\"seq\":\"x\"}",
            b"{\"type\":\"publish\",\"room\":\"r\",\"id\":\"1\",\"data\":1,\"user\":{}}",
        ] {
            let e = parse(bad).err().map(|e| e.code);
            assert_eq!(e, Some(ErrorCode::Malformed), "{bad:?}");
        }
        assert_eq!(
            parse(br#"{"type":"nope"}"#).err().map(|e| e.code),
            Some(ErrorCode::UnknownType)
        );
        let e = parse(br#"{"type":"publish","id":"7","room":"r"}"#).err();
        assert_eq!(
            e.map(|e| (e.op, e.id.map(Cow::into_owned))),
            Some((Some(Op::Publish), Some("7".to_owned())))
        );
    }

    #[test]
    fn head_digits() {
        for n in [0, 1, 9, 10, 17, 1_000_000, u64::MAX] {
            assert_eq!(
                message_head(n),
                Bytes::from(format!(r#"{{"type":"message","seq":{n},"#))
            );
        }
    }

    #[test]
    fn encodes_head_and_body() {
        let data = RawValue::from_string("{\"x\":1}".to_owned()).ok();
        let data = data.as_deref().map(|d| {
            message_body(
                &BusTarget::Room(RoomName::new("r\"")),
                "id",
                &UserId::new("u"),
                d,
            )
        });
        let mut whole = message_head(17).to_vec();
        whole.extend_from_slice(&data.unwrap_or_default());
        let v: serde_json::Value = serde_json::from_slice(&whole).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"type":"message","seq":17,"room":"r\"","id":"id","from":"u","data":{"x":1}})
        );
    }
}
