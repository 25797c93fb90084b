//! permessage-deflate (RFC 7692): negotiation, compression and the memory
//! policy that keeps an idle connection free of deflate contexts.
//!
//! # Memory
//!
//! A deflate context is large (about 140 KiB at window 9 and 262 KiB at
//! window 15 with the zlib backend used here, see `docs/PERFORMANCE.md`);
//! an inflate context is about 7 KiB plus its window (0.5 to 32 KiB). So
//! the policy is about *when* contexts exist:
//!
//! - [`DeflateMode::Shared`] (the default): the server answers every offer
//!   with `server_no_context_takeover; client_no_context_takeover`, so no
//!   context outlives a message. The compressor exists only inside a
//!   `send` call (or is the caller's [`Compressor`], shared by many
//!   connections, e.g. one per thread or the hub's [`crate::PreparedFrame`]);
//!   the inflater exists only while a compressed message is arriving. An
//!   idle connection holds no context at all. A client in this mode offers
//!   the same, then falls back to an offer without
//!   `server_no_context_takeover`; if a server picks that one, the client's
//!   inflater has to persist between messages.
//! - [`DeflateMode::Dedicated`]: context takeover in both directions (a
//!   better ratio for streams of similar messages), with windows capped at
//!   the configured bits where the protocol lets us name them. Each
//!   connection then keeps a compressor and an inflater for its lifetime:
//!   a known, bounded cost chosen by the user.

mod codec;
mod negotiate;

pub(crate) use codec::{Deflater, Inflater};
pub use negotiate::DeflateOffer;

use std::cell::Cell;

use bytes::Bytes;

use crate::error::ConfigError;

/// The smallest window zlib can compress with (RFC 7692 allows 8; an 8 is
/// served as 9).
pub const MIN_WINDOW_BITS: u8 = 9;
/// The largest window (32 KiB).
pub const MAX_WINDOW_BITS: u8 = 15;

/// How the compression contexts of a connection live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeflateMode {
    /// No context takeover in either direction: no context outlives a
    /// message, so an idle connection costs nothing extra. The default.
    #[default]
    Shared,
    /// Context takeover both ways with at most `window_bits` (9 to 15) for
    /// the windows this end can bound; one compressor and one inflater per
    /// connection for its whole life.
    Dedicated {
        /// Base-2 logarithm of the window size.
        window_bits: u8,
    },
}

/// permessage-deflate settings of a connection (`Config::deflate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// The memory policy. Default [`DeflateMode::Shared`].
    pub mode: DeflateMode,
    /// Messages shorter than this many bytes are sent uncompressed (RSV1
    /// clear). Default 64.
    pub threshold: usize,
    /// zlib compression level, 0 to 9. Default 6.
    pub level: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self::shared()
    }
}

impl DeflateConfig {
    /// The shared (no context takeover) mode with default settings.
    pub const fn shared() -> Self {
        Self {
            mode: DeflateMode::Shared,
            threshold: 64,
            level: 6,
        }
    }

    /// The dedicated (context takeover) mode with the given window bits.
    pub const fn dedicated(window_bits: u8) -> Self {
        Self {
            mode: DeflateMode::Dedicated { window_bits },
            ..Self::shared()
        }
    }

