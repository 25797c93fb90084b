//! What the client core hands out (actions, events) and takes in (inputs).

use std::fmt;

use serde_json::value::RawValue;
use thiserror::Error;

use crate::protocol::ResumeFailure;

/// The connection state, as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No connection; waiting for [`Client::connect`](super::Client::connect)
    /// or for the next attempt of the reconnect schedule.
    Disconnected,
    /// An attempt is in progress: asking for a token, opening the
    /// connection, or waiting for `welcome`.
    Connecting,
    /// `welcome` received; requests flow.
    Connected,
    /// Terminal: closed by the application, by a 1008 close, or by a
    /// rejected token. Only [`Client::connect`](super::Client::connect)
    /// leaves it.
    Closed,
}

impl State {
    /// Lower-case name (`"connected"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Closed => "closed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request kind that the server acks or nacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `join`.
    Join,
    /// `leave`.
    Leave,
    /// `publish` to a room.
    Publish,
    /// `send` to a user.
    Send,
    /// `broadcast` to everyone.
    Broadcast,
}

impl Op {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Publish => "publish",
            Self::Send => "send",
            Self::Broadcast => "broadcast",
        }
    }
}

/// Something the driver must do, pulled with
/// [`Client::poll_action`](super::Client::poll_action).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum Action {
    /// Ask the token provider for a token (for a new attempt, because the
    /// last one was refused with HTTP 401, or to renew the connection's
    /// token after `token_expiring`), then answer with [`Input::Token`].
    NeedToken,
    /// Open a WebSocket connection to `url` (which carries the token and the
    /// resume parameters), then report [`Input::Connected`] or
    /// [`Input::ConnectFailed`]. Any earlier connection is already
    /// abandoned.
    Open {
        /// The full `ws://` or `wss://` URL.
        url: String,
    },
    /// Send this text as one WebSocket text message on the open connection.
    Send {
        /// The JSON message.
        text: String,
    },
    /// Close (or abort) the current connection with this code and forget
    /// it: nothing it still delivers may be fed back in.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
}

/// A connection state transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// The WebSocket close code behind the change, if there was one (the
    /// server's, or [`CLOSE_WATCHDOG`](super::CLOSE_WATCHDOG), 1000 for
    /// [`Client::close`](super::Client::close), 1006 for a connection lost
    /// without a close frame).
    pub code: Option<u16>,
    /// Why: the close reason, `"welcome"`, `"resumed"`,
    /// `"connect failed (HTTP 503)"`, `"connect timeout"`, ...
    pub reason: String,
}

/// Where a message was addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Published to this room.
    Room(String),
    /// Sent directly to this user (us).
    User(String),
    /// Broadcast to every connection.
    Broadcast,
}

/// A delivered `message`, new to this client (duplicates are filtered).
#[derive(Debug, Clone)]
pub struct Message {
    /// Its sequence number in our session.
    pub seq: u64,
    /// Room, user or broadcast.
    pub target: Target,
    /// The publisher's id for it.
    pub id: String,
    /// The publishing user.
    pub from: String,
    /// The payload, verbatim.
    pub data: Box<RawValue>,
    /// The whole `message` object as received.
    pub text: String,
}

/// What was lost, reported once so the application can resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The resume failed (`resume_failed`). Except for
    /// [`ResumeFailure::Overflow`], the client now has a new session and has
    /// joined its rooms again.
    ResumeFailed(ResumeFailure),
    /// The server's outbound queue dropped `count` messages (`dropped`).
    Dropped {
        /// How many messages were lost.
        count: u64,
    },
}

impl GapReason {
    /// The wire string (`"expired"`, `"overflow"`, ..., `"dropped"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResumeFailed(ResumeFailure::Expired) => "expired",
            Self::ResumeFailed(ResumeFailure::Overflow) => "overflow",
            Self::ResumeFailed(ResumeFailure::Forbidden) => "forbidden",
            Self::ResumeFailed(ResumeFailure::InvalidSeq) => "invalid_seq",
            Self::ResumeFailed(_) => "unknown",
            Self::Dropped { .. } => "dropped",
        }
    }
}

/// A gap in the message stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Why.
    pub reason: GapReason,
    /// The highest `seq` processed before the gap (in the old session, if
    /// the session changed).
    pub last_seq: u64,
}

