//! The hub state machine.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::action::{Action, Payload};
use crate::auth::{AllowAll, AllowAnonymous, AuthRequest, Authenticator, Authoriser};
use crate::bus::{BusMessage, BusTarget};
use crate::command::{Command, ResumeRequest};
use crate::config::HubConfig;
use crate::dedup::{Dedup, Seen};
use crate::error::{AuthError, ConfigError};
use crate::heartbeat::{Timer, TimerSet};
use crate::id::{ConnId, Identity, RoomName, UserId};
use crate::metrics::Metrics;
use crate::protocol::{
    self, ClientMessage, ErrorCode, NackReason, Op, ResumeFailure, ServerMessage, message_body,
};
use crate::ratelimit::{TokenBucket, ViolationWindow};
use crate::session::{ParsedSession, ReplayBuffer, Session, SessionId, SessionKey, SessionMinter};

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
    bucket: TokenBucket,
    violations: ViolationWindow,
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
    conns: BTreeMap<ConnId, Conn>,
    sessions: BTreeMap<SessionKey, Session>,
    users: HashMap<UserId, BTreeSet<SessionKey>>,
    rooms: crate::room::Rooms,
    dedup: Dedup,
    timers: TimerSet<Timer>,
    out: Outbox,
    next_session: u64,
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
    /// A hub with the given hooks. Fails if the configuration is invalid.
    pub fn new(
        config: HubConfig,
        authenticator: impl Authenticator + 'static,
        authoriser: impl Authoriser + 'static,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            minter: SessionMinter::new(config.session_key, config.session_seed),
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
            rooms: crate::room::Rooms::default(),
            timers: TimerSet::default(),
            out: Outbox::default(),
            next_session: 0,
            detached: 0,
            shutting_down: false,
        })
    }

    /// A hub with anonymous users ([`AllowAnonymous`]) and no restrictions
    /// ([`AllowAll`]).
    pub fn with_defaults(config: HubConfig) -> Result<Self, ConfigError> {
        Self::new(config, AllowAnonymous, AllowAll)
    }

    // ----- (A) getters -----

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
        m.dedup_entries = self.dedup.len() as u64;
        m
    }

    /// Whether the hub knows `conn` as open.
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The session attached to `conn`.
    pub fn session_id(&self, conn: ConnId) -> Option<&SessionId> {
        let c = self.conns.get(&conn)?;
        self.sessions.get(&c.session).map(|s| &s.id)
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

    // ----- (D) output -----

    /// The next action for the adapter. Call after every `handle*` call
    /// until it returns `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front()
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout)
    /// must be called; `None` if nothing is scheduled. Re-read it after
    /// every `handle*` call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- (B) input -----

    /// Processes every timer due at `now` (heartbeats, idle eviction,
    /// retransmission, session expiry). Calling it early is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Collect first: a timer re-armed while handling is never handled
        // twice in one call, so this always terminates.
        let mut due = Vec::new();
        while let Some((_, t)) = self.timers.pop_due(now) {
            due.push(t);
        }
        for t in due {
            match t {
                Timer::Ping(c) => self.on_ping_timer(now, c),
                Timer::Liveness(c) => self.on_liveness_timer(now, c),
                Timer::Idle(c) => self.on_idle_timer(now, c),
                Timer::Retransmit(c) => self.on_retransmit_timer(now, c),
                Timer::SessionExpiry(k) => self.on_session_expiry(k),
            }
        }
    }

    /// Processes one input.
    pub fn handle(&mut self, now: Instant, command: Command) {
        match command {
            Command::Connected {
                conn,
                identity,
                remote_addr,
                resume,
            } => self.on_connected(now, conn, identity, remote_addr, resume),
            Command::Received {
                conn,
                data,
                is_text,
            } => self.on_received(now, conn, &data, is_text),
            Command::Activity { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.last_activity = now;
                }
            }
            Command::ClientClosed { conn, code, reason } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.done =
                        matches!(code, CLOSE_NORMAL | CLOSE_NO_STATUS) && reason != KEEP_SESSION;
                }
            }
            Command::Disconnected { conn } => {
                let retain = !self.conns.get(&conn).is_some_and(|c| c.done);
                self.detach(now, conn, retain);
            }
            Command::Overflowed { conn } => {
                if self.conns.contains_key(&conn) {
                    self.out.metrics.slow_consumer_disconnects += 1;
                    self.close(now, conn, CLOSE_TRY_AGAIN_LATER, "slow consumer", true);
                }
            }
            Command::Bus(msg) => self.on_bus(now, msg),
            Command::Shutdown => {
                self.shutting_down = true;
                let all: Vec<ConnId> = self.conns.keys().copied().collect();
                for conn in all {
                    self.close(now, conn, CLOSE_GOING_AWAY, "server shutting down", false);
                }
            }
        }
    }

    // ----- connection lifecycle -----

    fn on_connected(
        &mut self,
        now: Instant,
        conn: ConnId,
        identity: Identity,
        remote_addr: Option<SocketAddr>,
        resume: Option<ResumeRequest>,
    ) {
        if self.conns.contains_key(&conn) {
            // A reused handle: the old connection must be gone.
            self.detach(now, conn, true);
        }
        if self.shutting_down {
            self.refuse(conn, CLOSE_GOING_AWAY, "server shutting down");
            return;
        }
        if self.conns.len() >= self.config.max_connections {
            self.refuse(conn, CLOSE_TRY_AGAIN_LATER, "server full");
            return;
        }
        let attempt = resume
            .as_ref()
            .map(|req| (req, self.try_resume(&identity, req)));
        let key = match &attempt {
            Some((_, Ok((key, _)))) => *key,
            _ => self.new_session(&identity),
        };
        self.attach(key, conn);
        self.conns.insert(
            conn,
            Conn {
                session: key,
                remote_addr,
                last_activity: now,
                last_message: now,
                bucket: TokenBucket::new(self.config.rate_per_sec, self.config.rate_burst, now),
                violations: ViolationWindow::new(
                    self.config.max_violations,
                    self.config.violation_window,
                ),
                done: false,
            },
        );
        self.out.metrics.connections_total += 1;
        self.timers
            .set(Timer::Ping(conn), after(now, self.config.ping_interval));
        self.timers.set(
            Timer::Liveness(conn),
            after(now, self.config.heartbeat_timeout),
        );
        if let Some(idle) = self.config.idle_timeout {
            self.timers.set(Timer::Idle(conn), after(now, idle));
        }

        let Self {
            sessions,
            out,
            config,
            timers,
            ..
        } = self;
        let Some(s) = sessions.get_mut(&key) else {
            return;
        };
        out.send(
            conn,
            &ServerMessage::Welcome {
                session: s.id.as_str(),
                user: s.user.as_str(),
                node: &config.node_id,
                ping_interval_ms: u64::try_from(config.ping_interval.as_millis())
                    .unwrap_or(u64::MAX),
                retention_ms: u64::try_from(config.session_retention.as_millis())
                    .unwrap_or(u64::MAX),
                max_message_size: config.max_message_size,
            },
        );
        let mut slow = false;
        match attempt {
            None => {}
            Some((_, Err(reason))) => {
                out.metrics.resumes_failed += 1;
                out.send(
                    conn,
                    &ServerMessage::ResumeFailed {
                        reason,
                        session: s.id.as_str(),
                    },
                );
            }
            Some((_, Ok((_, false)))) => {
                out.metrics.resumes_failed += 1;
                out.send(
                    conn,
                    &ServerMessage::ResumeFailed {
                        reason: ResumeFailure::Overflow,
                        session: s.id.as_str(),
                    },
                );
            }
            Some((req, Ok((_, true)))) => {
                out.metrics.resumes_ok += 1;
                let last_seq = req.last_seq.unwrap_or_default();
                let replay: Vec<(u64, Payload)> = s
                    .replay
                    .after(last_seq)
                    .map(|it| it.map(|(seq, p)| (seq, p.clone())).collect())
                    .unwrap_or_default();
                out.send(
                    conn,
                    &ServerMessage::Resumed {
                        session: s.id.as_str(),
                        last_seq,
                        replayed: replay.len() as u64,
                    },
                );
                for (seq, payload) in replay {
                    if s.delivery_acks {
                        let due = after(now, config.ack_timeout);
                        if !s.track(seq, &payload, due, config.max_unacked) {
                            slow = true;
                            break;
                        }
                        if timers.get(Timer::Retransmit(conn)).is_none() {
                            timers.set(Timer::Retransmit(conn), due);
                        }
                    }
                    out.deliver(conn, payload);
                }
            }
        }
        if slow {
            self.out.metrics.slow_consumer_disconnects += 1;
            self.close(now, conn, CLOSE_TRY_AGAIN_LATER, "slow consumer", true);
        }
    }

    /// `Ok((key, true))`: resumable with full replay; `Ok((key, false))`:
    /// session kept but messages were lost (overflow).
    fn try_resume(
        &mut self,
        identity: &Identity,
        req: &ResumeRequest,
    ) -> Result<(SessionKey, bool), ResumeFailure> {
        let Some(last_seq) = req.last_seq else {
            return Err(ResumeFailure::InvalidSeq);
        };
        let key = match self.minter.parse(&req.session) {
            ParsedSession::Ours(key) => key,
            ParsedSession::Foreign => return Err(ResumeFailure::Expired),
            ParsedSession::Invalid => return Err(ResumeFailure::Unknown),
        };
        let Some(s) = self.sessions.get(&key) else {
            return Err(ResumeFailure::Expired);
        };
        if !s.anonymous && (identity.anonymous || identity.user != s.user) {
            return Err(ResumeFailure::Forbidden);
        }
        if last_seq > s.last_seq() {
            return Err(ResumeFailure::InvalidSeq);
        }
        let complete = s.replay.after(last_seq).is_some();
        if let Some(old) = s.conn {
            // Hand the session over: the old connection goes, the session
            // stays (it is never counted as detached, so the detached-session
            // bound cannot discard it mid-resume).
            self.out.actions.push_back(Action::Close {
                conn: old,
                code: CLOSE_NORMAL,
                reason: "session resumed elsewhere",
            });
            self.release_conn(old);
            if let Some(s) = self.sessions.get_mut(&key) {
                s.conn = None;
                s.unacked.clear();
            }
        }
        Ok((key, complete))
    }

    fn new_session(&mut self, identity: &Identity) -> SessionKey {
        self.next_session += 1;
        let key = SessionKey(self.next_session);
        let session = Session::new(
            self.minter.mint(key),
            identity.user.clone(),
            identity.anonymous,
            ReplayBuffer::new(
                self.config.replay_max_messages,
                self.config.replay_max_bytes,
            ),
        );
        self.users
            .entry(identity.user.clone())
            .or_default()
            .insert(key);
        self.sessions.insert(key, session);
        key
    }

    fn attach(&mut self, key: SessionKey, conn: ConnId) {
        if self.timers.get(Timer::SessionExpiry(key)).is_some() {
            self.timers.cancel(Timer::SessionExpiry(key));
            self.detached -= 1;
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.conn = Some(conn);
        }
    }

    fn refuse(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        self.out.metrics.refused += 1;
        self.out
            .actions
            .push_back(Action::Close { conn, code, reason });
    }

    /// Emits `Close` and forgets the connection.
    fn close(&mut self, now: Instant, conn: ConnId, code: u16, reason: &'static str, retain: bool) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.out
            .actions
            .push_back(Action::Close { conn, code, reason });
        self.detach(now, conn, retain);
    }

    /// Forgets the connection; keeps its session for resume if `retain`.
    fn detach(&mut self, now: Instant, conn: ConnId, retain: bool) {
        let Some(key) = self.release_conn(conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.conn != Some(conn) {
            return;
        }
        s.conn = None;
        s.unacked.clear();
        if retain && self.detached < self.config.max_detached_sessions {
            self.timers.set(
                Timer::SessionExpiry(key),
                after(now, self.config.session_retention),
            );
            self.detached += 1;
        } else {
            self.destroy_session(key);
        }
    }

    /// Removes the connection and its timers; returns its session.
    fn release_conn(&mut self, conn: ConnId) -> Option<SessionKey> {
        let c = self.conns.remove(&conn)?;
        for t in [
            Timer::Ping(conn),
            Timer::Liveness(conn),
            Timer::Idle(conn),
            Timer::Retransmit(conn),
        ] {
            self.timers.cancel(t);
        }
        Some(c.session)
    }

    fn destroy_session(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.remove(&key) else {
            return;
        };
        for room in &s.rooms {
            if self.rooms.leave(room, key) && self.config.cluster {
                self.out
                    .actions
                    .push_back(Action::UnsubscribeBus(room.clone()));
            }
        }
        if let Some(set) = self.users.get_mut(&s.user) {
            set.remove(&key);
            if set.is_empty() {
                self.users.remove(&s.user);
            }
        }
    }

    // ----- timers -----

    fn on_ping_timer(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let due = after(c.last_activity, self.config.ping_interval);
        if due <= now {
            self.out.actions.push_back(Action::Ping { conn });
            self.timers
                .set(Timer::Ping(conn), after(now, self.config.ping_interval));
        } else {
            self.timers.set(Timer::Ping(conn), due);
        }
    }

    fn on_liveness_timer(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let due = after(c.last_activity, self.config.heartbeat_timeout);
        if due <= now {
            self.out.metrics.heartbeat_timeouts += 1;
            self.close(now, conn, CLOSE_GOING_AWAY, "heartbeat timeout", true);
        } else {
            self.timers.set(Timer::Liveness(conn), due);
        }
    }

    fn on_idle_timer(&mut self, now: Instant, conn: ConnId) {
        let (Some(c), Some(idle)) = (self.conns.get(&conn), self.config.idle_timeout) else {
            return;
        };
        let due = after(c.last_message, idle);
        if due <= now {
            self.out.metrics.idle_evictions += 1;
            self.close(now, conn, CLOSE_GOING_AWAY, "idle timeout", true);
        } else {
            self.timers.set(Timer::Idle(conn), due);
        }
    }

    fn on_retransmit_timer(&mut self, now: Instant, conn: ConnId) {
        let Some(key) = self.conns.get(&conn).map(|c| c.session) else {
            return;
        };
        let Self {
            sessions,
            out,
            config,
            timers,
            ..
        } = self;
        let Some(s) = sessions.get_mut(&key) else {
            return;
        };
        let mut dead = false;
        let mut next: Option<Instant> = None;
        for u in s.unacked.values_mut() {
            if u.due <= now {
                if u.attempts >= config.ack_max_retries {
                    dead = true;
                    break;
                }
                u.attempts += 1;
                let factor = 1u32.checked_shl(u.attempts).unwrap_or(u32::MAX);
                let backoff = config
                    .ack_timeout
                    .saturating_mul(factor)
                    .min(config.ack_max_backoff);
                u.due = after(now, backoff);
                out.metrics.retransmissions += 1;
                out.deliver(conn, u.payload.clone());
            }
            next = Some(next.map_or(u.due, |n| n.min(u.due)));
        }
        if dead {
            self.out.metrics.ack_timeouts += 1;
            self.close(now, conn, CLOSE_POLICY, "delivery ack timeout", true);
        } else if let Some(n) = next {
            timers.set(Timer::Retransmit(conn), n);
        }
    }

    fn on_session_expiry(&mut self, key: SessionKey) {
        let detached = self.sessions.get(&key).is_some_and(|s| s.conn.is_none());
        if detached {
            self.detached -= 1;
            self.destroy_session(key);
        }
    }

    // ----- client messages -----

    fn on_received(&mut self, now: Instant, conn: ConnId, data: &[u8], is_text: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_activity = now;
        c.last_message = now;
        self.out.metrics.messages_in += 1;
        if !is_text {
            self.out.error(
                conn,
                ErrorCode::BinaryUnsupported,
                "binary messages are not supported",
            );
            self.violation(now, conn);
            return;
        }
        let too_large = data.len() > self.config.max_message_size;
        let msg = match protocol::parse(data) {
            Ok(msg) => msg,
            Err(bad) => {
                if too_large {
                    self.out.error(
                        conn,
                        ErrorCode::TooLarge,
                        "message exceeds max_message_size",
                    );
                } else if let Some(op) = bad.op {
                    self.out.metrics.protocol_errors += 1;
                    self.nack(conn, op, bad.id.as_deref(), None, NackReason::BadRequest);
                } else {
                    self.out.error(conn, bad.code, bad.detail);
                }
                self.violation(now, conn);
                return;
            }
        };
        if too_large {
            match msg.op() {
                Some(op) => self.nack(conn, op, msg.id(), msg.room(), NackReason::TooLarge),
                None => self.out.error(
                    conn,
                    ErrorCode::TooLarge,
                    "message exceeds max_message_size",
                ),
            }
            self.violation(now, conn);
            return;
        }
        // Everything that makes the hub work or answer costs a token; only
        // delivery acks (answers to what the hub sent) are free.
        if !matches!(msg, ClientMessage::Ack { .. }) {
            let allowed = self
                .conns
                .get_mut(&conn)
                .is_some_and(|c| c.bucket.try_take(now));
            if !allowed {
                match msg.op() {
                    Some(op) => {
                        let room = msg.room().filter(|r| self.valid_name(r));
                        self.nack(conn, op, msg.id(), room, NackReason::RateLimited);
                        self.violation(now, conn);
                    }
                    // Pings and configures over the limit are dropped
                    // unanswered; they are not violations (a fast
                    // application heartbeat must not cost the session).
                    None => self.out.metrics.dropped_over_rate += 1,
                }
                return;
            }
        }
        self.dispatch(now, conn, msg);
    }

    fn dispatch(&mut self, now: Instant, conn: ConnId, msg: ClientMessage<'_>) {
        match msg {
            ClientMessage::Join { room, id } => self.on_join(now, conn, &room, id.as_deref()),
            ClientMessage::Leave { room, id } => self.on_leave(now, conn, &room, id.as_deref()),
            ClientMessage::Publish { room, id, data } => {
                if !self.valid_name(&room) || !self.valid_name(&id) {
                    self.bad_request(now, conn, Op::Publish, Some(&id));
                    return;
                }
                let Some(members) = self.rooms.members(&room) else {
                    self.nack(conn, Op::Publish, Some(&id), None, NackReason::UnknownRoom);
                    return;
                };
                let Some(key) = self.conns.get(&conn).map(|c| c.session) else {
                    return;
                };
                if !members.contains(&key) {
                    self.nack(conn, Op::Publish, Some(&id), None, NackReason::NotMember);
                    return;
                }
                let room = RoomName::new(&*room);
                let user = self.sessions.get(&key).map(|s| s.user.clone());
                if !user.is_some_and(|u| self.authoriser.may_publish(&u, &room)) {
                    self.nack(conn, Op::Publish, Some(&id), None, NackReason::Forbidden);
                    return;
                }
                self.publish(now, conn, Op::Publish, BusTarget::Room(room), &id, data);
            }
            ClientMessage::Send { user: to, id, data } => {
                if !self.valid_name(&to) || !self.valid_name(&id) {
                    self.bad_request(now, conn, Op::Send, Some(&id));
                    return;
                }
                let to = UserId::new(&*to);
                let allowed = self
                    .user(conn)
                    .is_some_and(|u| self.authoriser.may_send(u, &to));
                if !allowed {
                    self.nack(conn, Op::Send, Some(&id), None, NackReason::Forbidden);
                    return;
                }
                if !self.config.cluster && !self.users.contains_key(&to) {
                    self.nack(conn, Op::Send, Some(&id), None, NackReason::UnknownUser);
                    return;
                }
                self.publish(now, conn, Op::Send, BusTarget::User(to), &id, data);
            }
            ClientMessage::Broadcast { id, data } => {
                if !self.valid_name(&id) {
                    self.bad_request(now, conn, Op::Broadcast, Some(&id));
                    return;
                }
                let allowed = self
                    .user(conn)
                    .is_some_and(|u| self.authoriser.may_broadcast(u));
                if !allowed {
                    self.nack(conn, Op::Broadcast, Some(&id), None, NackReason::Forbidden);
                    return;
                }
                self.publish(now, conn, Op::Broadcast, BusTarget::Broadcast, &id, data);
            }
            ClientMessage::Ack { seq } => {
                if let Some(s) = self.session_mut(conn) {
                    s.unacked.remove(&seq);
                }
            }
            ClientMessage::Configure { delivery_acks } => {
                if let Some(s) = self.session_mut(conn) {
                    s.delivery_acks = delivery_acks;
                    if !delivery_acks {
                        s.unacked.clear();
                        self.timers.cancel(Timer::Retransmit(conn));
                    }
                }
                self.out
                    .send(conn, &ServerMessage::Configured { delivery_acks });
            }
            ClientMessage::Ping { id } => {
                self.out
                    .send(conn, &ServerMessage::Pong { id: id.as_deref() });
            }
        }
    }

    /// Validates a join or leave request and finds the sender's session;
    /// a malformed name gets `bad_request`.
    fn room_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        op: Op,
        room: &str,
        id: Option<&str>,
    ) -> Option<SessionKey> {
        if !self.valid_name(room) || id.is_some_and(|i| !self.valid_name(i)) {
            let room = Some(room).filter(|r| self.valid_name(r));
            let id = id.filter(|i| self.valid_name(i));
            self.nack(conn, op, id, room, NackReason::BadRequest);
            self.violation(now, conn);
            return None;
        }
        self.conns.get(&conn).map(|c| c.session)
    }

    fn on_join(&mut self, now: Instant, conn: ConnId, room: &str, id: Option<&str>) {
        let Some(key) = self.room_request(now, conn, Op::Join, room, id) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let name = RoomName::new(room);
        if !s.rooms.contains(room) {
            if s.rooms.len() >= self.config.max_rooms_per_conn {
                self.nack(conn, Op::Join, id, Some(room), NackReason::TooManyRooms);
                return;
            }
            if !self.authoriser.may_join(&s.user, &name) {
                self.nack(conn, Op::Join, id, Some(room), NackReason::Forbidden);
                return;
            }
            s.rooms.insert(name.clone());
            if self.rooms.join(&name, key) && self.config.cluster {
                self.out.actions.push_back(Action::SubscribeBus(name));
            }
        }
        self.out.send(
            conn,
            &ServerMessage::Ack {
                op: Op::Join,
                id,
                room: Some(room),
                duplicate: false,
            },
        );
    }

    fn on_leave(&mut self, now: Instant, conn: ConnId, room: &str, id: Option<&str>) {
        let Some(key) = self.room_request(now, conn, Op::Leave, room, id) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(name) = s.rooms.take(room) else {
            self.nack(conn, Op::Leave, id, Some(room), NackReason::NotMember);
            return;
        };
        if self.rooms.leave(&name, key) && self.config.cluster {
            self.out.actions.push_back(Action::UnsubscribeBus(name));
        }
        self.out.send(
            conn,
            &ServerMessage::Ack {
                op: Op::Leave,
                id,
                room: Some(room),
                duplicate: false,
            },
        );
    }

    /// Acks (possibly as a duplicate), delivers locally, and forwards to the
    /// bus. All checks have passed.
    fn publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        op: Op,
        target: BusTarget,
        id: &str,
        data: &RawValue,
    ) {
        let Some(from) = self.user(conn).cloned() else {
            return;
        };
        let duplicate = match self.dedup.check_and_insert(now, &from, id) {
            Seen::New => false,
            Seen::Duplicate => true,
            Seen::Full => {
                self.nack(conn, op, Some(id), None, NackReason::Busy);
                return;
            }
        };
        self.out.send(
            conn,
            &ServerMessage::Ack {
                op,
                id: Some(id),
                room: None,
                duplicate,
            },
        );
        if duplicate {
            self.out.metrics.duplicates_suppressed += 1;
            return;
        }
        self.out.metrics.publishes += 1;
        let body = message_body(&target, id, &from, data);
        self.fan_out(now, &target, &body);
        if self.config.cluster {
            self.out.metrics.bus_out += 1;
            self.out.actions.push_back(Action::PublishBus(BusMessage {
                origin: self.config.node_id.clone(),
                target,
                from,
                id: id.to_owned(),
                data: data.to_owned(),
            }));
        }
    }

    /// Delivers one encoded body to every local session of `target`: each
    /// gets its own head (sequence number) and a refcounted clone of `body`.
    fn fan_out(&mut self, now: Instant, target: &BusTarget, body: &Bytes) {
        let Self {
            sessions,
            rooms,
            users,
            timers,
            out,
            config,
            ..
        } = self;
        let mut slow = Vec::new();
        let mut one = |s: &mut Session| {
            let (seq, payload) = s.stamp(body);
            let Some(conn) = s.conn else {
                return;
            };
            if s.delivery_acks {
                let due = after(now, config.ack_timeout);
                if !s.track(seq, &payload, due, config.max_unacked) {
                    slow.push(conn);
                    return;
                }
                if timers.get(Timer::Retransmit(conn)).is_none() {
                    timers.set(Timer::Retransmit(conn), due);
                }
            }
            out.deliver(conn, payload);
        };
        match target {
            BusTarget::Room(room) => {
                for key in rooms.members(room.as_str()).into_iter().flatten() {
                    if let Some(s) = sessions.get_mut(key) {
                        one(s);
                    }
                }
            }
            BusTarget::User(user) => {
                for key in users.get(user).into_iter().flatten() {
                    if let Some(s) = sessions.get_mut(key) {
                        one(s);
                    }
                }
            }
            BusTarget::Broadcast => sessions.values_mut().for_each(one),
        }
        for conn in slow {
            self.out.metrics.slow_consumer_disconnects += 1;
            self.close(now, conn, CLOSE_TRY_AGAIN_LATER, "slow consumer", true);
        }
    }

    fn on_bus(&mut self, now: Instant, msg: BusMessage) {
        self.out.metrics.bus_in += 1;
        if msg.origin == self.config.node_id {
            self.out.metrics.bus_echoes_ignored += 1;
            return;
        }
        match self.dedup.check_and_insert(now, &msg.from, &msg.id) {
            Seen::New => {}
            Seen::Duplicate => {
                self.out.metrics.duplicates_suppressed += 1;
                return;
            }
            // The other node accepted it; deliver it, unprotected.
            Seen::Full => self.out.metrics.dedup_full_bus += 1,
        }
        let body = message_body(&msg.target, &msg.id, &msg.from, &msg.data);
        self.fan_out(now, &msg.target, &body);
    }

    // ----- helpers -----

    fn session_mut(&mut self, conn: ConnId) -> Option<&mut Session> {
        let key = self.conns.get(&conn)?.session;
        self.sessions.get_mut(&key)
    }

    fn valid_name(&self, s: &str) -> bool {
        !s.is_empty() && s.len() <= self.config.max_name_len
    }

    fn nack(
        &mut self,
        conn: ConnId,
        op: Op,
        id: Option<&str>,
        room: Option<&str>,
        reason: NackReason,
    ) {
        self.out.metrics.nacks.bump(reason);
        self.out.send(
            conn,
            &ServerMessage::Nack {
                op,
                id,
                room,
                reason,
            },
        );
    }

    fn bad_request(&mut self, now: Instant, conn: ConnId, op: Op, id: Option<&str>) {
        self.nack(conn, op, id, None, NackReason::BadRequest);
        self.violation(now, conn);
    }

    /// Records a violation; closes the connection (1008) when there were
    /// too many recently. The session is not kept: an abusive client does
    /// not get to resume.
    fn violation(&mut self, now: Instant, conn: ConnId) {
        let exceeded = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.violations.record(now));
        if exceeded {
            self.out.metrics.abuse_closes += 1;
            self.close(
                now,
                conn,
                CLOSE_POLICY,
                "too many protocol violations",
                false,
            );
        }
    }

    /// Checks internal consistency and configured bounds. For tests and
    /// fuzzing; O(everything).
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let cfg = &self.config;
        for (conn, c) in &self.conns {
            let s = self
                .sessions
                .get(&c.session)
                .ok_or_else(|| format!("{conn}: no session"))?;
            if s.conn != Some(*conn) {
                return Err(format!("{conn}: session points elsewhere"));
            }
        }
        let mut detached = 0;
        for (key, s) in &self.sessions {
            match s.conn {
                Some(c) => {
                    if self.conns.get(&c).map(|c| c.session) != Some(*key) {
                        return Err(format!("{key:?}: attached to unknown {c}"));
                    }
                }
                None => {
                    detached += 1;
                    if self.timers.get(Timer::SessionExpiry(*key)).is_none() {
                        return Err(format!("{key:?}: detached without expiry"));
                    }
                    if !s.unacked.is_empty() {
                        return Err(format!("{key:?}: detached with unacked"));
                    }
                }
            }
            if s.rooms.len() > cfg.max_rooms_per_conn {
                return Err(format!("{key:?}: too many rooms"));
            }
            for r in &s.rooms {
                if !self
                    .rooms
                    .members(r.as_str())
                    .is_some_and(|m| m.contains(key))
                {
                    return Err(format!("{key:?}: not in room {r}"));
                }
            }
            if s.replay.len() > cfg.replay_max_messages || s.replay.bytes() > cfg.replay_max_bytes {
                return Err(format!("{key:?}: replay buffer over bounds"));
            }
            if s.unacked.len() > cfg.max_unacked {
                return Err(format!("{key:?}: too many unacked"));
            }
            if !self.users.get(&s.user).is_some_and(|u| u.contains(key)) {
                return Err(format!("{key:?}: missing from user index"));
            }
        }
        if detached != self.detached || detached > cfg.max_detached_sessions {
            return Err(format!("detached count {detached} vs {}", self.detached));
        }
        for (room, members) in self.rooms.iter() {
            if members.is_empty() {
                return Err(format!("empty room {room} not freed"));
            }
            for m in members {
                if !self.sessions.get(m).is_some_and(|s| s.rooms.contains(room)) {
                    return Err(format!("room {room}: stale member {m:?}"));
                }
            }
        }
        let user_sessions: usize = self.users.values().map(BTreeSet::len).sum();
        if user_sessions != self.sessions.len() {
            return Err("user index out of sync".to_owned());
        }
        if self.dedup.len() > cfg.dedup_max_entries
            || self.dedup.footprint() > cfg.dedup_max_entries
        {
            return Err("dedup window over bounds".to_owned());
        }
        if self.timers.len() > 4 * self.conns.len() + self.sessions.len() {
            return Err("timer leak".to_owned());
        }
        if self.conns.len() > cfg.max_connections {
            return Err("too many connections".to_owned());
        }
        Ok(())
    }
}
