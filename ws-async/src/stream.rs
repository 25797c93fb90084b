//! [`WebSocket`]: a `ws_proto::Connection` driven over a [`Transport`].
//!
//! The connection and the transport live behind one short-held mutex
//! (never held across an `.await`), so the read half and the write half can
//! be polled from different tasks, like `tokio::io::split`. Whoever polls
//! writes out what is queued: the reader flushes automatic pongs and close
//! echoes, the writer flushes its messages, and each wakes the other when
//! it frees space, because a transport remembers only one write waker.
//!
//! Reads go straight into the connection's buffer (no copy); writes are
//! vectored over the connection's queue, so frames queued since the last
//! write leave together and shared payloads are never copied.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ws_proto::{CloseCode, Connection, DeflateParams, Event, Message, PreparedBody, Role, State};

use crate::error::WsError;
use crate::runtime::{Runtime, Transport, poll_write_slices};

/// Settings of the async layer on top of [`ws_proto::Config`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WsConfig {
    /// Protocol limits and timeouts.
    pub proto: ws_proto::Config,
    /// Sending waits (or, for `try_*` calls, fails) while more than this
    /// many bytes are queued for the transport. Default 1 MiB. A single
    /// message larger than the bound is still accepted when the queue is
    /// below it.
    pub max_outbound: usize,
    /// How long to wait for the peer's end of TCP, discarding what it still
    /// sends: a client after the close handshake (RFC 6455 7.1.1), and
    /// either role after failing the connection (a 1002, 1007 or 1009
    /// close) while the peer may still be sending. Closing a socket with
    /// unread data makes the kernel reset the connection, and the peer
    /// could then lose the close frame that says why. Default 1 s.
    pub linger: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            proto: ws_proto::Config::default(),
            max_outbound: 1 << 20,
            linger: Duration::from_secs(1),
        }
    }
}

impl WsConfig {
    /// Sets permessage-deflate from a setting: `off`, `shared` (no context
    /// takeover; an idle connection holds no compression context) or
    /// `dedicated` (context takeover with `window_bits`, 9 to 15). See
    /// [`ws_proto::DeflateConfig::from_setting`].
    pub fn set_deflate(&mut self, mode: &str, window_bits: u8) -> Result<(), WsError> {
        self.proto.deflate = ws_proto::DeflateConfig::from_setting(mode, window_bits)?;
        Ok(())
    }
}

/// How a connection ended, from [`WebSocket::close_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code (1006 when no close frame was exchanged).
    pub code: CloseCode,
    /// The reason.
    pub reason: String,
    /// Whether the close handshake completed.
    pub clean: bool,
}

/// Something received: a message or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A data message.
    Message(Message),
    /// A ping (already answered when `auto_pong` is on).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
}

/// Which half of the connection is polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Half {
    Reader,
    Writer,
}

/// Stores the task's waker in `slot`, cloning it only when it changed.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Largest slice count handed to one vectored write.
const MAX_IOV: usize = 64;
/// Slice count of the first try (see `Inner::poll_flush_out`).
const FEW_IOV: usize = 4;
/// Smallest read.
const MIN_READ: usize = 4096;
/// Size of each thread's scratch buffer for reads into an empty
/// connection buffer.
const SCRATCH_SIZE: usize = 64 * 1024;

/// A request head still incomplete after this many reads is read on a
/// timer instead of on every arrival (see [`HeadPace`]).
const PACE_AFTER_READS: u32 = 1;
/// Mean interval of those timed reads; each connection draws its own
/// between half and one and a half times this.
const PACE_INTERVAL: Duration = Duration::from_millis(500);

thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; SCRATCH_SIZE].into_boxed_slice());
}

