//! The hub state machine, split by concern:
//!
//! - this module: the [`Hub`] itself, its getters, its input entry point
//!   ([`Hub::handle`]) and its output ([`Hub::poll_action`],
//!   [`Hub::poll_timeout`]);
//! - [`api`]: requests of a server API for backends;
//! - [`lifecycle`]: connections opening and closing, sessions attaching,
//!   detaching and resuming;
//! - [`request`]: client requests (parsed off the serial path by
//!   [`Request::parse`]): rate limit, dispatch, checks, nacks;
//! - [`delivery`]: publishing, fan-out to sessions, bus messages, and the
//!   one helper that sends a numbered message (tracked when the session
//!   wants delivery acks);
//! - [`presence`]: who is in a room, and the `join` / `leave` events;
//! - [`renewal`]: token expiry during the connection and `refresh`;
//! - [`timeouts`]: what each timer does when it fires;
//! - [`invariants`]: the consistency check used by tests and fuzzing.

mod api;
mod delivery;
mod invariants;
mod lifecycle;
mod presence;
mod renewal;
mod request;
mod timeouts;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::action::{Action, Payload};
use crate::auth::{AllowAll, AllowAnonymous, AuthRequest, Authenticator, Authoriser};
use crate::command::Command;
use crate::config::HubConfig;
use crate::dedup::Dedup;
use crate::error::{AuthError, ConfigError};
use crate::id::{ConnId, Identity, RoomName, UserId};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, ServerMessage};
use crate::ratelimit::{TokenBucket, ViolationWindow};
use crate::request::Request;
use crate::room::Rooms;
use crate::session::{Session, SessionId, SessionKey, SessionMinter, SessionSecret, SessionSet};
use crate::timers::{Deadlines, TimerSet};

pub use self::api::{API_PUBLISHER, ApiPublished};
pub use self::presence::{PresenceQuery, PresenceSnapshot};
use self::timeouts::Timer;

/// Close code 1000: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code 1001: going away (heartbeat timeout, idle, shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code 1008: policy violation (abuse, delivery-ack timeout).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code 1011: internal error.
pub const CLOSE_INTERNAL: u16 = 1011;
/// Close code 1013: try again later (server full, slow consumer).
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code 4001: the connection's token expired without a `refresh`
/// (the session is kept for resume with a fresh token).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code 1005: the peer's close frame carried no code.
const CLOSE_NO_STATUS: u16 = 1005;

/// The close reason with which a client closing with 1000 (or no code)
/// asks the hub to keep its session for resume; see
/// [`Command::ClientClosed`].
pub const KEEP_SESSION: &str = "keep-session";

/// Per-connection state.
#[derive(Debug)]
struct Conn {
    session: SessionKey,
    remote_addr: Option<SocketAddr>,
    /// Last pong, message or other traffic (heartbeat deadline).
    last_activity: Instant,
    /// Last message (idle eviction).
    last_message: Instant,
    /// When the next heartbeat ping is due if the connection stays quiet.
    next_ping: Instant,
    /// When its heartbeat timer is armed, in `Hub::heartbeats`.
    heartbeat_at: Instant,
    bucket: TokenBucket,
    violations: ViolationWindow,
    /// When its token expires, if the adapter said (boxed: most
    /// connections have none, and each pays for the room).
    token: Option<Box<renewal::TokenClock>>,
    /// The client closed cleanly and is done: discard its session on
    /// `Disconnected` instead of keeping it for resume.
    done: bool,
}

/// Action queue plus counters: everything output-side.
#[derive(Debug, Default)]
struct Outbox {
    actions: VecDeque<Action>,
    metrics: Metrics,
}

impl Outbox {
    fn deliver(&mut self, conn: ConnId, payload: Payload) {
        self.metrics.messages_out += 1;
        self.metrics.bytes_out += payload.len() as u64;
        self.actions.push_back(Action::Deliver { conn, payload });
    }

