//! Typed errors.

use thiserror::Error;

/// A [`HubConfig`](crate::HubConfig) that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit or duration that must be positive is zero.
    #[error("`{field}` must be greater than zero")]
    Zero {
        /// The offending field.
        field: &'static str,
    },
    /// A duration exceeds [`MAX_DURATION`](crate::MAX_DURATION).
    #[error("`{field}` is longer than ten years")]
    TooLong {
        /// The offending field.
        field: &'static str,
    },
    /// The heartbeat timeout must be longer than the ping interval,
    /// otherwise a healthy connection is closed before it can answer.
    #[error("`heartbeat_timeout` ({timeout_ms} ms) must exceed `ping_interval` ({interval_ms} ms)")]
    HeartbeatTimeoutTooShort {
        /// The configured timeout.
        timeout_ms: u128,
        /// The configured interval.
        interval_ms: u128,
    },
    /// `ack_max_backoff` is below `ack_timeout`.
    #[error("`ack_max_backoff` must be at least `ack_timeout`")]
    BackoffBelowTimeout,
    /// `node_id` is empty or longer than 64 bytes.
    #[error("`node_id` must be 1 to 64 bytes")]
    BadNodeId,
    /// The per-publisher de-dup bound exceeds the global one.
    #[error("`dedup_per_publisher` must not exceed `dedup_max_entries`")]
    DedupBounds,
    /// The [`SessionSecret`](crate::SessionSecret) is all zeroes: anyone
    /// could forge session ids.
    #[error("the session secret must not be all zeroes")]
    ZeroSessionSecret,
}

/// Why an [`Authenticator`](crate::Authenticator) rejected a connection.
/// The adapter answers the upgrade request with HTTP 401.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token, and anonymous users are not allowed.
    #[error("missing token")]
    MissingToken,
    /// The token is not in the expected format.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match.
    #[error("bad token signature")]
    BadSignature,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Rejected by a custom authenticator.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// A bus message that could not be decoded.
#[derive(Debug, Error)]
#[error("invalid bus message: {0}")]
pub struct BusDecodeError(#[from] pub(crate) serde_json::Error);

/// A close reason that does not fit in a close frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CloseReasonError {
    /// More than [`CloseReason::MAX_LEN`](crate::CloseReason::MAX_LEN)
    /// bytes of UTF-8.
    #[error("a close reason may have at most 123 bytes of UTF-8, not {len}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
}