pub(crate) struct Inner<T, R: Runtime> {
    pub(crate) conn: Connection,
    io: T,
    rt: R,
    /// From [`WsConfig`]; the protocol settings live in `conn`.
    max_outbound: usize,
    linger: Duration,
    timer: Option<(Instant, Pin<Box<R::Sleep>>)>,
    read_eof: bool,
    shutdown_done: bool,
    linger_until: Option<Instant>,
    /// After failing the connection: discard what the peer still sends
    /// until its FIN or this instant, after our own shutdown.
    discard_until: Option<Instant>,
    /// When a closed connection gives up writing what is still queued.
    finish_by: Option<Instant>,
    failed: bool,
    // Boxed: set at most once, at the end, and every idle connection
    // carries these fields.
    pending_error: Option<Box<WsError>>,
    close: Option<Box<CloseInfo>>,
    /// A `Request` or `Accepted` event, for the handshake driver.
    pub(crate) handshake: Option<Box<Event>>,
    /// Server: set while a request head arrives in pieces.
    pace: Option<Box<HeadPace<R>>>,
    reader_waker: Option<Waker>,
    writer_waker: Option<Waker>,
    /// The transport's own flush returned `Pending` last time.
    transport_flush_pending: bool,
}

/// Pacing of a request head that arrives in pieces.
///
/// A client sends its head in one piece, or a few. An attacker holding
/// thousands of connections open with a byte at a time (slowloris) makes
/// every one of them readable in the same instant, again and again; woken
/// by the socket, thousands of tasks would queue ahead of the connections
/// that carry real traffic. So once a head has taken
/// [`PACE_AFTER_READS`] reads, it is read only when its timer fires, and
/// each connection's interval is its own (between half and one and a half
/// [`PACE_INTERVAL`]): the reads spread out in time whatever the attacker
/// does. A legitimate head that comes in more pieces than that waits at
/// most one interval per further piece.
struct HeadPace<R: Runtime> {
    reads: u32,
    interval: Duration,
    sleep: Option<Pin<Box<R::Sleep>>>,
}

impl<R: Runtime> HeadPace<R> {
    fn new() -> Box<Self> {
        let mut seed = [0u8; 2];
        // Without the OS source every interval is the shortest: still paced.
        let _ = getrandom::fill(&mut seed);
        let spread =
            u64::from(u16::from_le_bytes(seed)) * PACE_INTERVAL.as_millis() as u64 / 65_536;
        Box::new(Self {
            reads: 0,
            interval: PACE_INTERVAL / 2 + Duration::from_millis(spread),
            sleep: None,
        })
    }
}

impl<T: Transport, R: Runtime> Inner<T, R> {
    pub(crate) fn new(conn: Connection, io: T, rt: R, config: WsConfig) -> Self {
        Self {
            conn,
            io,
            rt,
            max_outbound: config.max_outbound,
            linger: config.linger,
            timer: None,
            read_eof: false,
            shutdown_done: false,
            linger_until: None,
            discard_until: None,
            finish_by: None,
            failed: false,
            pending_error: None,
            close: None,
            handshake: None,
            pace: None,
            reader_waker: None,
            writer_waker: None,
            transport_flush_pending: false,
        }
    }

    pub(crate) fn now(&self) -> Instant {
        self.rt.now()
    }