    fn send(&mut self, conn: ConnId, msg: &ServerMessage<'_>) {
        self.deliver(conn, msg.encode());
    }

    fn error(&mut self, conn: ConnId, code: ErrorCode, message: &str) {
        self.metrics.protocol_errors += 1;
        self.send(conn, &ServerMessage::Error { code, message });
    }
}

/// `t + d`, saturating far in the future (configured durations are
/// bounded by [`crate::MAX_DURATION`], so this never saturates in practice).
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(crate::MAX_DURATION))
        .unwrap_or(t)
}

/// The messaging hub: a deterministic state machine with no IO.
///
/// Methods, by group (as in quinn-proto's `Connection`):
/// - **getters** (`&self`): [`metrics`](Self::metrics), [`config`](Self::config),
///   [`is_connected`](Self::is_connected), [`session_id`](Self::session_id), ...
/// - **input**: [`handle`](Self::handle) for events, [`handle_timeout`](Self::handle_timeout)
///   for the clock;
/// - **output**: [`poll_action`](Self::poll_action) then [`poll_timeout`](Self::poll_timeout).
///
/// After every `handle*` call the caller MUST drain `poll_action` until it
/// returns `None`, then re-read `poll_timeout` and call `handle_timeout`
/// when that instant is reached. `now` MUST NOT go backwards between calls.
pub struct Hub {
    config: HubConfig,
    authenticator: Box<dyn Authenticator>,
    authoriser: Box<dyn Authoriser>,
    minter: SessionMinter,
    // Boxed: a B-tree filled in key order leaves its nodes about half
    // full, so large values inline would waste half their size per entry.
    conns: BTreeMap<ConnId, Box<Conn>>,
    sessions: BTreeMap<SessionKey, Box<Session>>,
    users: HashMap<UserId, SessionSet>,
    rooms: Rooms,
    dedup: Dedup,
    timers: TimerSet<Timer>,
    /// Every connection's heartbeat timer (see [`Timer::Heartbeat`]).
    heartbeats: Deadlines<ConnId>,
    out: Outbox,
    next_session: u64,
    next_api_id: u64,
    detached: usize,
    shutting_down: bool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node_id", &self.config.node_id)
            .field("connections", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with the given hooks, minting session ids under `secret`.
    /// Fails if the configuration is invalid or the secret is all zeroes.
    pub fn new(
        config: HubConfig,
        secret: SessionSecret,
        authenticator: impl Authenticator + 'static,
        authoriser: impl Authoriser + 'static,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if secret.is_zero() {
            return Err(ConfigError::ZeroSessionSecret);
        }
        Ok(Self {
            minter: SessionMinter::new(secret, config.session_seed),
            dedup: Dedup::new(
                config.dedup_window,
                config.dedup_per_publisher,
                config.dedup_max_entries,
            ),
            config,
            authenticator: Box::new(authenticator),
            authoriser: Box::new(authoriser),
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            users: HashMap::new(),
            rooms: Rooms::default(),
            timers: TimerSet::default(),
            heartbeats: Deadlines::default(),
            out: Outbox::default(),
            next_session: 0,
            next_api_id: 0,
            detached: 0,
            shutting_down: false,
        })
    }

    /// A hub with anonymous users ([`AllowAnonymous`]) and no restrictions
    /// ([`AllowAll`]), minting session ids under `secret`.
    pub fn with_defaults(config: HubConfig, secret: SessionSecret) -> Result<Self, ConfigError> {
        Self::new(config, secret, AllowAnonymous, AllowAll)
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Current counters and gauges.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.out.metrics.clone();
        m.connections = self.conns.len() as u64;
        m.sessions = self.sessions.len() as u64;
        m.detached_sessions = self.detached as u64;
        m.rooms = self.rooms.len() as u64;
        m.users = self.users.len() as u64;
        m.dedup_entries = self.dedup.len() as u64;
        m
    }

