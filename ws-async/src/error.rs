//! The adapter's error type.

use std::io;

/// Errors from the async WebSocket API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The opening handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] ws_proto::HandshakeError),
    /// The peer violated the protocol; the connection was closed with the
    /// matching close code.
    #[error("protocol error: {0}")]
    Protocol(ws_proto::Error),
    /// A command did not fit the connection's state.
    #[error(transparent)]
    Send(#[from] ws_proto::SendError),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The outbound buffer is over its bound (from the non-waiting calls).
    #[error("outbound buffer is full ({0} bytes queued)")]
    Backpressure(usize),
    /// The server refused the upgrade request with this HTTP status (our
    /// own server side, answering a request it would not accept).
    #[error("request refused with HTTP status {0}")]
    Refused(u16),
    /// A URL that is not `ws://host[:port][/path][?query]`.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// A deadline passed (connect or close).
    #[error("timed out")]
    Timeout,
}

impl From<ws_proto::ClientError> for WsError {
    fn from(e: ws_proto::ClientError) -> Self {
        match e {
            ws_proto::ClientError::Config(c) => Self::Config(c.to_string()),
            ws_proto::ClientError::Request(s) => Self::Send(s),
            _ => Self::Url(e.to_string()),
        }
    }
}

impl From<ws_proto::ConfigError> for WsError {
    fn from(e: ws_proto::ConfigError) -> Self {
        Self::Config(e.to_string())
    }
}