    /// Writes queued bytes until the queue is empty or the transport is full.
    /// `me` is the half that polls: its own waker is not woken (it is
    /// running now, and re-registers if it returns `Pending`), which at
    /// depth 1 saves a second, empty poll of the task after every echo.
    pub(crate) fn poll_flush_out(
        &mut self,
        cx: &mut Context<'_>,
        me: Half,
    ) -> Poll<io::Result<()>> {
        let had = self.conn.buffered_outbound();
        while self.conn.buffered_outbound() > 0 {
            // Most writes are one or two slices: fill a small array first,
            // the large one only when the small one was not enough.
            let mut few = [IoSlice::new(&[]); FEW_IOV];
            let n = self.conn.transmit_slices(&mut few);
            let polled = if n < FEW_IOV {
                poll_write_slices(&mut self.io, cx, &few[..n])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let n = self.conn.transmit_slices(&mut slices);
                poll_write_slices(&mut self.io, cx, &slices[..n])
            };
            match polled {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => self.conn.consume_transmit(written),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if self.conn.buffered_outbound() < had {
                        self.wake_others_than(me);
                    }
                    return Poll::Pending;
                }
            }
        }
        // What the transport itself still holds (a TLS record the socket
        // did not take). Whoever finishes that flush wakes the other half,
        // which may be waiting on the same socket.
        match self.io.poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                self.transport_flush_pending = true;
                if had > 0 {
                    self.wake_others_than(me);
                }
                return Poll::Pending;
            }
        }
        if had > 0 || std::mem::take(&mut self.transport_flush_pending) {
            self.wake_others_than(me);
        }
        Poll::Ready(Ok(()))
    }

    fn wake_others(&mut self) {
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
        if let Some(w) = self.reader_waker.take() {
            w.wake();
        }
    }

    /// Wakes the halves waiting on the connection, except `me`.
    fn wake_others_than(&mut self, me: Half) {
        let other = match me {
            Half::Reader => &mut self.writer_waker,
            Half::Writer => &mut self.reader_waker,
        };
        if let Some(w) = other.take() {
            w.wake();
        }
    }

    /// Records a transport failure: the connection is over.
    fn fail_io(&mut self, e: io::Error) -> WsError {
        self.failed = true;
        let now = self.now();
        if !self.conn.is_closed() {
            self.conn.handle_eof(now);
        }
        while let Some(ev) = self.conn.poll_event() {
            self.note_event(ev);
        }
        self.wake_others();
        WsError::Io(e)
    }

    /// Keeps what matters of events the caller does not receive.
    fn note_event(&mut self, ev: Event) -> Option<Incoming> {
        match ev {
            Event::Message(m) => Some(Incoming::Message(m)),
            Event::Ping(p) => Some(Incoming::Ping(p)),
            Event::Pong(p) => Some(Incoming::Pong(p)),
            // A failed opening handshake is the handshake's error.
            Event::Error(ws_proto::Error::Handshake(e)) => {
                self.pending_error = Some(Box::new(WsError::Handshake(e)));
                None
            }
            // The peer did not answer our close: `recv` says so once (the
            // caller may give up on what is still queued), then ends.
            Event::Error(ws_proto::Error::CloseTimeout) => {
                self.pending_error = Some(Box::new(WsError::Timeout));
                None
            }
            // A peer's protocol violation is not an error of ours: the
            // connection closes with the matching code (1002, 1007, 1009),
            // which `close_info` reports once `recv` has returned `None`.
            Event::Error(_) => None,
            Event::Closed {
                code,
                reason,
                clean,
            } => {
                self.close = Some(Box::new(CloseInfo {
                    code,
                    reason,
                    clean,
                }));
                if self.conn.role() == Role::Client && clean {
                    self.linger_until = Some(self.now() + self.linger);
                } else if !clean && !self.read_eof {
                    self.discard_until = Some(self.now() + self.linger);
                }
                if let Some(w) = self.writer_waker.take() {
                    w.wake();
                }
                None
            }
            ev @ (Event::Request(_) | Event::Accepted(_)) => {
                self.pace = None;
                self.handshake = Some(Box::new(ev));
                None
            }
            _ => None,
        }
    }

    /// Whether `deadline` has passed; arms the timer otherwise.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        if self.now() >= deadline {
            self.timer = None;
            return true;
        }
        if self.timer.as_ref().map(|t| t.0) != Some(deadline) {
            self.timer = Some((deadline, Box::pin(self.rt.sleep_until(deadline))));
        }
        let fired = match &mut self.timer {
            Some((_, sleep)) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if fired {
            self.timer = None;
        }
        fired
    }

    /// Reads once into the connection's buffer.
    ///
    /// With nothing buffered (an idle connection, or between messages) the
    /// read goes into this thread's scratch buffer and only what arrived is
    /// copied out; while the read would block, the connection holds no
    /// buffer at all. That keeps idle connections small. With a frame in
    /// progress, reads go straight into the connection's buffer, sized for
    /// the rest of the frame, so large messages are not copied.
    ///
    /// A head that arrives in pieces (a slow client, or an attacker
    /// dripping bytes) also goes through the scratch buffer and is appended
    /// as it comes: a pending handshake holds what it was sent, not a
    /// 4 KiB read buffer.
    fn poll_read_once(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.conn.read_buf().is_empty() && self.conn.state() == State::Connecting {
            return self.poll_read_head_rest(cx);
        }
        if self.conn.read_buf().is_empty() {
            // A fresh buffer of exactly this size: cheaper than growing the
            // empty one, and a message that is the whole read takes it over
            // without another allocation.
            let polled = self.poll_read_scratch(cx, |buf, read| *buf = BytesMut::from(read));
            if polled.is_pending() {
                self.conn.release_idle_buffers();
            }
            return polled;
        }
        let hint = self.conn.read_hint().max(MIN_READ);
        self.conn.read_buf().reserve(hint);
        self.io.poll_read_into(cx, self.conn.read_buf())
    }

    /// Reads into this thread's scratch buffer and hands what arrived to
    /// `keep` with the connection's read buffer.
    fn poll_read_scratch(
        &mut self,
        cx: &mut Context<'_>,
        keep: impl FnOnce(&mut BytesMut, &[u8]),
    ) -> Poll<io::Result<usize>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let polled = self.io.poll_read_slice(cx, &mut scratch[..]);
            if let Poll::Ready(Ok(n)) = polled {
                keep(self.conn.read_buf(), &scratch[..n]);
            }
            polled
        })
    }

    /// Reads more of a head that arrived in pieces, appending what came.
    ///
    /// On a server, once the head has taken [`PACE_AFTER_READS`] reads,
    /// the rest is read on a timer (see [`HeadPace`]) rather than whenever
    /// the socket becomes readable.
    fn poll_read_head_rest(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let pace = match self.conn.role() {
            Role::Server => Some(self.pace.get_or_insert_with(HeadPace::new)),
            Role::Client => None,
        };
        let paced = pace.as_ref().is_some_and(|p| p.reads >= PACE_AFTER_READS);
        if let Some(pace) = pace
            && let Some(sleep) = &mut pace.sleep
        {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            pace.sleep = None;
        }
        // Paced, the read does not ask the socket to wake the task: the
        // timer does.
        let mut quiet = Context::from_waker(Waker::noop());
        let read_cx = if paced { &mut quiet } else { &mut *cx };
        let polled = self.poll_read_scratch(read_cx, |buf, read| buf.extend_from_slice(read));
        let Some(pace) = &mut self.pace else {
            return polled;
        };
        if let Poll::Ready(Ok(1..)) = polled {
            pace.reads = pace.reads.saturating_add(1);
        }
        if pace.reads >= PACE_AFTER_READS && !matches!(polled, Poll::Ready(Ok(0) | Err(_))) {
            let mut sleep = Box::pin(self.rt.sleep_until(self.rt.now() + pace.interval));
            if sleep.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            } else {
                pace.sleep = Some(sleep);
            }
        }
        polled
    }

    /// Drives the connection until something arrives for the application
    /// (or, with `events` false, until the connection makes progress on its
    /// own: used by the handshake). `Ok(None)` means closed and shut down.
    pub(crate) fn poll_incoming(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Incoming>, WsError>> {
        loop {
            while let Some(ev) = self.conn.poll_event() {
                if let Some(incoming) = self.note_event(ev) {
                    return Poll::Ready(Ok(Some(incoming)));
                }
                if self.handshake.is_some() {
                    return Poll::Ready(Ok(None));
                }
            }
            if let Some(e) = self.pending_error.take() {
                return Poll::Ready(Err(*e));
            }
            if self.failed {
                return Poll::Ready(Ok(None));
            }
            if let Poll::Ready(Err(e)) = self.poll_flush_out(cx, Half::Reader) {
                return Poll::Ready(Err(self.fail_io(e)));
            }
            if self.conn.is_closed() {
                return self.poll_finish(cx).map(|r| r.map(|()| None));
            }
            // The timer for the core's deadline is armed only when this
            // poll is about to return `Pending`: a handshake whose head is
            // already in the socket completes without ever arming its
            // timeout (a timer insert costs a reactor wake-up on both
            // runtimes).
            let deadline = self.conn.poll_timeout();
            match deadline {
                Some(deadline) => {
                    let now = self.now();
                    if now >= deadline {
                        self.timer = None;
                        self.conn.handle_timeout(now);
                        continue;
                    }
                }
                // No deadline (the handshake is over): drop the timer, so it
                // neither wakes the task nor occupies the runtime's timer
                // wheel for the life of the connection.
                None => self.timer = None,
            }
            if !self.read_eof && self.conn.wants_read() {
                match self.poll_read_once(cx) {
                    Poll::Ready(Ok(0)) => {
                        self.read_eof = true;
                        let now = self.now();
                        self.conn.handle_eof(now);
                        continue;
                    }
                    Poll::Ready(Ok(_)) => {
                        let now = self.now();
                        self.conn.handle_read(now);
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_io(e))),
                    Poll::Pending => {}
                }
            }
            register(&mut self.reader_waker, cx);
            if let Some(deadline) = deadline
                && self.poll_deadline(cx, deadline)
            {
                // It passed while this poll ran.
                let now = self.now().max(deadline);
                self.conn.handle_timeout(now);
                continue;
            }
            return Poll::Pending;
        }
    }

    /// After the close handshake or a failure: flush, let a client wait
    /// briefly for the server's FIN, shut the transport down, then after a
    /// failure discard what the peer still sends until its FIN.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.shutdown_done && self.discard_until.is_none() {
            return Poll::Ready(Ok(()));
        }
        if self.conn.buffered_outbound() > 0 {
            // A peer that does not read would keep us here forever: after
            // the close timeout, the rest is abandoned.
            let bound = self.conn.config().close_timeout;
            let deadline = *self.finish_by.get_or_insert_with(|| self.rt.now() + bound);
            if !self.poll_deadline(cx, deadline) {
                return Poll::Pending; // poll_flush_out registered the waker
            }
            let unsent = self.conn.buffered_outbound();
            self.conn.consume_transmit(unsent);
        }
        if let Some(until) = self.linger_until {
            if self.poll_discard(cx, until).is_pending() {
                return Poll::Pending;
            }
            self.linger_until = None;
        }
        if !self.shutdown_done {
            match self.io.poll_shutdown(cx) {
                Poll::Pending => return Poll::Pending,
                // The peer may already be gone; the connection is over
                // either way.
                Poll::Ready(_) => self.shutdown_done = true,
            }
            self.wake_others();
        }
        // After a failure the peer has our close frame and FIN, and may
        // still be sending: read until its FIN so that dropping the socket
        // does not reset the connection under the close frame.
        if let Some(until) = self.discard_until {
            if self.poll_discard(cx, until).is_pending() {
                return Poll::Pending;
            }
            self.discard_until = None;
        }
        self.timer = None;
        Poll::Ready(Ok(()))
    }

    /// Reads and discards until the peer's FIN, an error, or `until`.
    fn poll_discard(&mut self, cx: &mut Context<'_>, until: Instant) -> Poll<()> {
        while !self.read_eof && !self.poll_deadline(cx, until) {
            match self.poll_read_scratch(cx, |_, _| {}) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.read_eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    /// Waits until the outbound queue is below its bound.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.failed || self.conn.is_closed() {
            return Poll::Ready(Err(WsError::Closed));
        }
        if self.conn.buffered_outbound() < self.max_outbound {
            return Poll::Ready(Ok(()));
        }
        match self.poll_flush_out(cx, Half::Writer) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.fail_io(e))),
            _ if self.conn.buffered_outbound() < self.max_outbound => Poll::Ready(Ok(())),
            _ => {
                register(&mut self.writer_waker, cx);
                Poll::Pending
            }
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.failed {
            return Poll::Ready(Err(WsError::Closed));
        }
        match self.poll_flush_out(cx, Half::Writer) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.fail_io(e))),
            Poll::Pending => {
                register(&mut self.writer_waker, cx);
                Poll::Pending
            }
        }
    }

    fn check_room(&self) -> Result<(), WsError> {
        if self.failed {
            return Err(WsError::Closed);
        }
        let queued = self.conn.buffered_outbound();
        if queued >= self.max_outbound {
            return Err(WsError::Backpressure(queued));
        }
        Ok(())
    }

    /// Starts the close handshake and makes sure the reader re-arms its
    /// timer for the close deadline.
    fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<(), WsError> {
        let now = self.now();
        self.conn.close(now, code, reason)?;
        if let Some(w) = self.reader_waker.take() {
            w.wake();
        }
        Ok(())
    }

    fn poll_closed(&mut self, cx: &Context<'_>) -> Poll<()> {
        if self.shutdown_done || self.failed {
            return Poll::Ready(());
        }
        register(&mut self.writer_waker, cx);
        Poll::Pending
    }
}

