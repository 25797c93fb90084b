//! The async layer's error type.

use std::io;

use crate::url::UrlError;

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
    /// A command did not fit the connection's state.
    #[error(transparent)]
    Send(#[from] ws_proto::SendError),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ws_proto::ConfigError),
    /// The client's opening request cannot be built.
    #[error("invalid client request: {0}")]
    Client(#[from] ws_proto::ClientError),
    /// The outbound buffer is over its bound (from the non-waiting calls).
    #[error("outbound buffer is full ({0} bytes queued)")]
    Backpressure(usize),
    /// The server refused the upgrade request with this HTTP status (our
    /// own server side, answering a request it would not accept).
    #[error("request refused with HTTP status {0}")]
    Refused(u16),
    /// A URL that is not `ws[s]://host[:port][/path][?query]`, or a
    /// `wss://` URL given where TLS is not set up.
    #[error("invalid URL: {0}")]
    Url(#[from] UrlError),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// A deadline passed: the opening handshake (connect), or the peer
    /// did not answer our close frame within the close timeout (from
    /// `recv`; the connection is over, with close code 1006).
    #[error("timed out")]
    Timeout,
    /// The TLS handshake failed: the peer's certificate is untrusted,
    /// expired or for another host, a required client certificate is
    /// missing, or the peer does not speak TLS.
    #[cfg(feature = "tls")]
    #[error("TLS handshake failed: {0}")]
    Tls(rustls::Error),
}
