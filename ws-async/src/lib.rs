//! A runtime-generic async WebSocket: `ws-proto` driven over any async
//! runtime.
//!
//! This is the library an embedder takes: it depends on the protocol core
//! and a few small async building blocks only (no application, no CLI, no
//! broker). A runtime adapter (`runtime-tokio`, `runtime-smol`) implements
//! two traits for its runtime, and everything else is written once, here:
//!
//! - [`Runtime`]: clock, timers, spawning and TCP;
//! - [`Transport`]: read into a buffer, vectored write, shutdown;
//! - [`WebSocket`] (with [`ReadHalf`] and [`WriteHalf`]): a
//!   `ws_proto::Connection` driven over a transport, with backpressure
//!   (a bound on queued outbound bytes, [`WsConfig::max_outbound`]), write
//!   batching (vectored writes of everything queued), cancel-safe futures,
//!   close and handshake timeouts;
//! - [`accept`], [`accept_with`], [`connect`], [`client_handshake`]: the
//!   opening handshakes, generic over the runtime and the transport;
//! - `tls` (feature `tls`): TLS as a [`Transport`] (rustls with ring,
//!   written once on rustls's sans-IO API for every runtime), `wss://`
//!   clients and TLS servers with the same [`WebSocket`] type;
//! - [`WsUrl`] and [`WsError`].
//!
//! Applications normally use an adapter's own entry points
//! (`runtime_tokio::accept`, `runtime_smol::connect`, ...), which fill in
//! the runtime. The server application (hub, Redis bus, command line) is
//! the separate `ws-server` crate on top of this one.
//!
//! ```
//! use ws_async::{WsConfig, WsUrl};
//!
//! let url = WsUrl::parse("ws://127.0.0.1:9001/chat?room=a").unwrap();
//! assert_eq!(url.authority(), "127.0.0.1:9001");
//! assert_eq!(url.target, "/chat?room=a");
//! let config = WsConfig::default();
//! assert_eq!(config.max_outbound, 1 << 20);
//! assert!(WsUrl::parse("http://example.com/").is_err());
//! ```
//!
//! Code written against the traits runs on every adapter, the way the
//! server application in `ws-server` does:
//!
//! ```
//! use ws_async::{Runtime, Transport, WebSocket, WsError};
//!
//! /// Echoes every message until the peer closes; returns its close code.
//! async fn echo<T: Transport, R: Runtime>(mut ws: WebSocket<T, R>) -> Result<u16, WsError> {
//!     while let Some(message) = ws.recv().await? {
//!         ws.feed(message).await?; // written by the next recv, batched
//!     }
//!     Ok(ws.close_info().map_or(1006, |info| info.code.0))
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(any(test, feature = "certgen"))]
pub mod certgen;
mod error;
mod handshake;
mod runtime;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
mod url;

pub use error::WsError;
pub use handshake::{Decision, accept, accept_with, client_handshake, connect};
pub use runtime::{LISTEN_BACKLOG, Runtime, Transport};
pub use stream::{CloseInfo, Incoming, ReadHalf, WebSocket, WriteHalf, WsConfig};
pub use url::{UrlError, WsUrl};