type Shared<T, R> = Arc<Mutex<Inner<T, R>>>;

fn lock<T, R: Runtime>(shared: &Shared<T, R>) -> MutexGuard<'_, Inner<T, R>> {
    // A panic while holding the lock leaves the state consistent enough to
    // report errors; never propagate poisoning.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An open WebSocket over a transport `T`, on runtime `R`.
///
/// Receive with [`recv`](Self::recv) (messages) or
/// [`recv_incoming`](Self::recv_incoming) (messages, pings and pongs);
/// send with [`send`](Self::send) (queue and flush) or
/// [`feed`](Self::feed) + [`flush`](Self::flush) to batch several messages
/// into one write; [`split`](Self::split) for separate reader and writer
/// tasks. Every future here is cancel-safe: the protocol state lives in the
/// connection, not in the future.
pub struct WebSocket<T, R: Runtime> {
    read: ReadHalf<T, R>,
    write: WriteHalf<T, R>,
}

/// The receiving half of a [`WebSocket`].
pub struct ReadHalf<T, R: Runtime> {
    shared: Shared<T, R>,
}

/// The sending half of a [`WebSocket`].
pub struct WriteHalf<T, R: Runtime> {
    shared: Shared<T, R>,
}

impl<T: Transport, R: Runtime> WebSocket<T, R> {
    pub(crate) fn from_inner(inner: Inner<T, R>) -> Self {
        let shared = Arc::new(Mutex::new(inner));
        Self {
            read: ReadHalf {
                shared: shared.clone(),
            },
            write: WriteHalf { shared },
        }
    }

