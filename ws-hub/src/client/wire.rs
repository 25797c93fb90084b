//! The client side of the wire protocol: requests encoded, server messages
//! parsed (see `docs/PROTOCOL.md`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::event::Op;

/// A request the client sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Request<'a> {
    Join {
        room: &'a str,
        id: &'a str,
    },
    Leave {
        room: &'a str,
        id: &'a str,
    },
    Publish {
        room: &'a str,
        id: &'a str,
        data: &'a RawValue,
    },
    Send {
        user: &'a str,
        id: &'a str,
        data: &'a RawValue,
    },
    Broadcast {
        id: &'a str,
        data: &'a RawValue,
    },
    Ack {
        seq: u64,
    },
    Configure {
        delivery_acks: bool,
    },
    Refresh {
        token: &'a str,
        id: &'a str,
    },
}

impl Request<'_> {
    pub(crate) fn encode(&self) -> String {
        // Serialising these plain structs (strings, numbers, raw JSON)
        // cannot fail; an empty object is a harmless fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Any server message, every field optional (unknown fields ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) session: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) user: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) ping_interval_ms: Option<u64>,
    #[serde(default)]
    pub(crate) max_message_size: Option<u64>,
    #[serde(default, borrow)]
    pub(crate) op: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) to: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) from: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) message: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) duplicate: bool,
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    #[serde(default)]
    pub(crate) count: Option<u64>,
    #[serde(default)]
    pub(crate) expires_in_ms: Option<u64>,
    #[serde(default, borrow, deserialize_with = "present_raw")]
    pub(crate) data: Option<&'a RawValue>,
}

/// `data: null` is valid data, not an absent field.
fn present_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

pub(crate) fn parse(text: &str) -> Option<Incoming<'_>> {
    serde_json::from_str(text).ok()
}

pub(crate) fn parse_op(s: &str) -> Option<Op> {
    Some(match s {
        "join" => Op::Join,
        "leave" => Op::Leave,
        "publish" => Op::Publish,
        "send" => Op::Send,
        "broadcast" => Op::Broadcast,
        _ => return None,
    })
}

/// Percent-encodes a query-string value (RFC 3986 unreserved kept).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests() {
        let data = RawValue::from_string(r#"{"a":1}"#.to_owned()).ok();
        let data = data.as_deref();
        assert_eq!(
            data.map(|data| Request::Publish {
                room: "r",
                id: "x",
                data
            }
            .encode()),
            Some(r#"{"type":"publish","room":"r","id":"x","data":{"a":1}}"#.to_owned())
        );
        assert_eq!(
            Request::Ack { seq: 3 }.encode(),
            r#"{"type":"ack","seq":3}"#
        );
    }

    #[test]
    fn parses_and_escapes() {
        let m = parse(r#"{"type":"message","seq":2,"room":"r","id":"i","from":"u","data":null}"#);
        assert_eq!(m.as_ref().and_then(|m| m.seq), Some(2));
        assert!(m.and_then(|m| m.data).is_some());
        assert!(parse("nope").is_none());
        assert_eq!(percent_encode("a.b-c_~ /+="), "a.b-c_~%20%2F%2B%3D");
    }
}
