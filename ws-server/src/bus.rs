//! The Redis pub/sub bus: carries hub messages between nodes.
//!
//! [`run_redis_bus`] is one task per node. The hub side talks to it only
//! through two channels: it sends [`BusCommand`]s (publish, subscribe,
//! unsubscribe) and receives `(channel, payload)` pairs that other nodes
//! (and this one: Redis echoes a node's own publishes to it when it is
//! subscribed) published. [`BusStats`] counts what happens, for `/metrics`.
//!
//! # Connections
//!
//! Two connections per node, as Redis pub/sub requires: a subscriber
//! connection (SUBSCRIBE/UNSUBSCRIBE go out on it, `message` pushes and
//! subscription confirmations come back) and a publisher connection for
//! PUBLISH. Publishes queued together are sent as one pipeline (at most
//! [`MAX_BATCH`] messages or [`MAX_BATCH_BYTES`] bytes) and batches are
//! sent one after the other on the one publisher connection, so messages
//! published by one node reach every subscriber in the order the hub
//! emitted them. Each connection starts with AUTH (when the URL has a
//! password) and a PING.
//!
//! # Runtime
//!
//! The bus speaks RESP2 itself ([`resp`], a sans-IO encoder and decoder)
//! over the [`Runtime`]'s own TCP streams ([`Runtime::connect`]), with the
//! runtime's timers for timeouts and backoff: the same code runs on every
//! runtime, in the task that calls it, with no extra thread and nothing
//! to detect. It does not use the `redis` crate, whose async API links
//! tokio (its `sync` primitives and `tokio-util` codecs) whatever runtime
//! it is set to use, so the smol server would link tokio.
//!
//! [`RedisClient`] is a third kind of connection, for request/response
//! commands outside pub/sub (state shared between nodes); the bus task
//! does not use it.
//!
//! # Subscriptions
//!
//! The task keeps the set of channels it was asked to follow
//! ([`BusCommand::Subscribe`] adds, [`BusCommand::Unsubscribe`] removes;
//! both are idempotent). While connected it mirrors changes to Redis at
//! once; while disconnected it only updates the set, and on every
//! (re)connection it subscribes to the whole set before reporting itself
//! connected.
//!
//! # Failure and reconnection
//!
//! Losing either connection (EOF or an I/O error on either, a PUBLISH
//! unanswered within [`RESPONSE_TIMEOUT`], a SUBSCRIBE or UNSUBSCRIBE not
//! confirmed within it, an error reply, or a reply that is not valid RESP
//! or exceeds the decoder's [`resp::Limits`]) drops both; the task logs a
//! warning, counts an error, and reconnects with exponential backoff:
//! 100 ms doubling to 5 s,
//! with up to 25% jitter so nodes do not reconnect in lockstep, reset once
//! a connection (both sockets plus resubscription) succeeds. Recovery is
//! logged at `info` and counted in [`BusStats::reconnects`]. The task never
//! stops commands from being taken off the channel while Redis is down, so
//! the hub is never blocked by the bus.
//!
//! # What is lost while Redis is down
//!
//! Redis pub/sub is at-most-once and keeps nothing for absent subscribers:
//!
//! - messages this node publishes while disconnected are dropped (counted
//!   in `ws_bus_publish_dropped_total`), and so is every PUBLISH of a
//!   pipeline that Redis had not answered when the connection broke (it
//!   may or may not have reached Redis); the ones it answered count as
//!   published, so published plus dropped is every message the hub handed
//!   over;
//! - messages other nodes publish while this node's subscriber connection
//!   is down (or not yet subscribed again) are never seen by this node, and
//!   the publishing node cannot tell: Redis accepted them. Each PUBLISH
//!   reply says how many subscriber connections got the message; their sum
//!   is `ws_bus_publish_receivers_total`, which shows such losses;
//! - local delivery inside the node is unaffected.
//!
//! Nothing is replayed after reconnection; clients that need the gap use
//! the hub's own resume mechanism where it applies (within one node).
//!
//! # Bounded memory
//!
//! Nothing queues without bound here: commands wait in the caller's
//! bounded channel; while down, publishes are dropped; a publish batch is
//! capped; subscription changes wait for the subscriber connection in a
//! bounded queue; received messages are handed to `incoming` with `try_send`, and
//! if the hub has fallen behind by the channel's whole capacity the message
//! is dropped and counted (`ws_bus_received_dropped_total`) rather than
//! buffered; a reply or push is decoded only within [`resp::Limits`] (a
//! longer one drops the connection), so a faulty server cannot make the bus
//! buffer without bound; Redis itself disconnects a subscriber whose output
//! buffer passes its `client-output-buffer-limit pubsub`.

