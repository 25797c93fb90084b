//! Error types, split by who is at fault.
//!
//! - [`ProtocolError`]: the peer broke RFC 6455 after the handshake; each
//!   maps to the close code sent to it ([`ProtocolError::close_code`]).
//! - [`HandshakeError`]: the opening handshake failed; each carries the HTTP
//!   status a server answers with ([`HandshakeError::status_hint`]).
//! - [`SendError`]: the local application called a command that does not
//!   fit the connection's state or the protocol's rules.
//! - [`ConfigError`]: a [`crate::Config`] that cannot work.
//!
//! Peer errors never surface as `Err` from an input method: they become an
//! [`crate::Event::Error`] followed by [`crate::Event::Closed`].

use crate::frame::CloseCode;

/// The peer violated the protocol after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1-3 set without a negotiated extension.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlTooLong(u64),
    /// A client frame without a mask (server role).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A masked server frame (client role).
    #[error("server frame is masked")]
    MaskedFrame,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is unfinished.
    #[error("new data frame while a fragmented message is unfinished")]
    ExpectedContinuation,
    /// A 64-bit payload length with the most significant bit set.
    #[error("invalid 64-bit payload length")]
    InvalidLength,
    /// A frame over the configured maximum frame size.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Declared payload size.
        size: u64,
        /// Configured limit.
        limit: usize,
    },
    /// A message over the configured maximum message size.
    #[error("message of at least {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Size reached so far.
        size: u64,
        /// Configured limit.
        limit: usize,
    },
    /// A text message or close reason that is not UTF-8.
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A close frame with a one-byte payload.
    #[error("close frame payload of one byte")]
    CloseFrameTooShort,
    /// A close code that may not be sent on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A compressed message (RSV1) whose payload is not valid DEFLATE data.
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// RSV1 on a continuation or control frame of a connection with
    /// permessage-deflate (only a message's first frame may carry it).
    #[error("RSV1 set on a continuation or control frame")]
    MisplacedCompressionBit,
}

impl ProtocolError {
    /// The close code to send: 1009 for size limits, 1007 for bad UTF-8,
    /// 1002 for everything else. Corrupt compressed data is 1007 too: the
    /// payload does not fit the message.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// The opening handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes are not an HTTP/1.1 message.
    #[error("malformed HTTP: {0}")]
    MalformedHttp(String),
    /// The head (request line and headers) is over the configured size or
    /// header count.
    #[error("HTTP head exceeds {limit} bytes or the header count limit")]
    HeadTooLarge {
        /// Configured limit in bytes.
        limit: usize,
    },
    /// The request method is not GET.
    #[error("method {0} is not GET")]
    MethodNotGet(String),
    /// Not HTTP/1.1.
    #[error("HTTP version must be 1.1")]
    HttpVersion,
    /// A required header is missing.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header has a value that does not fit the handshake.
    #[error("invalid {name} header: {reason}")]
    InvalidHeader {
        /// The header name.
        name: &'static str,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported WebSocket version (only 13 is supported)")]
    UnsupportedVersion,
    /// The server answered with another status than 101 (client role).
    #[error("server answered with HTTP status {0} instead of 101")]
    Rejected(u16),
    /// `Sec-WebSocket-Accept` does not match the key sent (client role).
    #[error("Sec-WebSocket-Accept does not match the key")]
    AcceptMismatch,
    /// The server chose a subprotocol that was not offered (client role).
    #[error("server selected subprotocol {0:?} that was not offered")]
    UnofferedProtocol(String),
    /// The server answered with an extension that was not offered.
    #[error("server selected an extension that was not offered")]
    UnofferedExtension,
    /// The server's `Sec-WebSocket-Extensions` answer is malformed or
    /// accepts permessage-deflate with parameters the client did not allow
    /// (client role; RFC 7692 section 7.1).
    #[error("invalid extension answer: {0}")]
    InvalidExtension(&'static str),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
    /// The connection ended before the handshake finished.
    #[error("connection closed during the handshake")]
    Eof,
}

impl HandshakeError {
    /// The HTTP status a server answers this error with: 426 for a wrong
    /// version, 431 for an oversized head, 405 for a method other than GET,
    /// 408 for a timeout, and 400 otherwise.
    pub fn status_hint(&self) -> u16 {
        match self {
            Self::UnsupportedVersion => 426,
            Self::HeadTooLarge { .. } => 431,
            Self::MethodNotGet(_) => 405,
            Self::Timeout => 408,
            _ => 400,
        }
    }
}

/// A command that does not fit the connection's state or the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The handshake has not completed.
    #[error("the handshake has not completed")]
    NotOpen,
    /// A close frame was already sent or the connection is closed.
    #[error("the connection is closing or closed")]
    Closed,
    /// `accept`/`reject` called when no request is waiting for an answer.
    #[error("no handshake request is waiting for an answer")]
    NoPendingRequest,
    /// `accept` called on a request that is not a valid WebSocket upgrade.
    #[error("the request is not a valid WebSocket upgrade: {0}")]
    NotUpgradable(HandshakeError),
    /// `accept` chose a subprotocol the client did not offer.
    #[error("subprotocol {0:?} was not offered by the client")]
    UnofferedProtocol(String),
    /// A ping, pong or close payload over 125 bytes.
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlTooLong(usize),
    /// A close code that may not be sent.
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A prepared (unmasked) frame on a client connection.
    #[error("prepared frames are unmasked and may only be sent by a server")]
    PreparedFrameOnClient,
    /// An extra response or request header with a name or value that would
    /// break the HTTP framing.
    #[error("header {0:?} contains a forbidden character")]
    InvalidHeader(String),
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A permessage-deflate mode name other than `off`, `shared` or
    /// `dedicated` ([`crate::DeflateConfig::from_setting`]).
    #[error("deflate must be `off`, `shared` or `dedicated`, not {0:?}")]
    UnknownDeflateMode(String),
    /// A size limit is zero or out of range.
    #[error("{name} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// The setting.
        name: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
}

/// Any error the connection reports through [`crate::Event::Error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer violated the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The close handshake did not finish in time.
    #[error("the peer did not answer the close frame in time")]
    CloseTimeout,
}
