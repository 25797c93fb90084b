//! Inputs to the hub.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::bus::BusMessage;
use crate::hub::PresenceQuery;
use crate::id::{ConnId, Identity, UserId};
use crate::request::Request;

/// A client's request to resume an earlier session, taken from the
/// upgrade request's query string (`?session=<id>&last_seq=<n>`, see
/// [`ResumeRequest::from_query`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    /// The session id from the earlier `welcome`.
    pub session: String,
    /// The highest `seq` the client received (0 if none, or if the query
    /// had no `last_seq`); `None` if `last_seq` was given but is not a
    /// decimal number from 0 to 2^64-1, which the hub answers with
    /// `resume_failed` `invalid_seq`.
    pub last_seq: Option<u64>,
}

impl ResumeRequest {
    /// Extracts `session` and `last_seq` (default 0) from a query string
    /// (with or without the leading `?`); `None` without a `session`
    /// parameter. An empty or malformed session id or `last_seq` still
    /// makes a request, so that the client is told `resume_failed`
    /// instead of silently getting a new session. Session ids are
    /// base64url, so no percent-decoding is needed.
    pub fn from_query(query: &str) -> Option<Self> {
        let session = query_param(query, "session")?;
        let last_seq = match query_param(query, "last_seq") {
            Some(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
            Some(_) => None,
            None => Some(0),
        };
        Some(Self {
            session: session.to_owned(),
            last_seq,
        })
    }
}

/// The raw value of `name` in a query string, if present (no
/// percent-decoding).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Something that happened, pushed with [`Hub::handle`](crate::Hub::handle).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Command {
    /// A WebSocket connection was accepted for `identity` (from
    /// [`Hub::authenticate`](crate::Hub::authenticate)). The hub answers
    /// with `welcome` (and `resumed`/`resume_failed` plus any replay when
    /// `resume` is set), or closes it (1013 when full, 1001 when shutting
    /// down).
    Connected {
        /// New, unused connection handle.
        conn: ConnId,
        /// Who it is.
        identity: Identity,
        /// The peer address, if known.
        remote_addr: Option<SocketAddr>,
        /// Resume an earlier session instead of starting a new one.
        resume: Option<ResumeRequest>,
    },
    /// A client message that [`Request::parse`](crate::Request::parse)
    /// has size-checked and parsed, typically on the connection's own task
    /// so that the hub's serial part does no parsing. The hub answers it
    /// exactly as it answers the raw message in
    /// [`Received`](Command::Received).
    Request {
        /// The sender.
        conn: ConnId,
        /// The parsed message.
        request: Request,
    },
    /// A complete WebSocket message from a client, parsed by the hub
    /// itself (with [`Request::parse`](crate::Request::parse)). Simplest
    /// for an embedder; a server whose hub runs on one task sends
    /// [`Request`](Command::Request) instead.
    Received {
        /// The sender.
        conn: ConnId,
        /// The message payload.
        data: Bytes,
        /// `true` for a text message, `false` for binary (refused).
        is_text: bool,
    },
    /// Proof of life from `conn` that is not a message: a pong, or any
    /// other traffic. Feeds the heartbeat deadline, not idle eviction.
    Activity {
        /// The connection.
        conn: ConnId,
    },
    /// The client sent a close frame and the close handshake completed;
    /// sent just before [`Disconnected`](Command::Disconnected). A close
    /// with code 1000 or with no code (1005) means the client is done: the
    /// session is discarded at `Disconnected` instead of being kept for
    /// resume, unless `reason` is [`KEEP_SESSION`](crate::KEEP_SESSION).
    /// Any other code keeps the session. A no-op for unknown connections.
    ClientClosed {
        /// The connection.
        conn: ConnId,
        /// The client's close code (1005 when its close frame had none).
        code: u16,
        /// The client's close reason.
        reason: String,
    },
    /// The connection is gone (closed by the peer, an IO error, or after an
    /// [`Action::Close`](crate::Action::Close)). Its session is kept for
    /// resume, unless [`ClientClosed`](Command::ClientClosed) said the
    /// client was done. A no-op for unknown connections.
    Disconnected {
        /// The connection.
        conn: ConnId,
    },
    /// The adapter's [`OutboundQueue`](crate::OutboundQueue) for `conn`
    /// overflowed. The hub emits `Close` 1013 and keeps the session for
    /// resume.
    Overflowed {
        /// The slow connection.
        conn: ConnId,
    },
    /// The token `conn` authenticated with expires at `expires_unix_secs`
    /// (from [`Hub::token_expiry`](crate::Hub::token_expiry)); the wall
    /// clock reads `now_unix_secs` at the instant passed with this
    /// command. Send it right after [`Connected`](Command::Connected). The
    /// hub then sends `token_expiring` `token_expiring_before` ahead,
    /// accepts `refresh`, and closes with
    /// [`CLOSE_TOKEN_EXPIRED`](crate::CLOSE_TOKEN_EXPIRED) at expiry,
    /// keeping the session for resume.
    TokenExpiry {
        /// The connection.
        conn: ConnId,
        /// Wall-clock Unix seconds now.
        now_unix_secs: u64,
        /// When its token expires, Unix seconds.
        expires_unix_secs: u64,
    },
    /// A message from another node, received from the bus.
    Bus(BusMessage),
    /// The answer to an [`Action::QueryPresence`](crate::Action::QueryPresence):
    /// the other nodes' users of the query's room, each with its number of
    /// member sessions (a user may appear more than once; counts add up),
    /// or `None` if they could not be read (the client is nacked
    /// `unavailable`). The hub adds its own members at this instant and
    /// answers the client, if it is still connected.
    ClusterPresence {
        /// The query, as the action carried it.
        query: PresenceQuery,
        /// The other nodes' users and sessions.
        others: Option<Vec<(UserId, u64)>>,
    },
    /// Graceful shutdown: every connection gets `Close` 1001, and new
    /// connections are refused with 1001.
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(
            ResumeRequest::from_query("?token=x&session=abc&last_seq=12"),
            Some(ResumeRequest {
                session: "abc".into(),
                last_seq: Some(12)
            })
        );
        assert_eq!(
            ResumeRequest::from_query("session=abc").map(|r| r.last_seq),
            Some(Some(0))
        );
        for bad in ["x", "-1", "+1", "", "1.5", "18446744073709551616"] {
            let q = format!("session=abc&last_seq={bad}");
            assert_eq!(
                ResumeRequest::from_query(&q).map(|r| r.last_seq),
                Some(None),
                "{q}"
            );
        }
        assert_eq!(
            ResumeRequest::from_query("session=&last_seq=1").map(|r| r.session),
            Some(String::new())
        );
        assert_eq!(ResumeRequest::from_query("token=1"), None);
        assert_eq!(query_param("a&b=2", "a"), Some(""));
        assert_eq!(query_param("", "a"), None);
    }
}