    /// Reads a setting: `off` (no deflate), `shared`, or `dedicated` with
    /// `window_bits` (9 to 15, checked).
    ///
    /// ```
    /// use ws_proto::{DeflateConfig, DeflateMode};
    ///
    /// assert_eq!(DeflateConfig::from_setting("off", 15), Ok(None));
    /// let d = DeflateConfig::from_setting("dedicated", 10).unwrap().unwrap();
    /// assert_eq!(d.mode, DeflateMode::Dedicated { window_bits: 10 });
    /// assert!(DeflateConfig::from_setting("dedicated", 8).is_err());
    /// assert!(DeflateConfig::from_setting("fast", 15).is_err());
    /// ```
    pub fn from_setting(mode: &str, window_bits: u8) -> Result<Option<Self>, ConfigError> {
        let config = match mode {
            "off" => return Ok(None),
            "shared" => Self::shared(),
            "dedicated" => Self::dedicated(window_bits),
            other => return Err(ConfigError::UnknownDeflateMode(other.to_owned())),
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks the level and window bits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.level > 9 {
            return Err(ConfigError::OutOfRange {
                name: "deflate.level",
                value: u64::from(self.level),
                min: 0,
                max: 9,
            });
        }
        if let DeflateMode::Dedicated { window_bits } = self.mode
            && !(MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&window_bits)
        {
            return Err(ConfigError::OutOfRange {
                name: "deflate.window_bits",
                value: u64::from(window_bits),
                min: u64::from(MIN_WINDOW_BITS),
                max: u64::from(MAX_WINDOW_BITS),
            });
        }
        Ok(())
    }

    /// The largest window this end compresses with.
    fn own_window_bits(&self) -> u8 {
        match self.mode {
            DeflateMode::Shared => MAX_WINDOW_BITS,
            DeflateMode::Dedicated { window_bits } => window_bits,
        }
    }
}

/// The permessage-deflate parameters in force on a connection, as
/// negotiated (windows absent from the answer are 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server starts every message with an empty context.
    pub server_no_context_takeover: bool,
    /// The client starts every message with an empty context.
    pub client_no_context_takeover: bool,
    /// The largest window the server may compress with.
    pub server_max_window_bits: u8,
    /// The largest window the client may compress with.
    pub client_max_window_bits: u8,
}

/// A compressor for messages sent without context takeover, to share
/// between connections (one per thread, or one per hub) so that no
/// connection keeps its own. Each call compresses one whole message from
/// an empty context.
///
/// ```
/// use ws_proto::deflate::Compressor;
///
/// let mut c = Compressor::new(6, 15).unwrap();
/// // RFC 7692 section 7.2.3.1.
/// assert_eq!(&c.compress(b"Hello")[..], [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
/// assert_eq!(c.compress(b"Hello"), c.compress(b"Hello")); // no context kept
/// ```
pub struct Compressor {
    deflater: Deflater,
    level: u32,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("window_bits", &self.deflater.window_bits())
            .finish_non_exhaustive()
    }
}

impl Compressor {
    /// A compressor with a zlib `level` (0 to 9) and `window_bits` (9 to
    /// 15). Its output may go to any connection that negotiated no server
    /// context takeover and a server window of at least `window_bits`.
    pub fn new(level: u32, window_bits: u8) -> Result<Self, ConfigError> {
        DeflateConfig {
            mode: DeflateMode::Dedicated { window_bits },
            threshold: 0,
            level,
        }
        .validate()?;
        Ok(Self {
            deflater: Deflater::new(level, window_bits),
            level,
        })
    }

    /// The window this compressor uses.
    pub fn window_bits(&self) -> u8 {
        self.deflater.window_bits()
    }

    /// Compresses one message; the result is a permessage-deflate payload
    /// (sync flush, tail removed).
    pub fn compress(&mut self, data: &[u8]) -> Bytes {
        self.compress_parts(&[data])
    }

    /// Compresses the concatenation of `parts` as one message.
    pub fn compress_parts(&mut self, parts: &[&[u8]]) -> Bytes {
        match self.deflater.compress(parts, true) {
            Some(b) => b,
            // zlib reports errors only for misuse; rebuild and retry once.
            None => {
                self.deflater = Deflater::new(self.level, self.deflater.window_bits());
                self.deflater.compress(parts, true).unwrap_or_default()
            }
        }
    }
}

thread_local! {
    /// The compressor for messages sent without context takeover, one per
    /// thread and reused (reset after each message). Creating one per
    /// message costs more than compressing a small message: zlib allocates
    /// and clears about 256 KiB (window 15), which the allocator returns to
    /// the kernel and faults in again each time (measured: 1 KiB JSON echo,
    /// 68 us of server CPU per message against 23 us with a kept context).
    /// A thread holds at most one, whatever its number of connections.
    static SPARE_DEFLATER: Cell<Option<Box<Deflater>>> = const { Cell::new(None) };
}