    /// Splits into a reader and a writer that can live in different tasks.
    pub fn split(self) -> (ReadHalf<T, R>, WriteHalf<T, R>) {
        (self.read, self.write)
    }

    /// The next data message; `Ok(None)` once the connection has closed
    /// (see [`close_info`](Self::close_info)). Pings are answered and pongs
    /// skipped on the way.
    ///
    /// A peer that violates the protocol ends the connection like any
    /// close: the connection answers with the matching close code (1002,
    /// 1007, 1009, ...), `recv` returns `Ok(None)` once it is over, and
    /// [`close_info`](Self::close_info) carries the code. Errors are ours
    /// only: I/O, a failed handshake, or [`WsError::Timeout`] once when
    /// the peer does not answer our close in time.
    pub async fn recv(&mut self) -> Result<Option<Message>, WsError> {
        self.read.recv().await
    }

    /// The next message, ping or pong; `Ok(None)` once closed.
    pub async fn recv_incoming(&mut self) -> Result<Option<Incoming>, WsError> {
        self.read.recv_incoming().await
    }

    /// Queues a message and writes everything queued.
    pub async fn send(&mut self, message: Message) -> Result<(), WsError> {
        self.write.send(message).await
    }

    /// Queues a message, waiting while the outbound buffer is over its
    /// bound; does not write. Follow with [`flush`](Self::flush) (or keep
    /// receiving: the receiver writes what is queued before it waits).
    pub async fn feed(&mut self, message: Message) -> Result<(), WsError> {
        self.write.feed(message).await
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), WsError> {
        self.write.flush().await
    }