    /// Whether the hub knows `conn` as open.
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The session attached to `conn` (its id is minted on each call,
    /// not stored).
    pub fn session_id(&self, conn: ConnId) -> Option<SessionId> {
        let c = self.conns.get(&conn)?;
        self.sessions
            .contains_key(&c.session)
            .then(|| self.minter.mint(c.session))
    }

    /// The user of `conn`.
    pub fn user(&self, conn: ConnId) -> Option<&UserId> {
        let c = self.conns.get(&conn)?;
        self.sessions.get(&c.session).map(|s| &s.user)
    }

    /// The peer address given when `conn` connected.
    pub fn remote_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.conns.get(&conn)?.remote_addr
    }

    /// The rooms `conn`'s session is in, in name order.
    pub fn rooms_of(&self, conn: ConnId) -> Vec<RoomName> {
        self.conns
            .get(&conn)
            .and_then(|c| self.sessions.get(&c.session))
            .map(|s| s.rooms.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Members (sessions, attached or detached) of `room` on this node.
    pub fn room_size(&self, room: &str) -> usize {
        self.rooms.members(room).map_or(0, BTreeSet::len)
    }

    /// Runs the configured [`Authenticator`]. Adapters call this before
    /// accepting the WebSocket upgrade and answer HTTP 401 on error.
    pub fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        self.authenticator.authenticate(req)
    }

    /// When an accepted `token` expires (Unix seconds), per the configured
    /// [`Authenticator`]; adapters pass it on with
    /// [`Command::TokenExpiry`].
    pub fn token_expiry(&self, token: &str) -> Option<u64> {
        self.authenticator.token_expiry(token)
    }

    // ----- output -----

    /// The next action for the adapter. Call after every `handle*` call
    /// until it returns `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front()
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout)
    /// must be called; `None` if nothing is scheduled. Re-read it after
    /// every `handle*` call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next(), self.heartbeats.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- input (timers: see `timeouts`) -----

    /// Processes one input.
    pub fn handle(&mut self, now: Instant, command: Command) {
        match command {
            Command::Connected {
                conn,
                identity,
                remote_addr,
                resume,
            } => self.on_connected(now, conn, identity, remote_addr, resume),
            Command::Request { conn, request } => self.on_request(now, conn, request),
            Command::Received {
                conn,
                data,
                is_text,
            } => {
                let request = Request::parse(&data, is_text, self.config.max_message_size);
                self.on_request(now, conn, request);
            }
            Command::Activity { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.last_activity = now;
                }
            }
            Command::ClientClosed { conn, code, reason } => {
                self.on_client_closed(conn, code, &reason);
            }
            Command::Disconnected { conn } => self.on_disconnected(now, conn),
            Command::Overflowed { conn } => {
                if self.conns.contains_key(&conn) {
                    self.slow_consumer(now, conn);
                }
            }
            Command::TokenExpiry {
                conn,
                now_unix_secs,
                expires_unix_secs,
            } => self.on_token_expiry(now, conn, now_unix_secs, expires_unix_secs),
            Command::Bus(msg) => self.on_bus(now, msg),
            Command::ClusterPresence { query, others } => {
                self.on_cluster_presence(query, others);
            }
            Command::Shutdown => self.shut_down(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Conn;
    use crate::session::{Session, SessionSet};

    /// Every idle connection pays for these; what only some connections
    /// use (a token clock, violations, a replay ring) is boxed.
    #[test]
    fn per_connection_state_stays_small() {
        let sizes = (
            size_of::<Conn>(),
            size_of::<Session>(),
            size_of::<SessionSet>(),
        );
        println!("Conn, Session, SessionSet: {sizes:?}");
        assert!(sizes.0 <= 152, "Conn: {} bytes", sizes.0);
        assert!(sizes.1 <= 104, "Session: {} bytes", sizes.1);
        assert!(sizes.2 <= 16, "SessionSet: {} bytes", sizes.2);
    }
}
