//! The pure first step of handling a client message: size check, then
//! parse. It reads nothing of the hub's state, so a server runs it on the
//! connection's own task, where messages of different connections are
//! parsed in parallel, and hands the hub's serial part only the result
//! ([`Command::Request`](crate::Command::Request)). The hub's answer to a
//! [`Request`] is exactly its answer to the raw message
//! ([`Command::Received`](crate::Command::Received) parses on the hub).

use crate::protocol::{self, ClientMessage, ErrorCode, Op};

/// A client message, size-checked and parsed by [`Request::parse`]: the
/// input of the hub's serial part ([`Command::Request`](crate::Command::Request)).
/// Owns its strings and data, so it can cross to the hub's task.
#[derive(Debug, Clone)]
pub struct Request(pub(crate) Result<ClientMessage<'static>, Rejection>);

/// Why a message is not a request the hub dispatches; the hub answers it
/// (`nack` or `error`, see `docs/PROTOCOL.md`) and counts a violation.
#[derive(Debug, Clone)]
pub(crate) enum Rejection {
    /// A binary WebSocket message.
    Binary,
    /// Longer than `max_message_size`. `op`, `id` and `room` name the
    /// request for its `nack` (`op: None`: answered with an `error`).
    TooLarge {
        op: Option<Op>,
        id: Option<String>,
        room: Option<String>,
    },
    /// A request with a missing field: `nack` `bad_request`.
    BadRequest { op: Op, id: Option<String> },
    /// Not JSON, an unknown type, or a non-request with a missing field:
    /// `error` with this code and detail.
    Malformed {
        code: ErrorCode,
        detail: &'static str,
    },
}

impl Request {
    /// Checks `data` (a complete WebSocket message, `is_text` for a text
    /// message) against `max_message_size` (the hub's
    /// [`HubConfig::max_message_size`](crate::HubConfig::max_message_size)),
    /// then parses it. Pure: call it where the message was read, and send
    /// the result to the hub with [`Command::Request`](crate::Command::Request).
    ///
    /// ```
    /// use ws_hub::{HubConfig, Request};
    ///
    /// let limit = HubConfig::default().max_message_size;
    /// let request = Request::parse(br#"{"type":"join","room":"lobby"}"#, true, limit);
    /// # let _ = request;
    /// ```
    pub fn parse(data: &[u8], is_text: bool, max_message_size: usize) -> Self {
        if !is_text {
            return Self(Err(Rejection::Binary));
        }
        if data.len() > max_message_size {
            // Read only to name the request in its nack, so that the client
            // can match it (a publish by its id); nothing of it is kept.
            // A request with a missing field is still a request: nacked
            // `too_large` like the others, not answered with an `error`.
            let (op, id, room) = match protocol::parse(data) {
                Ok(msg) => (
                    msg.op(),
                    msg.id().map(str::to_owned),
                    msg.room().map(str::to_owned),
                ),
                Err(bad) => (bad.op, bad.id.map(|id| id.into_owned()), None),
            };
            return Self(Err(Rejection::TooLarge { op, id, room }));
        }
        Self(match protocol::parse(data) {
            Ok(msg) => Ok(msg.into_owned()),
            Err(bad) => Err(match bad.op {
                Some(op) => Rejection::BadRequest {
                    op,
                    id: bad.id.map(|id| id.into_owned()),
                },
                None => Rejection::Malformed {
                    code: bad.code,
                    detail: bad.detail,
                },
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_checked_before_anything_is_kept() {
        let publish = br#"{"type":"publish","room":"r","id":"m1","data":"0123456789"}"#;
        let Request(Err(Rejection::TooLarge { op, id, room })) = Request::parse(publish, true, 10)
        else {
            panic!("not rejected as too large");
        };
        assert_eq!(
            (op, id.as_deref(), room),
            (Some(Op::Publish), Some("m1"), None)
        );
        assert!(matches!(
            Request::parse(publish, true, publish.len()),
            Request(Ok(ClientMessage::Publish { .. }))
        ));
        assert!(matches!(
            Request::parse(b"not json at all", true, 10),
            Request(Err(Rejection::TooLarge { op: None, .. }))
        ));
        assert!(matches!(
            Request::parse(b"{}", false, 10),
            Request(Err(Rejection::Binary))
        ));
    }

    #[test]
    fn parsed_requests_own_their_data() {
        let bytes = br#"{"type":"send","user":"b\"ob","id":"7","data":{"x":[1]}}"#.to_vec();
        let request = Request::parse(&bytes, true, 1024);
        drop(bytes);
        let Request(Ok(ClientMessage::Send { user, id, data })) = request else {
            panic!("not a send");
        };
        assert_eq!((&*user, &*id, data.get()), ("b\"ob", "7", r#"{"x":[1]}"#));
        assert!(matches!(
            Request::parse(br#"{"type":"publish","id":"9"}"#, true, 1024),
            Request(Err(Rejection::BadRequest { op: Op::Publish, id: Some(id) })) if id == "9"
        ));
        assert!(matches!(
            Request::parse(br#"{"type":"nope"}"#, true, 1024),
            Request(Err(Rejection::Malformed {
                code: ErrorCode::UnknownType,
                ..
            }))
        ));
    }
}
