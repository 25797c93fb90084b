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

    /// Writes from `buf`. The WebSocket calls this when all it has queued
    /// is one slice (a small frame): on a socket, `write(2)` costs the
    /// kernel less than a one-element `writev(2)` (see
    /// `benches/src/bin/write-syscall.rs`). The default is a one-slice
    /// vectored write; a socket, or a wrapper of one, forwards to its
    /// stream's plain write.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

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

/// Writes `bufs` to `io`: one slice with [`Transport::poll_write`], more
/// with [`Transport::poll_write_vectored`]. Every write the crate makes
/// goes through here.
pub(crate) fn poll_write_slices<T: Transport + ?Sized>(
    io: &mut T,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    match bufs {
        [one] => io.poll_write(cx, one),
        _ => io.poll_write_vectored(cx, bufs),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// Records which write each call made.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<&'static str>,
    }

    impl Transport for Recorder {
        fn poll_read_into(
            &mut self,
            _: &mut Context<'_>,
            _: &mut BytesMut,
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(0))
        }
        fn poll_read_slice(
            &mut self,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(0))
        }
        fn poll_write_vectored(
            &mut self,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.calls.push("writev");
            Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
        }
        fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.calls.push("write");
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_shutdown(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn one_slice_is_a_plain_write_and_more_are_one_vectored_write() {
        let mut io = Recorder::default();
        let mut cx = Context::from_waker(Waker::noop());
        let (a, b) = (b"frame".as_slice(), b"body".as_slice());
        let one = poll_write_slices(&mut io, &mut cx, &[IoSlice::new(a)]);
        let two = poll_write_slices(&mut io, &mut cx, &[IoSlice::new(a), IoSlice::new(b)]);
        assert!(matches!(one, Poll::Ready(Ok(5))));
        assert!(matches!(two, Poll::Ready(Ok(9))));
        assert_eq!(io.calls, ["write", "writev"]);
    }
}
