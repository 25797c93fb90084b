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
//! connection ([`redis::aio::PubSub`], split into a sink for
//! SUBSCRIBE/UNSUBSCRIBE and a stream of messages) and a multiplexed
//! connection for PUBLISH. Publishes queued together are sent as one
//! pipeline (at most [`MAX_BATCH`] messages or [`MAX_BATCH_BYTES`] bytes)
//! and batches are sent one after the other, so messages published by one
//! node reach every subscriber in the order the hub emitted them.
//!
//! # Runtime choice
//!
//! The task runs natively on the runtime that calls it, with no extra
//! thread. Which runtime the `redis` crate uses for its sockets and its
//! connection drivers is decided at build time, from the [`ServerRuntime`]
//! the server runs on: each adapter enables its own feature of this crate
//! (`tokio-bus` for tokio, `smol-bus` for smol), which enables only that
//! runtime's support in redis (`tokio-comp`, `smol-comp`), so redis has a
//! single runtime to use and nothing to detect. If the feature of
//! `R::BUS` is missing the bus logs an error and stays down (and the
//! server refuses to start with `--redis`). A build that unifies both
//! features (one binary linking both adapters, as the integration tests
//! do to run a tokio node beside a smol node) leaves the choice to redis,
//! which then picks per connection whether a tokio runtime is current;
//! the redis crate has no per-connection setting to pass the runtime
//! instead, and its process-wide `prefer_tokio`/`prefer_smol` would break
//! the other runtime's node. Timers and timeouts here use the [`Runtime`]
//! passed in.
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
//! Losing either connection (EOF on the subscriber, an I/O error or timeout
//! on a PUBLISH or SUBSCRIBE) drops both; the task logs a warning, counts an
//! error, and reconnects with exponential backoff: 100 ms doubling to 5 s,
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
//!   in `ws_bus_publish_dropped_total`), and so is a batch whose PUBLISH
//!   failed when the connection broke (it may or may not have reached
//!   Redis);
//! - messages other nodes publish while this node's subscriber connection
//!   is down are never seen by this node;
//! - local delivery inside the node is unaffected.
//!
//! Nothing is replayed after reconnection; clients that need the gap use
//! the hub's own resume mechanism where it applies (within one node).
//!
//! # Bounded memory
//!
//! Nothing queues without bound here: commands wait in the caller's
//! bounded channel; while down, publishes are dropped; a publish batch is
//! capped; received messages are handed to `incoming` with `try_send`, and
//! if the hub has fallen behind by the channel's whole capacity the message
//! is dropped and counted (`ws_bus_received_dropped_total`) rather than
//! buffered (the redis crate buffers received messages in an unbounded
//! queue of its own, which this task drains as fast as they arrive; Redis
//! itself disconnects a subscriber whose output buffer passes its
//! `client-output-buffer-limit pubsub`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::StreamExt as _;
use futures_lite::future;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, RedisError};

use crate::ServerRuntime;
use crate::shutdown::Shutdown;
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

    /// Messages Redis accepted for publishing.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Messages dropped instead of published: Redis was down, or the
    /// PUBLISH failed.
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
                "ws_bus_publish_dropped_total",
                "Messages not published because Redis was down or the publish failed.",
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
pub fn validate_url(url: &str) -> Result<(), String> {
    Client::open(url).map(drop).map_err(|e| e.to_string())
}

