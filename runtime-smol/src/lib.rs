//! WebSocket on smol: `ws-proto` driven over async-io sockets and timers.
//!
//! This crate binds the runtime: [`SmolRuntime`] (clock, timers,
//! spawning on an `async-executor`, TCP from `async-net`) and [`SmolIo`]
//! (any `futures-io` stream as a transport), and offers the entry points
//! [`accept`], [`accept_with`], [`connect`] and [`client`] for smol
//! streams. The WebSocket type, handshakes, backpressure and batching are
//! the runtime-generic ones of `ws-async`, shared with the tokio adapter.
//! Nothing here links tokio.
//!
//! # Features
//!
//! - `hub-client` (on with `server`): [`hub_client::connect`], the hub
//!   client (reconnect, resume, exactly-once publish) on this runtime.
//! - `server` (default): the server application (`ws-server`, with the
//!   Redis bus on smol) and the `ws-smol` binary. Depend on this crate
//!   with `default-features = false` to use it as a WebSocket library
//!   only, without the application, clap, toml or redis.
//!
//! ```
//! use runtime_smol::{accept, connect, Message, WsConfig};
//!
//! smol::block_on(async {
//!     let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let server = smol::spawn(async move {
//!         let (tcp, _) = listener.accept().await.unwrap();
//!         let mut ws = accept(tcp, WsConfig::default()).await.unwrap();
//!         while let Some(message) = ws.recv().await.unwrap() {
//!             ws.send(message).await.unwrap(); // echo
//!         }
//!     });
//!
//!     let (mut ws, _) = connect(&format!("ws://{addr}/"), WsConfig::default()).await.unwrap();
//!     ws.send(Message::text("hello")).await.unwrap();
//!     assert_eq!(ws.recv().await.unwrap(), Some(Message::text("hello")));
//!     ws.close(runtime_smol::CloseCode::NORMAL, "done").await.unwrap();
//!     assert!(ws.close_info().unwrap().clean);
//!     server.await;
//! });
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_executor::Executor;
use std::net::{TcpListener, TcpStream};

use async_io::Async;
use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use socket2::{Domain, Protocol, Socket, Type};

pub use ws_async::{CloseInfo, Decision, Incoming, WsConfig, WsError};
pub use ws_proto::{AcceptOptions, CloseCode, HttpResponse, Message, Request, ServerResponse};

/// The smol runtime, for the shared adapter code: async-io's reactor and
/// timers, tasks on an `async-executor` (smol's global one by default).
#[derive(Debug, Clone, Default)]
pub struct SmolRuntime {
    executor: Option<Arc<Executor<'static>>>,
}

impl SmolRuntime {
    /// Spawns onto `executor` (whose threads the caller runs).
    pub fn with_executor(executor: Arc<Executor<'static>>) -> Self {
        Self {
            executor: Some(executor),
        }
    }
}

/// Any `futures-io` byte stream as a WebSocket transport.
#[derive(Debug)]
pub struct SmolIo<S>(pub S);

/// An async-io TCP stream as the transport [`SmolRuntime`] accepts and
/// connects: a [`SmolIo`] that, after a read which drained the socket,
/// waits for readiness before reading again. async-io keeps no readiness
/// state of its own (a read is always tried first), so without this every
/// message at depth 1 would cost one more `recvfrom` that fails with
/// `EAGAIN`. tokio's streams do the same on their own.
#[derive(Debug)]
pub struct SmolTcp {
    io: SmolIo<Async<TcpStream>>,
    /// The last read returned less than it had room for: the socket was
    /// empty then, so the next read waits for readiness first.
    drained: bool,
}

impl SmolTcp {
    /// Wraps a connected async-io TCP stream.
    pub fn new(stream: Async<TcpStream>) -> Self {
        Self {
            io: SmolIo(stream),
            drained: false,
        }
    }

