//! WebSocket on tokio: `ws-proto` driven over tokio sockets and timers.
//!
//! This crate only binds the runtime: [`TokioRuntime`] (clock, timers,
//! spawning, TCP) and [`TokioIo`] (any tokio `AsyncRead + AsyncWrite`
//! stream as a transport). The WebSocket type, handshakes, backpressure,
//! batching and the server applications are shared with the smol adapter
//! in `ws-runtime-common`.
//!
//! ```
//! use runtime_tokio::{accept, connect, Message, WsConfig};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
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
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub use ws_proto::{AcceptOptions, CloseCode, HttpResponse, Message, Request, ServerResponse};
pub use ws_runtime_common::{CloseInfo, Decision, Incoming, WsConfig, WsError};

/// The tokio runtime, for the shared adapter code. Spawns onto the
/// current tokio runtime.
#[derive(Debug, Clone, Default)]
pub struct TokioRuntime;

/// Any tokio byte stream as a WebSocket transport.
#[derive(Debug)]
pub struct TokioIo<S>(pub S);

/// A WebSocket over a tokio stream (a `TcpStream` by default).
pub type WebSocket<S = TcpStream> = ws_runtime_common::WebSocket<TokioIo<S>, TokioRuntime>;
/// A WebSocket over TLS over a tokio stream, from [`accept_tls`] and
/// [`connect_tls`]: the same WebSocket type, over the TLS transport.
pub type TlsWebSocket<S = TcpStream> =
    ws_runtime_common::WebSocket<ws_runtime_common::tls::TlsStream<TokioIo<S>>, TokioRuntime>;
/// The receiving half of a [`WebSocket`].
pub type ReadHalf<S = TcpStream> = ws_runtime_common::ReadHalf<TokioIo<S>, TokioRuntime>;
/// The sending half of a [`WebSocket`].
pub type WriteHalf<S = TcpStream> = ws_runtime_common::WriteHalf<TokioIo<S>, TokioRuntime>;

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> ws_runtime_common::Transport
    for TokioIo<S>
{
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

    ws_runtime_common::transport_write_methods!(poll_shutdown);
}

impl ws_runtime_common::Runtime for TokioRuntime {
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
        socket.listen(4096)
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

ws_runtime_common::adapter_functions!(TokioRuntime, TokioIo, AsyncRead + AsyncWrite);
