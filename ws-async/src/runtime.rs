//! What an adapter must provide: a clock, timers, task spawning and TCP.
//!
//! This is the whole difference between the tokio and the smol adapter
//! (after quinn's `Runtime`); everything else is written once, generically,
//! in this crate.

/// Listen backlog of a `Runtime::bind` listener (the kernel caps it at
/// `net.core.somaxconn`): deep enough that a burst of connects is queued,
/// not dropped and retried a second later.
pub const LISTEN_BACKLOG: u32 = 4096;

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;

/// A byte stream the WebSocket layer reads from and writes to.
pub trait Transport: Send + Unpin + 'static {
    /// Reads into the spare capacity of `buf` (appending); `Ok(0)` is end
    /// of stream. The caller reserves capacity first.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>>;

    /// Reads into `buf` (initialised memory); `Ok(0)` is end of stream.
    /// Used with a per-thread scratch buffer while the connection's own
    /// buffer is empty, so an idle connection holds no receive buffer.
    fn poll_read_slice(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;

    /// Writes from `bufs` in order, as one vectored write where the stream
    /// supports it.
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;

    /// Writes out what the transport itself still buffers from earlier
    /// writes (a TLS record that did not fit the socket, say). A plain
    /// socket buffers nothing, hence the default. The WebSocket calls this
    /// once its own queue is written.
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Flushes and shuts down the write side (TCP FIN).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// An async runtime: clock, timers, spawning and TCP sockets.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream.
    type Stream: Transport;
    /// A TCP listener.
    type Listener: Send + Sync + 'static;
    /// A timer future.
    type Sleep: Future<Output = ()> + Send + 'static;

    /// The runtime's current time (tokio's clock for tokio, so its paused
    /// test clock reaches the cores).
    fn now(&self) -> Instant;

    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;

    /// Runs a task in the background.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F);

    /// Binds a TCP listener.
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The address a listener is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Accepts the next TCP connection (with `TCP_NODELAY` set).
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// Opens a TCP connection to `host:port` (with `TCP_NODELAY` set).
    fn connect(&self, authority: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}