/// Runs the bus until `commands` is closed (every sender dropped) or
/// `shutdown` triggers (or `incoming` is found closed when a message
/// arrives). Messages received on
/// subscribed channels go to `incoming` as `(channel, payload)`.
///
/// Never fails: an unreachable Redis is retried with backoff, and an
/// invalid URL is logged and counted, after which commands are consumed and
/// publishes dropped until the end. See the [module docs](self).
pub async fn run_redis_bus<R: ServerRuntime>(
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
        if !R::BUS.is_built() {
            tracing::error!(
                feature = R::BUS.feature(),
                "redis bus: ws-server was built without this runtime's Redis support; \
                 cross-node delivery disabled"
            );
            BusStats::bump(&bus.stats.errors, 1);
            bus.while_down().await;
            return;
        }
        match Client::open(url.as_str()) {
            Ok(client) => bus.run(&client, &incoming).await,
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
enum End {
    /// The connection broke; reconnect.
    Lost(String),
    /// The hub side went away; stop.
    Closed,
}

/// Both connections to Redis.
struct Conns {
    publisher: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
}

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
    async fn run(&mut self, client: &Client, incoming: &async_channel::Sender<(String, Bytes)>) {
        let mut backoff = BACKOFF_MIN;
        let mut ever_connected = false;
        let mut failures: u64 = 0;
        let mut dropped_before = 0;
        loop {
            // Connect while still taking commands (dropping publishes).
            let rt = self.rt.clone();
            let attempt = future::or(async { Some(open(&rt, client).await) }, async {
                self.while_down().await;
                None
            });
            let Some(opened) = attempt.await else {
                return;
            };
            let result = match opened {
                Ok(conns) => self.resubscribe(conns).await,
                Err(error) => Err(error),
            };
            let conns = match result {
                Ok(conns) => conns,
                Err(error) => {
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
            let end = self.serve(conns, incoming).await;
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

    /// Subscribes to every followed channel on fresh connections.
    async fn resubscribe(&self, mut conns: Conns) -> Result<Conns, String> {
        let wanted: Vec<&String> = self.wanted.iter().collect();
        for chunk in wanted.chunks(RESUBSCRIBE_CHUNK) {
            limit(&self.rt, RESPONSE_TIMEOUT, conns.sink.subscribe(chunk)).await?;
        }
        self.stats
            .subscriptions
            .store(self.wanted.len() as u64, Ordering::Relaxed);
        Ok(conns)
    }

    /// While connected: serves commands and forwards received messages
    /// until either connection breaks or the hub side goes away.
    async fn serve(
        &mut self,
        conns: Conns,
        incoming: &async_channel::Sender<(String, Bytes)>,
    ) -> End {
        let Conns {
            mut publisher,
            mut sink,
            mut stream,
        } = conns;
        let stats = self.stats.clone();
        let forward = async {
            let mut handled = 0u32;
            while let Some(msg) = stream.next().await {
                let channel = msg.get_channel_name().to_owned();
                let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
                match incoming.try_send((channel, payload)) {
                    Ok(()) => BusStats::bump(&stats.received, 1),
                    Err(async_channel::TrySendError::Full(_)) => {
                        if stats
                            .received_dropped
                            .fetch_add(1, Ordering::Relaxed)
                            .is_multiple_of(1024)
                        {
                            tracing::warn!("redis bus: hub is behind; dropping received messages");
                        }
                    }
                    Err(async_channel::TrySendError::Closed(_)) => return End::Closed,
                }
                handled = handled.wrapping_add(1);
                if handled.is_multiple_of(YIELD_EVERY) {
                    future::yield_now().await;
                }
            }
            End::Lost("subscriber connection closed".to_owned())
        };
        let in_flight = AtomicU64::new(0);
        let end = future::or(
            self.serve_commands(&mut publisher, &mut sink, &in_flight),
            forward,
        )
        .await;
        // A batch cut short by the loss of the other connection.
        BusStats::bump(&self.stats.publish_dropped, in_flight.into_inner());
        end
    }

    async fn serve_commands(
        &mut self,
        publisher: &mut MultiplexedConnection,
        sink: &mut PubSubSink,
        in_flight: &AtomicU64,
    ) -> End {
        loop {
            let Some(command) = self.next_command().await else {
                return End::Closed;
            };
            match command {
                BusCommand::Publish { channel, payload } => {
                    let mut pipe = redis::pipe();
                    pipe.cmd("PUBLISH").arg(channel).arg(&payload[..]).ignore();
                    let mut bytes = payload.len();
                    while pipe.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                        match self.commands.try_recv() {
                            Ok(BusCommand::Publish { channel, payload }) => {
                                bytes += payload.len();
                                pipe.cmd("PUBLISH").arg(channel).arg(&payload[..]).ignore();
                            }
                            Ok(other) => {
                                // Kept in `self`, so not lost if this
                                // future is dropped during the PUBLISH.
                                self.held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let n = pipe.len() as u64;
                    // Counted as dropped by `serve` if the subscriber
                    // connection fails while this is in flight.
                    in_flight.store(n, Ordering::Relaxed);
                    let result = limit(
                        &self.rt,
                        RESPONSE_TIMEOUT,
                        pipe.query_async::<()>(publisher),
                    )
                    .await;
                    in_flight.store(0, Ordering::Relaxed);
                    match result {
                        Ok(()) => BusStats::bump(&self.stats.published, n),
                        Err(error) => {
                            BusStats::bump(&self.stats.publish_dropped, n);
                            return End::Lost(format!("publish: {error}"));
                        }
                    }
                }
                BusCommand::Subscribe(channel) => {
                    if self.wanted.insert(channel.clone()) {
                        // On failure the channel stays wanted and is
                        // subscribed again after reconnecting.
                        if let Err(error) =
                            limit(&self.rt, RESPONSE_TIMEOUT, sink.subscribe(&channel)).await
                        {
                            return End::Lost(format!("subscribe {channel}: {error}"));
                        }
                        BusStats::bump(&self.stats.subscriptions, 1);
                    }
                }
                BusCommand::Unsubscribe(channel) => {
                    if self.wanted.remove(&channel) {
                        if let Err(error) =
                            limit(&self.rt, RESPONSE_TIMEOUT, sink.unsubscribe(&channel)).await
                        {
                            return End::Lost(format!("unsubscribe {channel}: {error}"));
                        }
                        self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
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

/// Opens both connections (PUBLISH and subscriber).
async fn open<R: Runtime>(rt: &R, client: &Client) -> Result<Conns, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let publisher = limit(
        rt,
        CONNECT_TIMEOUT,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    let pubsub = limit(rt, CONNECT_TIMEOUT, client.get_async_pubsub()).await?;
    let (sink, stream) = pubsub.split();
    Ok(Conns {
        publisher,
        sink,
        stream,
    })
}

/// `fut` with a time limit on `rt`'s clock, errors as text.
async fn limit<R: Runtime, T>(
    rt: &R,
    limit: Duration,
    fut: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, String> {
    let sleep = rt.sleep_until(rt.now() + limit);
    future::or(async { fut.await.map_err(|e| e.to_string()) }, async {
        sleep.await;
        Err(format!("timed out after {limit:?}"))
    })
    .await
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
        assert!(validate_url("not a url").is_err());
    }
}