    /// Sends a ping.
    pub async fn ping(&mut self, payload: Bytes) -> Result<(), WsError> {
        self.write.ping(payload).await
    }

    /// Closes: sends a close frame, waits for the peer's answer (up to the
    /// configured close timeout), then shuts TCP down. Messages that arrive
    /// meanwhile are discarded.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), WsError> {
        {
            let mut inner = lock(&self.read.shared);
            if !inner.conn.is_closed() && !matches!(inner.conn.state(), State::Closing) {
                inner.start_close(code, reason)?;
            }
        }
        loop {
            match self.read.recv_incoming().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                // The peer did not answer in time; the connection is over.
                Err(WsError::Timeout) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<CloseInfo> {
        lock(&self.read.shared).close.as_deref().cloned()
    }

    /// The permessage-deflate parameters negotiated, if any.
    pub fn deflate(&self) -> Option<DeflateParams> {
        lock(&self.read.shared).conn.deflate().copied()
    }
}

impl<T: Transport, R: Runtime> ReadHalf<T, R> {
    /// See [`WebSocket::recv`].
    pub async fn recv(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            match self.recv_incoming().await? {
                Some(Incoming::Message(m)) => return Ok(Some(m)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// See [`WebSocket::recv_incoming`].
    pub async fn recv_incoming(&mut self) -> Result<Option<Incoming>, WsError> {
        poll_fn(|cx| lock(&self.shared).poll_incoming(cx)).await
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<CloseInfo> {
        lock(&self.shared).close.as_deref().cloned()
    }
}

impl<T: Transport, R: Runtime> WriteHalf<T, R> {
    /// See [`WebSocket::send`].
    pub async fn send(&mut self, message: Message) -> Result<(), WsError> {
        self.feed(message).await?;
        self.flush().await
    }

    /// See [`WebSocket::feed`].
    pub async fn feed(&mut self, message: Message) -> Result<(), WsError> {
        let mut message = Some(message);
        poll_fn(|cx| {
            let mut inner = lock(&self.shared);
            match inner.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let m = message.take().ok_or(WsError::Closed)?;
                    Poll::Ready(inner.conn.send(m).map_err(WsError::from))
                }
                other => other,
            }
        })
        .await
    }

    /// Queues a message without waiting; fails with
    /// [`WsError::Backpressure`] when the outbound buffer is over its
    /// bound. Something must then flush (`flush`, `send`, or the reader).
    pub fn try_feed(&mut self, message: Message) -> Result<(), WsError> {
        let mut inner = lock(&self.shared);
        inner.check_room()?;
        inner.conn.send(message)?;
        Ok(())
    }

    /// Queues one text message made of `parts` (together UTF-8) even when
    /// the outbound buffer is over its bound: for callers that bound what
    /// they queue themselves (the hub server's per-connection outbox).
    pub fn queue_text_bytes(&mut self, parts: &[Bytes]) -> Result<(), WsError> {
        lock(&self.shared).conn.send_text_bytes(parts)?;
        Ok(())
    }

    /// Like [`WriteHalf::queue_text_bytes`] for `head ++ body`, where a
    /// body with a compressed form shared by many connections is sent
    /// compressed without compressing it again (see
    /// `ws_proto::Connection::send_text_with_body`).
    pub fn queue_text_with_body(
        &mut self,
        head: &Bytes,
        body: &PreparedBody,
    ) -> Result<(), WsError> {
        lock(&self.shared).conn.send_text_with_body(head, body)?;
        Ok(())
    }

    /// The permessage-deflate parameters negotiated, if any.
    pub fn deflate(&self) -> Option<DeflateParams> {
        lock(&self.shared).conn.deflate().copied()
    }

    /// Writes queued bytes; `Ready(Ok)` once the queue is empty. For
    /// callers that combine writing with other work in one `poll`.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        lock(&self.shared).poll_flush(cx)
    }

    /// Queues a ping without waiting (something must flush it).
    pub fn try_ping(&mut self, payload: Bytes) -> Result<(), WsError> {
        lock(&self.shared).conn.ping(payload)?;
        Ok(())
    }

    /// Queues a close frame without waiting; the read half completes the
    /// close handshake (and enforces its timeout) as it keeps being polled.
    pub fn begin_close(&mut self, code: CloseCode, reason: &str) -> Result<(), WsError> {
        lock(&self.shared).start_close(code, reason)
    }

    /// Bytes queued for the transport.
    pub fn buffered(&self) -> usize {
        lock(&self.shared).conn.buffered_outbound()
    }

    /// See [`WebSocket::flush`].
    pub async fn flush(&mut self) -> Result<(), WsError> {
        poll_fn(|cx| lock(&self.shared).poll_flush(cx)).await
    }

    /// See [`WebSocket::ping`].
    pub async fn ping(&mut self, payload: Bytes) -> Result<(), WsError> {
        lock(&self.shared).conn.ping(payload)?;
        self.flush().await
    }

    /// Sends a close frame and waits until the read half has seen the
    /// peer's answer and shut the transport down (the read half must keep
    /// being polled; it enforces the close timeout).
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), WsError> {
        lock(&self.shared).start_close(code, reason)?;
        self.flush().await?;
        poll_fn(|cx| lock(&self.shared).poll_closed(&*cx)).await;
        Ok(())
    }
}