mod client;
mod conn;
pub mod resp;
pub mod url;

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;

use crate::shutdown::Shutdown;
pub use client::RedisClient;
pub use conn::ConnError;
use conn::{Conn, limit};
use resp::Value;
use url::{RedisUrl, UrlError};
use ws_async::Runtime;

/// What the hub side asks of the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusCommand {
    /// PUBLISH `payload` on `channel` (dropped and counted if Redis is down).
    Publish {
        /// The Redis channel.
        channel: String,
        /// The message, verbatim.
        payload: Bytes,
    },
    /// Follow a channel (idempotent; kept across reconnections).
    Subscribe(String),
    /// Stop following a channel (idempotent).
    Unsubscribe(String),
}

/// Most publishes sent in one pipeline.
pub const MAX_BATCH: usize = 256;
/// Most payload bytes sent in one pipeline (a batch is closed once it
/// reaches this; a single larger message still goes out alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// First reconnection delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Largest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Limit on opening a connection (TCP connect plus handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Limit on one request (a PUBLISH pipeline, a SUBSCRIBE).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Loops that could stay busy yield to the rest of the task this often.
const YIELD_EVERY: u32 = 64;
/// Channels per SUBSCRIBE when resubscribing after a reconnection.
const RESUBSCRIBE_CHUNK: usize = 512;

/// Counters and gauges of the bus, for `/metrics` (all atomics).
#[derive(Debug, Default)]
pub struct BusStats {
    connected: AtomicBool,
    subscriptions: AtomicU64,
    reconnects: AtomicU64,
    published: AtomicU64,
    publish_receivers: AtomicU64,
    publish_dropped: AtomicU64,
    received: AtomicU64,
    received_dropped: AtomicU64,
    errors: AtomicU64,
}

