//! The hub server: `ws-hub` over `ws-proto` over any [`Runtime`].
//!
//! # How the work is split across cores
//!
//! Each connection is a task on the runtime's worker threads: it does the
//! socket IO, the WebSocket framing and UTF-8 checks, the size check and
//! parse of hub messages (`ws_hub::Request::parse`), and the HTTP side
//! (`/healthz`, `/metrics`, Origin and token checks) in parallel on every
//! core. The hub's state (rooms, sessions, de-dup windows, timers) lives
//! in one task that owns the `ws_hub::Hub` outright: connection tasks send
//! it commands over a bounded channel and it answers through each
//! connection's outbox. The hub is therefore serialised, not locked: no
//! mutex guards it, ordering is exactly the channel's, and its per-message
//! work is small (rate limit, route, refcount the shared body). A publish to a
//! room of N members costs the hub N outbox pushes of the same bytes; the
//! framing and the writes happen on the connections' threads.
//!
//! The decisions are plain code with unit tests: admission (plain HTTP
//! routes, per-IP limit, Origin, token) in `admission`, a pure function of
//! the request and the time; the mapping from connection events to hub
//! commands, from hub actions to outboxes and from outbox orders to
//! writer calls in `dispatch`. The tasks only move values between them.
//!
//! Resumable sessions and their replay buffers live only in this process's
//! memory, under a session key drawn at start: a restart loses them
//! (clients are told `unknown` and resync).

mod admission;
pub mod api;
mod assets;
mod bodies;
mod conn;
mod dispatch;
mod hub_task;
pub mod metrics;
mod outbox;
mod presence_table;
pub mod settings;
pub mod tls;

use std::io;
use std::pin::pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use ws_hub::{
    AllowAll, AllowAnonymous, Authenticator, Authoriser, Command, HmacTokenAuth, Hub, Metrics,
};

use crate::bus::{BusStats, run_redis_bus};
use crate::shutdown::Shutdown;
use crate::task::{accept_error, unless};
pub use assets::{CLIENT_JS_PATH, DEMO_PATH};
use hub_task::{BusLink, HubTask, ToHub};
pub use metrics::ServerCounters;
pub use settings::{DEFAULT_LISTEN, ServerConfig, Settings, SettingsError};
use ws_async::Runtime;

/// State every connection task shares.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) hub: async_channel::Sender<ToHub>,
    pub(crate) authenticator: Box<dyn Authenticator>,
    pub(crate) metrics: Arc<Mutex<Metrics>>,
    pub(crate) counters: ServerCounters,
    pub(crate) bus_stats: Option<Arc<BusStats>>,
    pub(crate) ip_limiter: Arc<admission::IpLimiter>,
    pub(crate) next_conn: AtomicU64,
    /// Compress-once for deliveries, when deflate is on.
    pub(crate) bodies: Option<bodies::BodyCache>,
}

/// The application's hooks into the server: who a connection belongs to
/// and what its user may do.
///
/// ```
/// use ws_hub::{Authoriser, RoomName, UserId};
/// use ws_server::server::{Plugins, ServerConfig};
///
/// /// Only admins join rooms whose name starts with `admin-`.
/// struct Admins;
///
/// impl Authoriser for Admins {
///     fn may_join(&self, user: &UserId, room: &RoomName) -> bool {
///         !room.as_str().starts_with("admin-") || user.as_str() == "root"
///     }
/// }
///
/// let plugins = Plugins::from_config(&ServerConfig::default()).with_authoriser(Admins);
/// // Then: ws_server::server::serve_with(rt, listener, config, plugins, shutdown)
/// # drop(plugins);
/// ```
pub struct Plugins {
    /// Decides who a connection belongs to from its token (`?token=` or
    /// `Authorization: Bearer`), before the upgrade is accepted; a refusal
    /// is answered with HTTP 401. A connection with no token over TLS with
    /// a verified client certificate is the certificate's user instead.
    pub authenticator: Box<dyn Authenticator>,
    /// Decides what a user may do; a refusal nacks the request with
    /// `forbidden` (`docs/PROTOCOL.md`).
    pub authoriser: Box<dyn Authoriser>,
}

impl Plugins {
    /// What [`serve`] uses: HMAC tokens under `config.auth_secret` (with
    /// anonymous users if `config.allow_anonymous`), or anonymous users
    /// without a secret; every user may do everything ([`AllowAll`]).
    pub fn from_config(config: &ServerConfig) -> Self {
        Self {
            authenticator: token_scheme(config),
            authoriser: Box::new(AllowAll),
        }
    }

    /// These plugins with `authenticator` instead.
    pub fn with_authenticator(mut self, authenticator: impl Authenticator + 'static) -> Self {
        self.authenticator = Box::new(authenticator);
        self
    }

    /// These plugins with `authoriser` instead.
    pub fn with_authoriser(mut self, authoriser: impl Authoriser + 'static) -> Self {
        self.authoriser = Box::new(authoriser);
        self
    }
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins").finish_non_exhaustive()
    }
}

/// How many commands may wait for the hub before connection tasks pause.
const HUB_INBOX: usize = 65_536;

/// The token scheme `config` asks for.
fn token_scheme(config: &ServerConfig) -> Box<dyn Authenticator> {
    match &config.auth_secret {
        Some(secret) => Box::new(
            HmacTokenAuth::new(secret.as_bytes().to_vec()).allow_anonymous(config.allow_anonymous),
        ),
        None => Box::new(AllowAnonymous),
    }
}

