//! Limits and behaviour switches, each with a default.

use std::time::Duration;

use crate::deflate::DeflateConfig;
use crate::error::ConfigError;

/// Connection settings. Every limit has a default; [`Config::validate`]
/// checks a configuration before use (constructors call it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest accepted frame payload. Default 16 MiB. A larger frame is
    /// refused at its header with close 1009, before its payload is read.
    pub max_frame_size: usize,
    /// Largest accepted message (sum of its frames). Default 64 MiB;
    /// exceeding it closes with 1009.
    pub max_message_size: usize,
    /// Largest HTTP head (request or response line plus headers) in bytes.
    /// Default 8 KiB; a server answers a larger one with 431.
    pub max_handshake_size: usize,
    /// Largest number of HTTP headers. Default 64.
    pub max_headers: usize,
    /// Answer every ping with a pong automatically. Default true.
    pub auto_pong: bool,
    /// Insist that client frames are masked and server frames are not.
    /// Default true; false accepts either (lenient peers).
    pub strict_masking: bool,
    /// Split outgoing messages into frames of at most this payload size.
    /// Default `None`: one frame per message.
    pub fragment_size: Option<usize>,
    /// Deadline for the opening handshake, from construction. Default 10 s.
    pub handshake_timeout: Option<Duration>,
    /// How long to wait for the peer's close frame after sending ours.
    /// Default 5 s.
    pub close_timeout: Duration,
    /// permessage-deflate (RFC 7692): `Some` makes a client offer it and a
    /// server accept an offer. Default `None` (the core never compresses
    /// unless asked; the adapters and binaries turn it on). The message
    /// size limit applies to the inflated size.
    pub deflate: Option<DeflateConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            max_handshake_size: 8 << 10,
            max_headers: 64,
            auto_pong: true,
            strict_masking: true,
            fragment_size: None,
            handshake_timeout: Some(Duration::from_secs(10)),
            close_timeout: Duration::from_secs(5),
            deflate: None,
        }
    }
}

impl Config {
    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn range(name: &'static str, value: usize, min: u64, max: u64) -> Result<(), ConfigError> {
            let value = value as u64;
            if value < min || value > max {
                return Err(ConfigError::OutOfRange {
                    name,
                    value,
                    min,
                    max,
                });
            }
            Ok(())
        }
        range("max_frame_size", self.max_frame_size, 125, 1 << 40)?;
        range("max_message_size", self.max_message_size, 125, 1 << 40)?;
        range("max_handshake_size", self.max_handshake_size, 256, 1 << 20)?;
        range("max_headers", self.max_headers, 8, 1024)?;
        if let Some(size) = self.fragment_size {
            range("fragment_size", size, 1, 1 << 40)?;
        }
        if let Some(deflate) = &self.deflate {
            deflate.validate()?;
        }
        Ok(())
    }
}