impl BusStats {
    /// New, zeroed stats, ready to share with [`run_redis_bus`].
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Gauge: both connections are up and every followed channel is
    /// subscribed.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Gauge: channels subscribed on the live connection (0 while down).
    pub fn subscriptions(&self) -> u64 {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Successful reconnections after a loss (the first connection is not
    /// counted).
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Messages Redis accepted for publishing (answered the PUBLISH).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Subscriber connections Redis delivered this node's published
    /// messages to, summed over them (each PUBLISH reply is the number of
    /// connections, on every node, this one's included, that received it).
    /// Published times the number of nodes following the channel, minus
    /// this, is what Redis accepted while a node was not subscribed.
    pub fn publish_receivers(&self) -> u64 {
        self.publish_receivers.load(Ordering::Relaxed)
    }

    /// Messages dropped instead of published: Redis was down, or the
    /// PUBLISH was not answered (the connection broke first). A dropped
    /// message may still have reached Redis if it was written just before
    /// the connection broke and Redis processed it without its reply
    /// getting back.
    pub fn publish_dropped(&self) -> u64 {
        self.publish_dropped.load(Ordering::Relaxed)
    }

    /// Messages received from Redis and handed to the hub.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Messages received from Redis but dropped because the hub's
    /// `incoming` channel was full.
    pub fn received_dropped(&self) -> u64 {
        self.received_dropped.load(Ordering::Relaxed)
    }

    /// Errors: lost connections, failed connection attempts, failed
    /// requests, an invalid URL.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Appends the stats in Prometheus text format, every name prefixed
    /// `ws_bus_`.
    pub fn render_prometheus(&self, out: &mut String) {
        let gauges = [
            (
                "ws_bus_connected",
                "Whether the Redis bus is connected (1) or not (0).",
                u64::from(self.connected()),
            ),
            (
                "ws_bus_subscriptions",
                "Channels subscribed on the live Redis connection.",
                self.subscriptions(),
            ),
        ];
        let counters = [
            (
                "ws_bus_reconnects_total",
                "Reconnections to Redis after a loss.",
                self.reconnects(),
            ),
            (
                "ws_bus_published_total",
                "Messages published to Redis.",
                self.published(),
            ),
            (
                "ws_bus_publish_receivers_total",
                "Subscriber connections (all nodes) Redis delivered this node's publishes to.",
                self.publish_receivers(),
            ),
            (
                "ws_bus_publish_dropped_total",
                "Messages not published because Redis was down or did not answer the publish.",
                self.publish_dropped(),
            ),
            (
                "ws_bus_received_total",
                "Messages received from Redis.",
                self.received(),
            ),
            (
                "ws_bus_received_dropped_total",
                "Messages received from Redis and dropped because the hub was behind.",
                self.received_dropped(),
            ),
            (
                "ws_bus_errors_total",
                "Redis bus errors (lost connections, failed attempts and requests).",
                self.errors(),
            ),
        ];
        for (kind, metrics) in [("gauge", &gauges[..]), ("counter", &counters[..])] {
            for (name, help, value) in metrics {
                // Writing to a String cannot fail.
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                );
            }
        }
    }

    fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Checks that `url` is a Redis URL the bus can use (for failing fast at
/// start-up; [`run_redis_bus`] itself logs an invalid URL and drops
/// everything).
pub fn validate_url(url: &str) -> Result<(), UrlError> {
    RedisUrl::parse(url).map(drop)
}

/// Runs the bus until `commands` is closed (every sender dropped) or
/// `shutdown` triggers (or `incoming` is found closed when a message
/// arrives). Messages received on
/// subscribed channels go to `incoming` as `(channel, payload)`.
///
/// Never fails: an unreachable Redis is retried with backoff, and an
/// invalid URL is logged and counted, after which commands are consumed and
/// publishes dropped until the end. See the [module docs](self).
pub async fn run_redis_bus<R: Runtime>(
    rt: R,
    url: String,
    commands: async_channel::Receiver<BusCommand>,
    incoming: async_channel::Sender<(String, Bytes)>,
    stats: Arc<BusStats>,
    shutdown: Arc<Shutdown>,
) {
    let mut bus = Bus {
        rt,
        commands,
        wanted: BTreeSet::new(),
        held: None,
        stats,
    };
    let run = async {
        match RedisUrl::parse(&url) {
            Ok(url) => bus.run(&url, &incoming).await,
            Err(error) => {
                tracing::error!(%error, "redis bus: invalid URL; cross-node delivery disabled");
                BusStats::bump(&bus.stats.errors, 1);
                // Keep consuming so that the hub never blocks on the bus.
                bus.while_down().await;
            }
        }
    };
    future::or(run, shutdown.wait()).await;
    bus.stats.subscriptions.store(0, Ordering::Relaxed);
    bus.stats.connected.store(false, Ordering::Relaxed);
    tracing::debug!("redis bus stopped");
}

/// Why a connected period ended.
#[derive(Debug)]
enum End {
    /// A connection broke; reconnect.
    Lost(ConnError),
    /// The hub side went away; stop.
    Closed,
}

impl From<ConnError> for End {
    fn from(error: ConnError) -> Self {
        Self::Lost(error)
    }
}

/// A change of subscription, from the command side to the subscriber side.
#[derive(Debug)]
enum Change {
    Subscribe(String),
    Unsubscribe(String),
}

/// Changes that may wait for the subscriber side before the command side
/// pauses.
const CHANGE_QUEUE: usize = 256;

struct Bus<R> {
    rt: R,
    commands: async_channel::Receiver<BusCommand>,
    /// Channels the hub asked to follow.
    wanted: BTreeSet<String>,
    /// A command taken off the channel but not handled yet.
    held: Option<BusCommand>,
    stats: Arc<BusStats>,
}

impl<R: Runtime> Bus<R> {
    /// Connect, serve, reconnect with backoff; returns once the hub side is
    /// gone.
    async fn run(&mut self, url: &RedisUrl, incoming: &async_channel::Sender<(String, Bytes)>) {
        let mut backoff = BACKOFF_MIN;
        let mut ever_connected = false;
        let mut failures: u64 = 0;
        let mut dropped_before = 0;
        loop {
            // Connect while still taking commands (dropping publishes).
            let rt = self.rt.clone();
            let attempt = future::or(
                async {
                    Some(
                        limit(&rt, CONNECT_TIMEOUT, async {
                            Ok((Conn::open(&rt, url).await?, Conn::open(&rt, url).await?))
                        })
                        .await,
                    )
                },
                async {
                    self.while_down().await;
                    None
                },
            );
            let Some(opened) = attempt.await else {
                return;
            };
            let connected = match opened {
                Ok((publisher, subscriber)) => {
                    let mut subscriber =
                        Subscriber::new(subscriber, &self.rt, &self.stats, incoming);
                    match subscriber.resubscribe(&self.wanted).await {
                        Ok(()) => Ok((publisher, subscriber)),
                        Err(end) => Err(end),
                    }
                }
                Err(error) => Err(End::Lost(error)),
            };
            let (publisher, subscriber) = match connected {
                Ok(conns) => conns,
                Err(End::Closed) => return,
                Err(End::Lost(error)) => {
                    self.stats.subscriptions.store(0, Ordering::Relaxed);
                    BusStats::bump(&self.stats.errors, 1);
                    failures += 1;
                    // Warn at start-up and about once a minute while down
                    // (the loss itself was already logged).
                    if (failures == 1 && !ever_connected) || failures.is_multiple_of(12) {
                        tracing::warn!(%error, failures, retry_in = ?backoff, "redis bus: cannot connect; retrying with backoff");
                    } else {
                        tracing::debug!(%error, failures, retry_in = ?backoff, "redis bus: still cannot connect");
                    }
                    if !self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            if ever_connected {
                BusStats::bump(&self.stats.reconnects, 1);
                tracing::info!(
                    failed_attempts = failures,
                    publishes_dropped = self.stats.publish_dropped() - dropped_before,
                    subscriptions = self.wanted.len(),
                    "redis bus: reconnected; cross-node delivery resumed"
                );
            } else {
                tracing::info!(subscriptions = self.wanted.len(), "redis bus: connected");
            }
            // Last, so that an observer seeing `connected` sees the rest.
            self.stats.connected.store(true, Ordering::Relaxed);
            ever_connected = true;
            failures = 0;
            dropped_before = self.stats.publish_dropped();
            let end = self.serve(publisher, subscriber).await;
            self.stats.subscriptions.store(0, Ordering::Relaxed);
            self.stats.connected.store(false, Ordering::Relaxed);
            match end {
                End::Closed => return,
                End::Lost(error) => {
                    BusStats::bump(&self.stats.errors, 1);
                    tracing::warn!(%error, "redis bus: connection lost; cross-node delivery paused, publishes dropped until reconnected");
                    if !self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// While connected: serves commands on the publisher connection and
    /// the subscriber side concurrently, until either connection breaks or
    /// the hub side goes away.
    async fn serve(
        &mut self,
        mut publisher: Conn<R::Stream>,
        mut subscriber: Subscriber<'_, R>,
    ) -> End {
        let (changes_tx, changes_rx) = async_channel::bounded(CHANGE_QUEUE);
        let in_flight = AtomicU64::new(0);
        let end = future::or(
            self.serve_commands(&mut publisher, &changes_tx, &in_flight),
            subscriber.serve(&changes_rx),
        )
        .await;
        // A batch cut short by the loss of the other connection.
        BusStats::bump(&self.stats.publish_dropped, in_flight.into_inner());
        end
    }

    async fn serve_commands(
        &mut self,
        publisher: &mut Conn<R::Stream>,
        changes: &async_channel::Sender<Change>,
        in_flight: &AtomicU64,
    ) -> End {
        loop {
            let Some(command) = self.next_command().await else {
                return End::Closed;
            };
            let change = match command {
                BusCommand::Publish { channel, payload } => {
                    if let Err(error) = self.publish(publisher, channel, payload, in_flight).await {
                        return End::Lost(error);
                    }
                    continue;
                }
                // On failure the channel stays wanted and is subscribed
                // again after reconnecting.
                BusCommand::Subscribe(channel) if self.wanted.insert(channel.clone()) => {
                    Change::Subscribe(channel)
                }
                BusCommand::Unsubscribe(channel) if self.wanted.remove(&channel) => {
                    Change::Unsubscribe(channel)
                }
                // Already followed, or not followed.
                BusCommand::Subscribe(_) | BusCommand::Unsubscribe(_) => continue,
            };
            if changes.send(change).await.is_err() {
                // Cannot happen: the subscriber side ends the period first.
                return End::Lost(ConnError::Closed);
            }
        }
    }

    /// PUBLISHes `channel`/`payload` and whatever publishes are queued
    /// behind it (up to a batch), as one pipeline, and waits for every
    /// reply.
    async fn publish(
        &mut self,
        publisher: &mut Conn<R::Stream>,
        channel: String,
        payload: Bytes,
        in_flight: &AtomicU64,
    ) -> Result<(), ConnError> {
        publisher.queue([&b"PUBLISH"[..], channel.as_bytes(), &payload[..]]);
        let mut n = 1u64;
        let mut bytes = payload.len();
        while n < MAX_BATCH as u64 && bytes < MAX_BATCH_BYTES {
            match self.commands.try_recv() {
                Ok(BusCommand::Publish { channel, payload }) => {
                    bytes += payload.len();
                    n += 1;
                    publisher.queue([&b"PUBLISH"[..], channel.as_bytes(), &payload[..]]);
                }
                Ok(other) => {
                    // Kept in `self`, so not lost if this future is
                    // dropped during the PUBLISH.
                    self.held = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        // Each PUBLISH counts as published once Redis has answered it, and
        // as dropped otherwise: by `serve` (what is still in flight) if the
        // subscriber connection fails meanwhile, or below on an error.
        in_flight.store(n, Ordering::Relaxed);
        let stats = &self.stats;
        let result = limit(&self.rt, RESPONSE_TIMEOUT, async {
            publisher.flush().await?;
            for left in (0..n).rev() {
                match publisher.read().await? {
                    Value::Integer(receivers) => {
                        in_flight.store(left, Ordering::Relaxed);
                        BusStats::bump(&stats.published, 1);
                        BusStats::bump(&stats.publish_receivers, receivers.unsigned_abs());
                    }
                    other => return Err(ConnError::unexpected(other)),
                }
            }
            Ok(())
        })
        .await;
        BusStats::bump(
            &self.stats.publish_dropped,
            in_flight.swap(0, Ordering::Relaxed),
        );
        result
    }

    /// While disconnected: keeps the subscription set current and drops
    /// publishes. Returns once the hub side is gone.
    async fn while_down(&mut self) {
        let mut handled = 0u32;
        while let Some(command) = self.next_command().await {
            // Handled before the next await point: this future may be
            // dropped at any await, and must not lose a command.
            match command {
                BusCommand::Publish { .. } => BusStats::bump(&self.stats.publish_dropped, 1),
                BusCommand::Subscribe(channel) => {
                    self.wanted.insert(channel);
                }
                BusCommand::Unsubscribe(channel) => {
                    self.wanted.remove(&channel);
                }
            }
            handled = handled.wrapping_add(1);
            if handled.is_multiple_of(YIELD_EVERY) {
                // Let the connection attempt, timers and shutdown run even
                // if the hub keeps the channel non-empty.
                future::yield_now().await;
            }
        }
    }

    /// The command held back from the last batch, or the next one from the
    /// channel (cancel-safe); `None` once the hub side is gone.
    async fn next_command(&mut self) -> Option<BusCommand> {
        match self.held.take() {
            Some(command) => Some(command),
            None => self.commands.recv().await.ok(),
        }
    }

    /// Waits out a backoff delay (with jitter) while handling commands as
    /// down; false if the hub side went away meanwhile.
    async fn pause(&mut self, delay: Duration) -> bool {
        let deadline = self.rt.now() + jitter(delay);
        let sleep = self.rt.sleep_until(deadline);
        future::or(
            async {
                sleep.await;
                true
            },
            async {
                self.while_down().await;
                false
            },
        )
        .await
    }
}

/// The subscriber connection: sends subscription changes, forwards
/// `message` pushes to the hub, and holds Redis to confirming every change
/// within [`RESPONSE_TIMEOUT`].
struct Subscriber<'a, R: Runtime> {
    conn: Conn<R::Stream>,
    rt: R,
    stats: Arc<BusStats>,
    incoming: &'a async_channel::Sender<(String, Bytes)>,
    /// When each unconfirmed SUBSCRIBE or UNSUBSCRIBE (one per channel, as
    /// Redis confirms them) must be confirmed by, oldest first.
    unconfirmed: VecDeque<Instant>,
    /// Messages handled, for yielding now and then.
    handled: u32,
}

/// What the subscriber side waits for.
enum Event {
    Value(Result<Value, ConnError>),
    Change(Option<Change>),
    Overdue,
}

impl<'a, R: Runtime> Subscriber<'a, R> {
    fn new(
        conn: Conn<R::Stream>,
        rt: &R,
        stats: &Arc<BusStats>,
        incoming: &'a async_channel::Sender<(String, Bytes)>,
    ) -> Self {
        Self {
            conn,
            rt: rt.clone(),
            stats: stats.clone(),
            incoming,
            unconfirmed: VecDeque::new(),
            handled: 0,
        }
    }

    /// Subscribes a fresh connection to every followed channel, a chunk at
    /// a time, each confirmed before the next is sent (messages on the
    /// channels already confirmed are forwarded meanwhile).
    async fn resubscribe(&mut self, wanted: &BTreeSet<String>) -> Result<(), End> {
        let wanted: Vec<&String> = wanted.iter().collect();
        for chunk in wanted.chunks(RESUBSCRIBE_CHUNK) {
            let mut command = Vec::with_capacity(chunk.len() + 1);
            command.push("SUBSCRIBE");
            command.extend(chunk.iter().map(|c| c.as_str()));
            self.conn.queue(command);
            self.send(chunk.len()).await?;
            while !self.unconfirmed.is_empty() {
                self.next_event(None).await?;
            }
        }
        Ok(())
    }

    /// Until the connection breaks or the hub side goes away.
    async fn serve(&mut self, changes: &async_channel::Receiver<Change>) -> End {
        loop {
            if let Err(end) = self.next_event(Some(changes)).await {
                return end;
            }
        }
    }

    /// Waits for one event and handles it.
    async fn next_event(
        &mut self,
        changes: Option<&async_channel::Receiver<Change>>,
    ) -> Result<(), End> {
        let overdue = self.unconfirmed.front().map(|&at| self.rt.sleep_until(at));
        let read = async { Event::Value(self.conn.read().await) };
        let change = async {
            match changes {
                Some(changes) => Event::Change(changes.recv().await.ok()),
                None => future::pending().await,
            }
        };
        let overdue = async {
            match overdue {
                Some(sleep) => {
                    sleep.await;
                    Event::Overdue
                }
                None => future::pending().await,
            }
        };
        let event = future::or(read, future::or(change, overdue)).await;
        match event {
            Event::Value(value) => {
                self.handle(value?)?;
                // Changes are taken between reads too, so a busy channel
                // does not hold them back.
                if let Some(changes) = changes {
                    let mut n = 0;
                    while let Ok(change) = changes.try_recv() {
                        self.queue(change);
                        n += 1;
                    }
                    if n > 0 {
                        self.send(n).await?;
                    }
                }
                self.handled = self.handled.wrapping_add(1);
                if self.handled.is_multiple_of(YIELD_EVERY) {
                    future::yield_now().await;
                }
                Ok(())
            }
            Event::Change(Some(change)) => {
                self.queue(change);
                self.send(1).await
            }
            // Cannot happen: the command side ends the period first.
            Event::Change(None) => Err(End::Lost(ConnError::Closed)),
            Event::Overdue => Err(End::Lost(ConnError::TimedOut(RESPONSE_TIMEOUT))),
        }
    }

    fn queue(&mut self, change: Change) {
        match change {
            Change::Subscribe(channel) => self.conn.queue(["SUBSCRIBE", &channel]),
            Change::Unsubscribe(channel) => self.conn.queue(["UNSUBSCRIBE", &channel]),
        }
    }

    /// Writes what is queued: `channels` SUBSCRIBEs or UNSUBSCRIBEs, each
    /// to be confirmed in time.
    async fn send(&mut self, channels: usize) -> Result<(), End> {
        let deadline = self.rt.now() + RESPONSE_TIMEOUT;
        self.unconfirmed
            .extend(std::iter::repeat_n(deadline, channels));
        limit(&self.rt, RESPONSE_TIMEOUT, self.conn.flush()).await?;
        Ok(())
    }

    /// One value from the subscriber connection.
    fn handle(&mut self, value: Value) -> Result<(), End> {
        let Value::Array(Some(items)) = value else {
            return Err(ConnError::unexpected(value).into());
        };
        match <[Value; 3]>::try_from(items) {
            Ok([kind, Value::Bulk(Some(channel)), payload])
                if kind.as_bytes().is_some_and(|k| &k[..] == b"message") =>
            {
                let Value::Bulk(Some(payload)) = payload else {
                    return Err(ConnError::unexpected(payload).into());
                };
                self.forward(&channel, payload)
            }
            Ok([kind, _, Value::Integer(count)])
                if kind
                    .as_bytes()
                    .is_some_and(|k| &k[..] == b"subscribe" || &k[..] == b"unsubscribe") =>
            {
                if self.unconfirmed.pop_front().is_none() {
                    return Err(ConnError::Unexpected("unrequested confirmation".into()).into());
                }
                self.stats
                    .subscriptions
                    .store(u64::try_from(count).unwrap_or(0), Ordering::Relaxed);
                Ok(())
            }
            Ok(other) => Err(ConnError::unexpected(Value::Array(Some(other.into()))).into()),
            Err(items) => Err(ConnError::unexpected(Value::Array(Some(items))).into()),
        }
    }

    /// Hands a received message to the hub, or drops it if the hub is
    /// behind.
    fn forward(&self, channel: &[u8], payload: Bytes) -> Result<(), End> {
        let channel = String::from_utf8_lossy(channel).into_owned();
        match self.incoming.try_send((channel, payload)) {
            Ok(()) => BusStats::bump(&self.stats.received, 1),
            Err(async_channel::TrySendError::Full(_)) => {
                if self
                    .stats
                    .received_dropped
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(1024)
                {
                    tracing::warn!("redis bus: hub is behind; dropping received messages");
                }
            }
            Err(async_channel::TrySendError::Closed(_)) => return Err(End::Closed),
        }
        Ok(())
    }
}

/// `delay` minus up to a quarter, at random.
fn jitter(delay: Duration) -> Duration {
    let r = getrandom::u32().unwrap_or(0);
    let cut = delay.as_micros() as u64 / 4 * u64::from(r % 1024) / 1024;
    delay.saturating_sub(Duration::from_micros(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_lines_are_prefixed_and_typed() {
        let stats = BusStats::default();
        stats.connected.store(true, Ordering::Relaxed);
        BusStats::bump(&stats.publish_dropped, 3);
        let mut out = String::new();
        stats.render_prometheus(&mut out);
        assert!(out.contains("ws_bus_connected 1\n"), "{out}");
        assert!(out.contains("# TYPE ws_bus_connected gauge\n"), "{out}");
        assert!(out.contains("ws_bus_publish_dropped_total 3\n"), "{out}");
        assert!(
            out.contains("# TYPE ws_bus_publish_dropped_total counter\n"),
            "{out}"
        );
        for line in out.lines() {
            let name = line
                .trim_start_matches("# HELP ")
                .trim_start_matches("# TYPE ");
            assert!(name.starts_with("ws_bus_"), "{line}");
        }
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(4));
            assert!(
                d <= Duration::from_secs(4) && d >= Duration::from_secs(3),
                "{d:?}"
            );
        }
    }

    #[test]
    fn urls_are_validated() {
        assert!(validate_url("redis://127.0.0.1:6379").is_ok());
        assert_eq!(validate_url("not a url"), Err(UrlError::Scheme));
    }
}