/// Runs the hub server on `listener` until `shutdown` triggers; then stops
/// accepting, closes every client with 1001 after flushing what was queued
/// for it, and returns within `config.shutdown_grace`. Authentication
/// and authorisation are [`Plugins::from_config`]; [`serve_with`] takes
/// the application's own.
pub async fn serve<R: Runtime>(
    rt: R,
    listener: R::Listener,
    config: ServerConfig,
    shutdown: Arc<Shutdown>,
) -> io::Result<()> {
    let plugins = Plugins::from_config(&config);
    serve_with(rt, listener, config, plugins, shutdown).await
}

/// [`serve`] with the application's own [`Plugins`].
pub async fn serve_with<R: Runtime>(
    rt: R,
    listener: R::Listener,
    mut config: ServerConfig,
    plugins: Plugins,
    shutdown: Arc<Shutdown>,
) -> io::Result<()> {
    let mut key = [0u8; 32];
    let mut seed = [0u8; 8];
    getrandom::fill(&mut key)
        .and_then(|()| getrandom::fill(&mut seed))
        .map_err(|e| io::Error::other(e.to_string()))?;
    config.hub.session_seed = u64::from_le_bytes(seed);
    let Plugins {
        authenticator,
        authoriser,
    } = plugins;
    // Connection tasks authenticate (before the upgrade, in parallel); the
    // hub checks `refresh` tokens with the scheme `config` asks for.
    let secret = ws_hub::SessionSecret::new(key);
    let hub = Hub::new(
        config.hub.clone(),
        secret,
        token_scheme(&config),
        authoriser,
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let (to_hub, inbox) = async_channel::bounded(HUB_INBOX);
    let metrics = Arc::new(Mutex::new(hub.metrics()));

    // The bus outlives the hub task (it stops once the hub task has dropped
    // its sender and every queued publish is handed to Redis), so that what
    // the hub acknowledged during the grace period still reaches the other
    // nodes. `bus_stop` cuts it off at the grace deadline.
    let bus_stop = Shutdown::new();
    let bus_done = Shutdown::new();
    let (bus_link, bus_stats) = match &config.redis {
        Some(url) => {
            let (commands_tx, commands_rx) = async_channel::bounded(HUB_INBOX);
            let (incoming_tx, incoming_rx) = async_channel::bounded(HUB_INBOX);
            let stats = Arc::new(BusStats::default());
            let _ = commands_tx.try_send(crate::bus::BusCommand::Subscribe(
                ws_hub::GLOBAL_CHANNEL.to_owned(),
            ));
            let bus_guard = bus_done.track();
            let bus = run_redis_bus(
                rt.clone(),
                url.clone(),
                commands_rx,
                incoming_tx,
                stats.clone(),
                bus_stop.clone(),
            );
            rt.spawn(async move {
                bus.await;
                drop(bus_guard);
            });
            let (presence_tx, presence_rx) = async_channel::bounded(presence_table::MAX_QUERIES);
            if let Ok(url) = crate::bus::url::RedisUrl::parse(url) {
                rt.spawn(presence_table::answer_queries(
                    rt.clone(),
                    url,
                    config.hub.node_id.clone(),
                    presence_rx,
                    to_hub.clone(),
                    shutdown.clone(),
                ));
            }
            (
                Some(BusLink {
                    commands: commands_tx,
                    incoming: incoming_rx,
                    presence: presence_tx,
                }),
                Some(stats),
            )
        }
        None => (None, None),
    };
    let hub_done = Shutdown::new();
    let hub_guard = hub_done.track();
    let counters = ServerCounters::default();
    let task = HubTask::new(
        rt.clone(),
        hub,
        inbox,
        bus_link,
        metrics.clone(),
        counters.hub_cpu_ns.clone(),
    );
    rt.spawn(async move {
        task.run().await;
        drop(hub_guard);
    });

    if let Some(url) = config
        .redis
        .as_deref()
        .and_then(|u| crate::bus::url::RedisUrl::parse(u).ok())
    {
        rt.spawn(presence_table::keep(
            rt.clone(),
            url,
            config.hub.node_id.clone(),
            config.presence_ttl,
            to_hub.clone(),
            shutdown.clone(),
        ));
    }
    let grace = config.shutdown_grace;
    let bodies = bodies::BodyCache::new(config.ws.proto.deflate);
    let shared = Arc::new(Shared {
        config,
        hub: to_hub.clone(),
        authenticator,
        metrics,
        counters,
        bus_stats,
        ip_limiter: Arc::default(),
        next_conn: AtomicU64::new(1),
        bodies,
    });
    let mut stop = pin!(shutdown.wait());
    while let Some(accepted) = unless(stop.as_mut(), R::accept(&listener)).await {
        match accepted {
            Ok((io, peer)) => {
                let guard = shutdown.track();
                let (rt2, shared) = (rt.clone(), shared.clone());
                rt.spawn(conn::serve_connection(rt2, io, peer, shared, guard));
            }
            Err(e) => accept_error(&rt, e).await,
        }
    }
    drop(listener);
    tracing::info!(
        active = shutdown.active(),
        "stopped accepting; closing clients with 1001"
    );
    let _ = to_hub.send(ToHub::Command(Command::Shutdown)).await;
    let deadline = rt.now() + grace;
    futures_lite::future::or(shutdown.drained(), rt.sleep_until(deadline)).await;
    drop(shared);
    drop(to_hub);
    futures_lite::future::or(hub_done.drained(), rt.sleep_until(deadline)).await;
    futures_lite::future::or(bus_done.drained(), rt.sleep_until(deadline)).await;
    bus_stop.trigger();
    Ok(())
}
