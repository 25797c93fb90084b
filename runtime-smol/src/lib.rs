//! WebSocket on smol: `ws-proto` driven over async-io sockets and timers.
//!
//! This crate only binds the runtime: [`SmolRuntime`] (clock, timers,
//! spawning on an `async-executor`, TCP from `async-net`) and [`SmolIo`]
//! (any `futures-io` stream as a transport). The WebSocket type,
//! handshakes, backpressure, batching and the server applications are
//! shared with the tokio adapter in `ws-runtime-common`.
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
use std::io;
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

pub use ws_proto::{AcceptOptions, CloseCode, HttpResponse, Message, Request, ServerResponse};
pub use ws_runtime_common::{CloseInfo, Decision, Incoming, WsConfig, WsError};

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

/// A WebSocket over a smol stream (an async-io `TcpStream` by default).
pub type WebSocket<S = Async<TcpStream>> = ws_runtime_common::WebSocket<SmolIo<S>, SmolRuntime>;
/// A WebSocket over TLS over a smol stream, from [`accept_tls`] and
/// [`connect_tls`]: the same WebSocket type, over the TLS transport.
pub type TlsWebSocket<S = Async<TcpStream>> =
    ws_runtime_common::WebSocket<ws_runtime_common::tls::TlsStream<SmolIo<S>>, SmolRuntime>;
/// The receiving half of a [`WebSocket`].
pub type ReadHalf<S = Async<TcpStream>> = ws_runtime_common::ReadHalf<SmolIo<S>, SmolRuntime>;
/// The sending half of a [`WebSocket`].
pub type WriteHalf<S = Async<TcpStream>> = ws_runtime_common::WriteHalf<SmolIo<S>, SmolRuntime>;

/// The most a single read zeroes and fills: `futures-io` reads need
/// initialised memory, so each read clears the part it may fill. A read
/// rarely returns more than a socket buffer's worth, and zeroing room that
/// stays unused is pure cost (it made 16 KiB echoes 20% dearer at 256 KiB).
const MAX_READ: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> ws_runtime_common::Transport
    for SmolIo<S>
{
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let start = buf.len();
        let room = (buf.capacity() - start).clamp(1, MAX_READ);
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

    ws_runtime_common::transport_write_methods!(poll_close);
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

impl ws_runtime_common::Runtime for SmolRuntime {
    // async-io's `Async` directly, not `async_net`'s `Arc` around it: one
    // allocation less per connection.
    type Stream = SmolIo<Async<TcpStream>>;
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
        Async::<TcpListener>::bind(addr)
    }

    fn local_addr(listener: &Async<TcpListener>) -> io::Result<SocketAddr> {
        listener.get_ref().local_addr()
    }

    async fn accept(listener: &Async<TcpListener>) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.get_ref().set_nodelay(true)?;
        Ok((SmolIo(stream), peer))
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
                    return Ok(SmolIo(stream));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

ws_runtime_common::adapter_functions!(SmolRuntime::default(), SmolIo, AsyncRead + AsyncWrite);