/// A connection's negotiated deflate state, seen from its role.
pub(crate) struct DeflateState {
    pub(crate) params: DeflateParams,
    pub(crate) config: DeflateConfig,
    /// Our messages keep the context between messages.
    pub(crate) send_takeover: bool,
    /// The window our compressor uses; `None` when the peer allowed only 8,
    /// which zlib cannot do: such a connection sends uncompressed.
    pub(crate) send_window: Option<u8>,
    /// The peer keeps its context between messages, so our inflater must.
    pub(crate) recv_takeover: bool,
    /// The window our inflater needs.
    pub(crate) recv_window: u8,
    pub(crate) deflater: Option<Box<Deflater>>,
    pub(crate) inflater: Option<Box<Inflater>>,
}

impl DeflateState {
    pub(crate) fn new(params: DeflateParams, config: DeflateConfig, server: bool) -> Self {
        let (own_nct, own_bits, peer_nct, peer_bits) = if server {
            (
                params.server_no_context_takeover,
                params.server_max_window_bits,
                params.client_no_context_takeover,
                params.client_max_window_bits,
            )
        } else {
            (
                params.client_no_context_takeover,
                params.client_max_window_bits,
                params.server_no_context_takeover,
                params.server_max_window_bits,
            )
        };
        Self {
            params,
            config,
            send_takeover: !own_nct,
            send_window: (own_bits >= MIN_WINDOW_BITS)
                .then(|| own_bits.min(config.own_window_bits())),
            recv_takeover: !peer_nct,
            recv_window: peer_bits.max(MIN_WINDOW_BITS),
            deflater: None,
            inflater: None,
        }
    }

    /// Whether a message of `len` bytes goes out compressed.
    pub(crate) fn compresses(&self, len: usize) -> bool {
        self.send_window.is_some() && len >= self.config.threshold
    }

    /// Whether output of a shared compressor with `window_bits` fits this
    /// connection (no context of ours to keep in step, window small enough).
    pub(crate) fn accepts_shared(&self, window_bits: u8, len: usize) -> bool {
        !self.send_takeover
            && self.compresses(len)
            && self.send_window.is_some_and(|w| window_bits <= w)
    }

    /// Compresses one message: with context takeover, with this
    /// connection's own compressor; without, with the thread's spare
    /// compressor (`SPARE_DEFLATER`), so no connection holds one.
    pub(crate) fn compress(&mut self, parts: &[&[u8]]) -> Option<Bytes> {
        let window = self.send_window?;
        let level = self.config.level;
        if self.send_takeover {
            let deflater = self
                .deflater
                .get_or_insert_with(|| Box::new(Deflater::new(level, window)));
            return deflater.compress(parts, false);
        }
        SPARE_DEFLATER.with(|spare| {
            // Taken out while in use; a compressor that failed is dropped
            // rather than put back (its state is unknown).
            let reusable = spare
                .take()
                .filter(|d| d.level() == level && d.window_bits() == window);
            let mut deflater = reusable.unwrap_or_else(|| Box::new(Deflater::new(level, window)));
            let out = deflater.compress(parts, true);
            if out.is_some() {
                spare.set(Some(deflater));
            }
            out
        })
    }

    /// The inflater for a compressed message that starts now.
    pub(crate) fn inflater(&mut self) -> &mut Inflater {
        let window = self.recv_window;
        self.inflater
            .get_or_insert_with(|| Box::new(Inflater::new(window)))
    }

    /// A compressed message ended; the inflater goes unless it must keep
    /// the peer's context.
    pub(crate) fn end_message(&mut self) {
        if !self.recv_takeover {
            self.inflater = None;
        }
    }
}
