//! WebSocket on tokio: `ws-proto` driven over tokio sockets and timers.
//!
//! This crate binds the runtime: [`TokioRuntime`] (clock, timers,
//! spawning, TCP) and [`TokioIo`] (any tokio `AsyncRead + AsyncWrite`
//! stream as a transport), and offers the entry points [`accept`],
//! [`accept_with`], [`connect`] and [`client`] for tokio streams. The
//! WebSocket type, handshakes, backpressure and batching are the
//! runtime-generic ones of `ws-async`, shared with the smol adapter.
//!
//! # Features
//!
//! - `hub-client` (on with `server`): [`hub_client::connect`], the hub
//!   client (reconnect, resume, exactly-once publish) on this runtime.
//! - `server` (default): the server application (`ws-server`, with the
//!   Redis bus on tokio) and the `ws-tokio` binary. Depend on this crate
//!   with `default-features = false` to use it as a WebSocket library
//!   only, without the application, clap, toml or redis.
//!
//! ```
//! use runtime_tokio::{accept, connect, Message, WsConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await.unwrap();
//!     let mut ws = accept(tcp, WsConfig::default()).await.unwrap();
//!     while let Some(message) = ws.recv().await.unwrap() {
//!         ws.send(message).await.unwrap(); // echo
//!     }
//! });
//!
//! let (mut ws, _) = connect(&format!("ws://{addr}/"), WsConfig::default()).await.unwrap();
//! ws.send(Message::text("hello")).await.unwrap();
//! assert_eq!(ws.recv().await.unwrap(), Some(Message::text("hello")));
//! ws.close(runtime_tokio::CloseCode::NORMAL, "done").await.unwrap();
//! assert!(ws.close_info().unwrap().clean);
//! # });
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub use ws_async::{CloseInfo, Decision, Incoming, WsConfig, WsError};
pub use ws_proto::{AcceptOptions, CloseCode, HttpResponse, Message, Request, ServerResponse};

/// The tokio runtime, for the shared adapter code. Spawns onto the
/// current tokio runtime.
#[derive(Debug, Clone, Default)]
pub struct TokioRuntime;

/// Any tokio byte stream as a WebSocket transport.
#[derive(Debug)]
pub struct TokioIo<S>(pub S);

/// A WebSocket over a tokio stream (a `TcpStream` by default).
pub type WebSocket<S = TcpStream> = ws_async::WebSocket<TokioIo<S>, TokioRuntime>;
/// A WebSocket over TLS over a tokio stream, from [`accept_tls`] and
/// [`connect_tls`]: the same WebSocket type, over the TLS transport.
#[cfg(feature = "tls")]
pub type TlsWebSocket<S = TcpStream> =
    ws_async::WebSocket<ws_async::tls::TlsStream<TokioIo<S>>, TokioRuntime>;
/// The receiving half of a [`WebSocket`].
pub type ReadHalf<S = TcpStream> = ws_async::ReadHalf<TokioIo<S>, TokioRuntime>;
/// The sending half of a [`WebSocket`].
pub type WriteHalf<S = TcpStream> = ws_async::WriteHalf<TokioIo<S>, TokioRuntime>;

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> ws_async::Transport for TokioIo<S> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_read_slice(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut read_buf = tokio::io::ReadBuf::new(buf);
        match Pin::new(&mut self.0).poll_read(cx, &mut read_buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read_buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl ws_async::Runtime for TokioRuntime {
    type Stream = TokioIo<TcpStream>;
    type Listener = TcpListener;
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        tokio::spawn(future);
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(ws_async::LISTEN_BACKLOG)
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((TokioIo(stream), peer))
    }

    async fn connect(&self, authority: &str) -> io::Result<Self::Stream> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok(TokioIo(stream))
    }
}

/// Server: accepts a WebSocket on `stream` (any valid upgrade request).
pub async fn accept<S>(stream: S, config: WsConfig) -> Result<WebSocket<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    ws_async::accept(TokioRuntime, TokioIo(stream), config).await
}

/// Server: reads the request on `stream` and lets `decide` accept it (with
/// a subprotocol, say) or answer with plain HTTP.
pub async fn accept_with<S, F>(
    stream: S,
    config: WsConfig,
    decide: F,
) -> Result<WebSocket<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: FnOnce(&Request) -> Decision,
{
    ws_async::accept_with(TokioRuntime, TokioIo(stream), config, decide).await
}

/// Client: connects to a `ws://host:port/path?query` URL over tokio TCP.
pub async fn connect(url: &str, config: WsConfig) -> Result<(WebSocket, ServerResponse), WsError> {
    ws_async::connect(TokioRuntime, url, config).await
}

/// Client: the handshake over an existing tokio stream.
pub async fn client<S>(
    stream: S,
    request: ws_proto::ClientRequest,
    config: WsConfig,
) -> Result<(WebSocket<S>, ServerResponse), WsError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    ws_async::client_handshake(TokioRuntime, TokioIo(stream), request, config).await
}

/// Server over TLS: the TLS handshake on `stream`, then the WebSocket
/// handshake (one handshake timeout covers both).
#[cfg(feature = "tls")]
pub async fn accept_tls<S>(
    stream: S,
    tls: Arc<ws_async::tls::rustls::ServerConfig>,
    config: WsConfig,
) -> Result<TlsWebSocket<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    ws_async::tls::accept_tls(TokioRuntime, TokioIo(stream), tls, config).await
}

/// Client over TLS: connects to a `wss://host:port/path?query` URL,
/// verifying the server's certificate for the URL's host.
#[cfg(feature = "tls")]
pub async fn connect_tls(
    url: &str,
    tls: Arc<ws_async::tls::rustls::ClientConfig>,
    config: WsConfig,
) -> Result<(TlsWebSocket, ServerResponse), WsError> {
    ws_async::tls::connect_tls(TokioRuntime, url, tls, config).await
}

#[cfg(feature = "hub-client")]
ws_hub_client::adapter_hub_client!(crate::TokioRuntime);
