//! The hub server: `ws-hub` over `ws-proto` over any [`Runtime`].
//!
//! # How the work is split across cores
//!
//! Each connection is a task on the runtime's worker threads: it does the
//! socket IO, the WebSocket framing and UTF-8 checks, and the HTTP side
//! (`/healthz`, `/metrics`, Origin and token checks) in parallel on every
//! core. The hub's state (rooms, sessions, de-dup windows, timers) lives
//! in one task that owns the `ws_hub::Hub` outright: connection tasks send
//! it commands over a bounded channel and it answers through each
//! connection's outbox. The hub is therefore serialised, not locked: no
//! mutex guards it, ordering is exactly the channel's, and its per-message
//! work is small (parse, route, refcount the shared body). A publish to a
//! room of N members costs the hub N outbox pushes of the same bytes; the
//! framing and the writes happen on the connections' threads.
//!
//! Resumable sessions and their replay buffers live only in this process's
//! memory, under a session key drawn at start: a restart loses them
//! (clients are told `unknown` and resync).

pub mod api;
mod conn;
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

use ws_hub::{AllowAnonymous, Authenticator, Command, HmacTokenAuth, Hub, Metrics};

use crate::bus::{BusStats, run_redis_bus};
use crate::shutdown::Shutdown;
use crate::task::{accept_error, unless};
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
    pub(crate) ip_limiter: conn::IpLimiter,
    pub(crate) next_conn: AtomicU64,
}

/// How many commands may wait for the hub before connection tasks pause.
const HUB_INBOX: usize = 65_536;

/// The token scheme `config` asks for.
fn authenticator(config: &ServerConfig) -> Box<dyn Authenticator> {
    match &config.auth_secret {
        Some(secret) => Box::new(
            HmacTokenAuth::new(secret.as_bytes().to_vec()).allow_anonymous(config.allow_anonymous),
        ),
        None => Box::new(AllowAnonymous),
    }
}

/// Runs the hub server on `listener` until `shutdown` triggers; then stops
/// accepting, closes every client with 1001 after flushing what was queued
/// for it, and returns within `config.shutdown_grace`.
pub async fn serve<R: Runtime>(
    rt: R,
    listener: R::Listener,
    mut config: ServerConfig,
    shutdown: Arc<Shutdown>,
) -> io::Result<()> {
    let mut key = [0u8; 32];
    let mut seed = [0u8; 8];
    getrandom::fill(&mut key)
        .and_then(|()| getrandom::fill(&mut seed))
        .map_err(|e| io::Error::other(e.to_string()))?;
    config.hub.session_seed = u64::from_le_bytes(seed);
    let authenticator = authenticator(&config);
    // The hub checks `refresh` tokens with the same scheme.
    let hub = Hub::new(
        config.hub.clone(),
        ws_hub::SessionSecret::new(key),
        self::authenticator(&config),
        ws_hub::AllowAll,
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let (to_hub, inbox) = async_channel::bounded(HUB_INBOX);
    let metrics = Arc::new(Mutex::new(hub.metrics()));

    let (bus_link, bus_stats) = match &config.redis {
        Some(url) => {
            let (commands_tx, commands_rx) = async_channel::bounded(HUB_INBOX);
            let (incoming_tx, incoming_rx) = async_channel::bounded(HUB_INBOX);
            let stats = Arc::new(BusStats::default());
            let _ = commands_tx.try_send(crate::bus::BusCommand::Subscribe(
                ws_hub::GLOBAL_CHANNEL.to_owned(),
            ));
            rt.spawn(run_redis_bus(
                rt.clone(),
                url.clone(),
                commands_rx,
                incoming_tx,
                stats.clone(),
                shutdown.clone(),
            ));
            (
                Some(BusLink {
                    commands: commands_tx,
                    incoming: incoming_rx,
                }),
                Some(stats),
            )
        }
        None => (None, None),
    };
    let hub_done = Shutdown::new();
    let hub_guard = hub_done.track();
    let task = HubTask::new(rt.clone(), hub, inbox, bus_link, metrics.clone());
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
    let shared = Arc::new(Shared {
        config,
        hub: to_hub.clone(),
        authenticator,
        metrics,
        counters: ServerCounters::default(),
        bus_stats,
        ip_limiter: conn::IpLimiter::default(),
        next_conn: AtomicU64::new(1),
    });
    let mut stop = pin!(shutdown.wait());
    while let Some(accepted) = unless(stop.as_mut(), R::accept(&listener)).await {
        match accepted {
            Ok((io, peer)) => {
                let guard = shutdown.track();
                let (rt2, shared) = (rt.clone(), shared.clone());
                rt.spawn(async move {
                    conn::serve_connection(rt2, io, peer, shared).await;
                    drop(guard);
                });
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
    Ok(())
}
