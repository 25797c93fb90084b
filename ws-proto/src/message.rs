//! Messages and the events a connection reports.

use bytes::Bytes;

use crate::error::Error;
use crate::frame::CloseCode;
use crate::handshake::{Request, ServerResponse};

/// `Bytes` known to hold valid UTF-8: the payload of a text message.
///
/// This crate forbids `unsafe`, so [`Utf8Bytes::as_str`] re-checks the
/// bytes (a fast, vectorised scan) instead of trusting the invariant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps bytes that were validated as UTF-8 by the decoder.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// Wraps `bytes` if they are valid UTF-8.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The raw bytes, without copying.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&'static str> for Utf8Bytes {
    fn from(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }
}

impl std::fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A complete data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::Binary(data.into())
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        match self {
            Self::Text(t) => t.as_bytes(),
            Self::Binary(b) => b,
        }
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.payload().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload().is_empty()
    }
}

/// What a connection reports, pulled with [`crate::Connection::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Server role: a complete HTTP request head arrived. Answer it with
    /// [`crate::Connection::accept`], [`crate::Connection::reject`] or
    /// [`crate::Connection::respond`]. [`Request::upgrade_error`] says whether
    /// it can be accepted. Boxed: it is large and comes once.
    Request(Box<Request>),
    /// Client role: the server accepted the upgrade; the connection is open.
    /// Boxed, like [`Event::Request`].
    Accepted(Box<ServerResponse>),
    /// A complete data message.
    Message(Message),
    /// A ping arrived (answered automatically when `auto_pong` is set).
    Ping(Bytes),
    /// A pong arrived.
    Pong(Bytes),
    /// Something went wrong; a [`Event::Closed`] follows.
    Error(Error),
    /// The connection is finished; after draining `poll_transmit`, the
    /// transport may be closed. `clean` is true when both close frames were
    /// exchanged. A server closes TCP at once; a client should wait briefly
    /// for the server to close first (RFC 6455 section 7.1.1).
    Closed {
        /// The peer's close code (or ours when we failed the connection;
        /// 1006 when no close frame was exchanged, 1005 when the peer sent
        /// none).
        code: CloseCode,
        /// The close reason.
        reason: String,
        /// Whether the close handshake completed.
        clean: bool,
    },
}