    /// Waits for readiness after a draining read.
    fn poll_wait_drained(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.drained {
            match self.io.0.poll_readable(cx) {
                Poll::Ready(Ok(())) => self.drained = false,
                other => return other,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Notes whether a read of up to `room` bytes drained the socket.
    fn note_read(
        &mut self,
        polled: Poll<io::Result<usize>>,
        room: usize,
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = polled {
            self.drained = n > 0 && n < room;
        }
        polled
    }
}

impl ws_async::Transport for SmolTcp {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_wait_drained(cx))?;
        let room = read_room(buf);
        let polled = self.io.poll_read_into(cx, buf);
        self.note_read(polled, room)
    }

    fn poll_read_slice(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_wait_drained(cx))?;
        let room = buf.len();
        let polled = self.io.poll_read_slice(cx, buf);
        self.note_read(polled, room)
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io.poll_write_vectored(cx, bufs)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.io.poll_write(cx, buf)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.io.poll_flush(cx))?;
        // async-io's `poll_close` only flushes: send our FIN here, or the
        // peer would see the end of TCP only when the socket is dropped.
        Poll::Ready(self.io.0.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

/// A WebSocket over a smol stream (an async-io `TcpStream` by default).
pub type WebSocket<S = Async<TcpStream>> = ws_async::WebSocket<SmolIo<S>, SmolRuntime>;
/// A WebSocket over TLS over a smol stream, from [`accept_tls`] and
/// [`connect_tls`]: the same WebSocket type, over the TLS transport.
#[cfg(feature = "tls")]
pub type TlsWebSocket<S = Async<TcpStream>> =
    ws_async::WebSocket<ws_async::tls::TlsStream<SmolIo<S>>, SmolRuntime>;
/// The receiving half of a [`WebSocket`].
pub type ReadHalf<S = Async<TcpStream>> = ws_async::ReadHalf<SmolIo<S>, SmolRuntime>;
/// The sending half of a [`WebSocket`].
pub type WriteHalf<S = Async<TcpStream>> = ws_async::WriteHalf<SmolIo<S>, SmolRuntime>;

/// The most a single read zeroes and fills: `futures-io` reads need
/// initialised memory, so each read clears the part it may fill. A read
/// rarely returns more than a socket buffer's worth, and zeroing room that
/// stays unused is pure cost (it made 16 KiB echoes 20% dearer at 256 KiB).
const MAX_READ: usize = 64 * 1024;

/// How much one read into `buf` may fill.
fn read_room(buf: &BytesMut) -> usize {
    (buf.capacity() - buf.len()).clamp(1, MAX_READ)
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> ws_async::Transport for SmolIo<S> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let start = buf.len();
        let room = read_room(buf);
        buf.resize(start + room, 0);
        let result = Pin::new(&mut self.0).poll_read(cx, &mut buf[start..]);
        let filled = match &result {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        buf.truncate(start + filled);
        result
    }

    fn poll_read_slice(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
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
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// An async-io timer that completes with `()`.
#[derive(Debug)]
pub struct Sleep(async_io::Timer);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl ws_async::Runtime for SmolRuntime {
    // async-io's `Async` directly, not `async_net`'s `Arc` around it: one
    // allocation less per connection.
    type Stream = SmolTcp;
    type Listener = Async<TcpListener>;
    type Sleep = Sleep;

    #[allow(clippy::disallowed_methods)] // the adapter owns the clock
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep(async_io::Timer::at(deadline))
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        match &self.executor {
            Some(executor) => executor.spawn(future).detach(),
            None => smol::spawn(future).detach(),
        }
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<Async<TcpListener>> {
        // Not `Async::<TcpListener>::bind`: std listens with a backlog of 128.
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(ws_async::LISTEN_BACKLOG as i32)?;
        Async::new(TcpListener::from(socket))
    }

    fn local_addr(listener: &Async<TcpListener>) -> io::Result<SocketAddr> {
        listener.get_ref().local_addr()
    }

    async fn accept(listener: &Async<TcpListener>) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.get_ref().set_nodelay(true)?;
        Ok((SmolTcp::new(stream), peer))
    }

    async fn connect(&self, authority: &str) -> io::Result<Self::Stream> {
        let mut last = io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{authority}: no address"),
        );
        for addr in async_net::resolve(authority).await? {
            match Async::<TcpStream>::connect(addr).await {
                Ok(stream) => {
                    stream.get_ref().set_nodelay(true)?;
                    return Ok(SmolTcp::new(stream));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Server: accepts a WebSocket on `stream` (any valid upgrade request).
pub async fn accept<S>(stream: S, config: WsConfig) -> Result<WebSocket<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    ws_async::accept(SmolRuntime::default(), SmolIo(stream), config).await
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
    ws_async::accept_with(SmolRuntime::default(), SmolIo(stream), config, decide).await
}

/// A WebSocket over async-io TCP as [`connect`] opens it.
pub type TcpWebSocket = ws_async::WebSocket<SmolTcp, SmolRuntime>;
/// A WebSocket over TLS over async-io TCP as [`connect_tls`] opens it.
#[cfg(feature = "tls")]
pub type TcpTlsWebSocket = ws_async::WebSocket<ws_async::tls::TlsStream<SmolTcp>, SmolRuntime>;

/// Client: connects to a `ws://host:port/path?query` URL over async-io
/// TCP, spawning on smol's global executor.
pub async fn connect(
    url: &str,
    config: WsConfig,
) -> Result<(TcpWebSocket, ServerResponse), WsError> {
    ws_async::connect(SmolRuntime::default(), url, config).await
}

/// Client: the handshake over an existing futures-io stream.
pub async fn client<S>(
    stream: S,
    request: ws_proto::ClientRequest,
    config: WsConfig,
) -> Result<(WebSocket<S>, ServerResponse), WsError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    ws_async::client_handshake(SmolRuntime::default(), SmolIo(stream), request, config).await
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
    ws_async::tls::accept_tls(SmolRuntime::default(), SmolIo(stream), tls, config).await
}

/// Client over TLS: connects to a `wss://host:port/path?query` URL,
/// verifying the server's certificate for the URL's host.
#[cfg(feature = "tls")]
pub async fn connect_tls(
    url: &str,
    tls: Arc<ws_async::tls::rustls::ClientConfig>,
    config: WsConfig,
) -> Result<(TcpTlsWebSocket, ServerResponse), WsError> {
    ws_async::tls::connect_tls(SmolRuntime::default(), url, tls, config).await
}

#[cfg(feature = "hub-client")]
ws_hub_client::adapter_hub_client!(crate::SmolRuntime::default());
