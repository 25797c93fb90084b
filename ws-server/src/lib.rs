//! Runtime-independent adapter code, written once for tokio and smol.
//!
//! An adapter crate implements [`Runtime`] (clock, timers, spawning, TCP)
//! and [`Transport`] (read into a buffer, vectored write, shutdown) for its
//! runtime; everything else lives here, generic over those two traits:
//!
//! - [`WebSocket`] (with [`ReadHalf`] and [`WriteHalf`]): a
//!   `ws_proto::Connection` driven over a transport, with backpressure
//!   (a bound on queued outbound bytes), write batching (vectored writes of
//!   everything queued), cancel-safe futures, close and handshake timeouts;
//! - [`accept`], [`accept_with`], [`connect`], [`client_handshake`]: the
//!   opening handshakes;
//! - the applications the binaries run: the echo server
//!   ([`echo::serve_echo`]), the Autobahn client procedure
//!   ([`autobahn::run_autobahn_client`]) and the command line ([`cli`]).
//!
//! ```
//! use ws_runtime_common::{WsConfig, WsUrl};
//!
//! let url = WsUrl::parse("ws://127.0.0.1:9001/chat?room=a").unwrap();
//! assert_eq!(url.authority(), "127.0.0.1:9001");
//! assert_eq!(url.target, "/chat?room=a");
//! let config = WsConfig::default();
//! assert_eq!(config.max_outbound, 1 << 20);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod autobahn;
pub mod bus;
pub mod cli;
pub mod echo;
mod error;
mod handshake;
mod runtime;
pub mod server;
pub mod shutdown;
mod stream;
pub mod task;
mod url;

pub use error::WsError;
pub use handshake::{Decision, accept, accept_with, client_handshake, connect};
pub use runtime::{Runtime, Transport};
pub use stream::{CloseInfo, Incoming, ReadHalf, WebSocket, WriteHalf, WsConfig};
pub use url::WsUrl;

/// Generates an adapter crate's public entry points (`accept`,
/// `accept_with`, `connect`, `client`) for its runtime value `$rt`, its
/// transport wrapper `$io` and the stream bounds of its IO traits, so both
/// adapters offer the same functions from one definition.
#[macro_export]
macro_rules! adapter_functions {
    ($rt:expr, $io:ident, $($bound:tt)+) => {
        /// Server: accepts a WebSocket on `stream` (any valid upgrade request).
        pub async fn accept<S>(stream: S, config: WsConfig) -> Result<WebSocket<S>, WsError>
        where
            S: $($bound)+ + Send + Unpin + 'static,
        {
            $crate::accept($rt, $io(stream), config).await
        }

        /// Server: reads the request on `stream` and lets `decide` accept it
        /// (with a subprotocol, say) or answer with plain HTTP.
        pub async fn accept_with<S, F>(stream: S, config: WsConfig, decide: F) -> Result<WebSocket<S>, WsError>
        where
            S: $($bound)+ + Send + Unpin + 'static,
            F: FnOnce(&Request) -> Decision,
        {
            $crate::accept_with($rt, $io(stream), config, decide).await
        }

        /// Client: connects to a `ws://host:port/path?query` URL.
        pub async fn connect(url: &str, config: WsConfig) -> Result<(WebSocket, ServerResponse), WsError> {
            $crate::connect($rt, url, config).await
        }

        /// Client: the handshake over an existing stream.
        pub async fn client<S>(
            stream: S,
            request: ws_proto::ClientRequest,
            config: WsConfig,
        ) -> Result<(WebSocket<S>, ServerResponse), WsError>
        where
            S: $($bound)+ + Send + Unpin + 'static,
        {
            $crate::client_handshake($rt, $io(stream), request, config).await
        }
    };
}

/// Generates the write half of a [`Transport`] impl for a wrapper whose
/// field `0` implements its runtime's `AsyncWrite` (in scope at the call
/// site); `$shutdown` is that trait's shutdown method (`poll_shutdown` for
/// tokio, `poll_close` for futures-io).
#[macro_export]
macro_rules! transport_write_methods {
    ($shutdown:ident) => {
        fn poll_write_vectored(
            &mut self,
            cx: &mut ::std::task::Context<'_>,
            bufs: &[::std::io::IoSlice<'_>],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
        }

        fn poll_shutdown(
            &mut self,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.0).$shutdown(cx)
        }
    };
}