impl Gap {
    /// One JSON line: `{"type":"gap","reason":"expired","last_seq":16}`
    /// (plus `"count"` for [`GapReason::Dropped`]).
    pub fn to_json(&self) -> String {
        match self.reason {
            GapReason::Dropped { count } => format!(
                r#"{{"type":"gap","reason":"dropped","last_seq":{},"count":{count}}}"#,
                self.last_seq
            ),
            r => format!(
                r#"{{"type":"gap","reason":"{}","last_seq":{}}}"#,
                r.as_str(),
                self.last_seq
            ),
        }
    }
}

/// A positive answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The server had already accepted this id (a retry): not delivered
    /// again. Still a success.
    pub duplicate: bool,
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OpError {
    /// The server refused it (`nack`); `reason` is the wire string
    /// (`not_member`, `rate_limited`, ... see `docs/PROTOCOL.md`).
    #[error("refused by the server: {reason}")]
    Nacked {
        /// The nack reason.
        reason: String,
    },
    /// The client was closed (by the application or terminally) before an
    /// answer came; the request may or may not have been processed.
    #[error("client closed before the request was answered")]
    Closed,
}

/// The final answer to one join, leave, publish, send or broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The request's id.
    pub id: String,
    /// Its kind.
    pub op: Op,
    /// Ack or why not.
    pub result: Result<Ack, OpError>,
}

/// Something for the application, pulled with
/// [`Client::poll_event`](super::Client::poll_event).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The connection state changed.
    State(StateChange),
    /// A new message.
    Message(Message),
    /// A request was answered (or abandoned).
    Reply(Reply),
    /// Messages were lost; resync.
    Gap(Gap),
    /// A join the client made on its own after a lost session was refused:
    /// the room is no longer in the joined set.
    RejoinFailed {
        /// The room.
        room: String,
        /// The nack reason.
        reason: String,
    },
    /// The server warned that the connection's token expires in
    /// `expires_in_ms` (`token_expiring`). With a token provider the
    /// client has asked it ([`Action::NeedToken`]) and sends `refresh`
    /// with the new token; without one, the server closes with 4001 at
    /// expiry and the client reconnects with the same token.
    TokenExpiring {
        /// Time left, per the server.
        expires_in_ms: u64,
    },
    /// The server accepted the `refresh`: the new token's expiry applies,
    /// and reconnections use the new token.
    TokenRefreshed,
    /// The `refresh` was refused (`reason` is the nack reason:
    /// `forbidden`, `invalid_token`, ...), or the token provider had no
    /// new token (`no_token`). Nothing changed on the server: it closes
    /// with 4001 at expiry, and the client reconnects (asking the provider
    /// again) and resumes.
    TokenRefreshFailed {
        /// Why.
        reason: String,
    },
    /// The server reported an `error`.
    ServerError {
        /// Its code (`malformed`, ...).
        code: String,
        /// Its message.
        message: String,
    },
}

/// Something that happened, pushed with
/// [`Client::handle`](super::Client::handle).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input<'a> {
    /// The token provider's answer to [`Action::NeedToken`] (`None`: no
    /// token, or no new one).
    Token(Option<String>),
    /// The connection asked for by [`Action::Open`] is open (upgrade done).
    Connected,
    /// A text message arrived.
    Text(&'a str),
    /// Any other sign of life: a WebSocket ping or pong, a binary message.
    Activity,
    /// The connection closed: the peer's close code and reason, or `None`
    /// when it was lost without a close frame (1006).
    Closed {
        /// The close code, if a close frame came.
        code: Option<u16>,
        /// The close reason.
        reason: &'a str,
    },
    /// [`Action::Open`] failed: with the HTTP status if the server refused
    /// the upgrade, `None` for a network error.
    ConnectFailed {
        /// The HTTP status of the refusal.
        status: Option<u16>,
    },
}

/// A request could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The bounded buffer of unanswered requests is full
    /// ([`ClientConfig::max_pending`](super::ClientConfig::max_pending)):
    /// wait for replies (or the connection) and retry.
    #[error("pending buffer full ({limit} unanswered requests)")]
    BufferFull {
        /// The configured limit.
        limit: usize,
    },
    /// The client is closed.
    #[error("client is closed")]
    Closed,
    /// An unanswered request already uses this id.
    #[error("id `{0}` is already pending")]
    DuplicateId(String),
    /// The request is longer than the server's `max_message_size` (from
    /// `welcome`).
    #[error("request of {size} bytes exceeds the server's limit of {limit}")]
    TooLarge {
        /// The encoded request's length.
        size: usize,
        /// The server's `max_message_size`.
        limit: usize,
    },
    /// An empty room, user or id.
    #[error("empty {0}")]
    Empty(&'static str),
}
