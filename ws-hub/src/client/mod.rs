//! The hub client as a sans-IO state machine: the client's half of the
//! exactly-once guarantee (see `docs/PROTOCOL.md`).
//!
//! [`Client`] keeps the session and the highest `seq` processed, reconnects
//! with full-jitter exponential backoff, resumes on every reconnect, joins
//! the application's rooms again when the session was lost (and reports
//! one [`Gap`]), ignores duplicates, sends delivery acks when asked, and
//! retries every unanswered publish, send and broadcast with the **same id**
//! after a reconnect, so the server's de-dup window makes it exactly-once.
//! With a token provider ([`ClientConfig::token_provider`]) it also keeps
//! the connection's token fresh: on `token_expiring` it asks for a new
//! token ([`Action::NeedToken`]) and sends `refresh` with it; after a 4001
//! close (token expired) it reconnects with a fresh token and resumes.
//!
//! Like [`Hub`](crate::Hub) it does no IO, reads no clock and draws its
//! randomness from [`ClientConfig::seed`]. A driver owns the socket and the
//! timer:
//!
//! ```text
//! client.connect(now)
//! loop {
//!     while let Some(a) = client.poll_action() { perform it (NeedToken, Open, Send, Close) }
//!     while let Some(e) = client.poll_event()  { hand it to the application }
//!     wait for: a socket event, an application call, or client.poll_timeout()
//!     client.handle(now, Input::...)   or   client.handle_timeout(now)
//! }
//! ```
//!
//! The driver MUST drain [`Client::poll_action`] after every call that
//! takes `&mut self`, and then re-read [`Client::poll_timeout`] (one
//! deadline: the next attempt, the attempt's timeout, or the watchdog).
//! After [`Action::Close`] or [`Action::Open`] it MUST discard the old
//! connection and feed nothing more from it. `now` MUST be monotonic.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ws_hub::client::{Action, Client, ClientConfig, Event, Input, State};
//!
//! let mut client = Client::new(ClientConfig::new("ws://127.0.0.1:8080/ws")).unwrap();
//! let now = Instant::now(); // drivers read their runtime's clock
//! client.connect(now);
//! assert_eq!(client.poll_action(), Some(Action::Open { url: "ws://127.0.0.1:8080/ws".into() }));
//! client.handle(now, Input::Connected);
//! client.handle(now, Input::Text(r#"{"type":"welcome","session":"S","user":"u","ping_interval_ms":30000}"#));
//! assert_eq!(client.state(), State::Connected);
//! let id = client.join("lobby").unwrap();
//! assert_eq!(
//!     client.poll_action(),
//!     Some(Action::Send { text: format!(r#"{{"type":"join","room":"lobby","id":"{id}"}}"#) })
//! );
//! // The connection dies: reconnect after the backoff, resuming the session.
//! client.handle(now, Input::Closed { code: None, reason: "" });
//! let retry = client.poll_timeout().unwrap();
//! assert!(retry >= now + Duration::from_millis(500) && retry <= now + Duration::from_secs(1));
//! client.handle_timeout(retry);
//! assert_eq!(
//!     client.poll_action(),
//!     Some(Action::Open { url: "ws://127.0.0.1:8080/ws?session=S&last_seq=0".into() })
//! );
//! # let _ = std::iter::from_fn(|| client.poll_event()).count();
//! ```

mod backoff;
mod event;
mod wire;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use thiserror::Error;

pub use event::{
    Ack, Action, Event, Gap, GapReason, Input, Message, Op, OpError, Reply, State, StateChange,
    SubmitError, Target,
};

use crate::protocol::ResumeFailure;
use backoff::{Backoff, SplitMix64};
use wire::Request;

/// Close code the client uses when it abandons a connection it will
/// replace (watchdog, connect timeout), from the private-use range: not
/// 1000, which would end the session on the server.
pub const CLOSE_WATCHDOG: u16 = 4000;

/// Close code of a normal close (the application's [`Client::close`]).
const CLOSE_NORMAL: u16 = 1000;
/// The server's terminal close code (see `docs/PROTOCOL.md`).
const CLOSE_POLICY: u16 = 1008;
/// What a connection lost without a close frame counts as.
const CLOSE_ABNORMAL: u16 = 1006;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The hub's WebSocket URL, e.g. `ws://host:8080/ws`. Token and resume
    /// parameters are appended to its query string.
    pub url: String,
    /// A fixed token sent as `?token=` (ignored with
    /// [`token_provider`](Self::token_provider)).
    pub token: Option<String>,
    /// Ask for a token ([`Action::NeedToken`]) before every attempt, again
    /// after an HTTP 401, and on `token_expiring` (the answer is sent as
    /// `refresh`). Default `false`.
    pub token_provider: bool,
    /// First reconnect delay (lower bound of every delay). Default 500 ms.
    pub backoff_min: Duration,
    /// Upper bound of every reconnect delay. Default 20 s.
    pub backoff_max: Duration,
    /// A connection that stayed up this long resets the backoff to its
    /// first step when it drops. Default 10 s.
    pub stable_after: Duration,
    /// Time allowed from the start of an attempt (token, open, upgrade) to
    /// `welcome`. Default 10 s.
    pub connect_timeout: Duration,
    /// The watchdog: with nothing received for the server's
    /// `ping_interval_ms` plus this grace, the connection is presumed dead
    /// and replaced. Default 10 s.
    pub ping_grace: Duration,
    /// Ask the server for delivery acks and ack every message. Default
    /// `false`.
    pub delivery_acks: bool,
    /// At most this many unanswered requests (queued while offline or in
    /// flight); one more is [`SubmitError::BufferFull`]. Default 1024.
    pub max_pending: usize,
    /// Seed for backoff jitter and generated ids. Give every client a
    /// different one (drivers take it from the OS).
    pub seed: u64,
}

impl ClientConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            token_provider: false,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(20),
            stable_after: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            ping_grace: Duration::from_secs(10),
            delivery_acks: false,
            max_pending: 1024,
            seed: 0,
        }
    }
}

/// A [`ClientConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClientConfigError {
    /// The URL is not `ws://` or `wss://`.
    #[error("url must start with ws:// or wss://")]
    Url,
    /// A duration or limit that must be positive is zero.
    #[error("`{0}` must be greater than zero")]
    Zero(&'static str),
    /// `backoff_min` exceeds `backoff_max`.
    #[error("`backoff_min` exceeds `backoff_max`")]
    Backoff,
}

/// A request waiting for its ack or nack.
#[derive(Debug)]
struct Pending {
    id: String,
    op: Op,
    room: Option<String>,
    frame: String,
    sent: bool,
}

/// Where the renewal of the connection's token stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Renewal {
    /// Nothing under way.
    Idle,
    /// [`Action::NeedToken`] issued after `token_expiring`.
    AwaitingToken,
    /// `refresh` sent with this id.
    Sent(String),
}

/// The internal state, finer than [`State`].
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting; `retry_at` is the next attempt (none before `connect`).
    Disconnected { retry_at: Option<Instant> },
    /// Waiting for [`Input::Token`].
    WaitToken { deadline: Instant },
    /// [`Action::Open`] issued.
    Opening { deadline: Instant },
    /// Upgraded, waiting for `welcome`.
    Handshaking { deadline: Instant },
    /// Welcome received.
    Connected { since: Instant, last_rx: Instant },
    /// Terminal.
    Closed,
}

impl Phase {
    fn state(self) -> State {
        match self {
            Self::Disconnected { .. } => State::Disconnected,
            Self::WaitToken { .. } | Self::Opening { .. } | Self::Handshaking { .. } => {
                State::Connecting
            }
            Self::Connected { .. } => State::Connected,
            Self::Closed => State::Closed,
        }
    }
}

/// The sans-IO hub client (see the [module docs](self)).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    rng: SplitMix64,
    backoff: Backoff,
    id_prefix: String,
    next_id: u64,
    phase: Phase,
    /// Our session and the highest `seq` processed in it.
    session: Option<String>,
    user: Option<String>,
    last_seq: u64,
    /// The session and `last_seq` the current attempt asked to resume.
    resuming: Option<(String, u64)>,
    /// Rooms the application joined (acked joins minus acked leaves).
    rooms: BTreeSet<String>,
    /// Joins the client made on its own on this connection: id → room.
    rejoins: HashMap<String, String>,
    pending: VecDeque<Pending>,
    token: Option<String>,
    /// Set after a 401 while the provider is asked for a new token.
    rejected: Option<Option<String>>,
    /// Token renewal on this connection: waiting for the provider, or for
    /// the answer to the `refresh` with this id.
    renewal: Renewal,
    ping_interval: Duration,
    /// The server's `max_message_size`, from `welcome`.
    max_message: Option<usize>,
    duplicates: u64,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl Client {
    /// A client in [`State::Disconnected`]; nothing happens before
    /// [`connect`](Self::connect), but requests may be queued.
    pub fn new(config: ClientConfig) -> Result<Self, ClientConfigError> {
        if !(config.url.starts_with("ws://") || config.url.starts_with("wss://")) {
            return Err(ClientConfigError::Url);
        }
        for (name, d) in [
            ("backoff_min", config.backoff_min),
            ("connect_timeout", config.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(ClientConfigError::Zero(name));
            }
        }
        if config.max_pending == 0 {
            return Err(ClientConfigError::Zero("max_pending"));
        }
        if config.backoff_min > config.backoff_max {
            return Err(ClientConfigError::Backoff);
        }
        let mut rng = SplitMix64::new(config.seed);
        let id_prefix = format!("{:016x}", rng.next_u64());
        Ok(Self {
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            token: config.token.clone(),
            config,
            rng,
            id_prefix,
            next_id: 0,
            phase: Phase::Disconnected { retry_at: None },
            session: None,
            user: None,
            last_seq: 0,
            resuming: None,
            rooms: BTreeSet::new(),
            rejoins: HashMap::new(),
            pending: VecDeque::new(),
            rejected: None,
            renewal: Renewal::Idle,
            ping_interval: Duration::from_secs(30),
            max_message: None,
            duplicates: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    // ---- (A) getters ----------------------------------------------------

    /// The connection state.
    pub fn state(&self) -> State {
        self.phase.state()
    }

    /// The current session id, once a `welcome` came.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The user the server knows us as, once a `welcome` came.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The highest `seq` processed in the current session.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Rooms the application joined (and the client keeps joined).
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.iter().map(String::as_str)
    }

    /// Unanswered requests (queued or in flight).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Messages dropped as duplicates (a `seq` already processed).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    // ---- (C) commands from the application --------------------------------

    /// Starts connecting now (from [`State::Disconnected`] or
    /// [`State::Closed`]); a no-op while connecting or connected. The
    /// session is kept, so a later connect resumes it.
    pub fn connect(&mut self, now: Instant) {
        match self.phase {
            Phase::Disconnected { .. } | Phase::Closed => {
                self.rejected = None;
                self.start_attempt(now);
            }
            _ => {}
        }
    }

    /// Closes with 1000 and stops reconnecting. Unanswered requests are
    /// answered with [`OpError::Closed`].
    pub fn close(&mut self) {
        self.terminate(Some(CLOSE_NORMAL), "client closed".to_owned(), true);
    }

    /// Joins `room` (kept joined across reconnects until [`leave`](Self::leave)).
    /// Returns the request id.
    pub fn join(&mut self, room: &str) -> Result<String, SubmitError> {
        non_empty(room, "room")?;
        let id = self.check_id(None)?;
        let frame = Request::Join { room, id: &id }.encode();
        self.submit(id, Op::Join, Some(room), frame)
    }

    /// Leaves `room`. Returns the request id.
    pub fn leave(&mut self, room: &str) -> Result<String, SubmitError> {
        non_empty(room, "room")?;
        let id = self.check_id(None)?;
        let frame = Request::Leave { room, id: &id }.encode();
        self.submit(id, Op::Leave, Some(room), frame)
    }

    /// Publishes `data` to `room` with the given id or a generated unique
    /// one (returned). Retried with the same id until acked or nacked.
    pub fn publish(
        &mut self,
        room: &str,
        data: &RawValue,
        id: Option<&str>,
    ) -> Result<String, SubmitError> {
        non_empty(room, "room")?;
        let id = self.check_id(id)?;
        let frame = Request::Publish {
            room,
            id: &id,
            data,
        }
        .encode();
        self.submit(id, Op::Publish, None, frame)
    }

    /// Sends `data` to every connection of `user` (see
    /// [`publish`](Self::publish) for ids and retries).
    pub fn send(
        &mut self,
        user: &str,
        data: &RawValue,
        id: Option<&str>,
    ) -> Result<String, SubmitError> {
        non_empty(user, "user")?;
        let id = self.check_id(id)?;
        let frame = Request::Send {
            user,
            id: &id,
            data,
        }
        .encode();
        self.submit(id, Op::Send, None, frame)
    }

    /// Broadcasts `data` to every connection (see [`publish`](Self::publish)).
    pub fn broadcast(&mut self, data: &RawValue, id: Option<&str>) -> Result<String, SubmitError> {
        let id = self.check_id(id)?;
        let frame = Request::Broadcast { id: &id, data }.encode();
        self.submit(id, Op::Broadcast, None, frame)
    }

    // ---- (B) inputs ---------------------------------------------------------

    /// Feeds what happened on the connection (or the token provider's
    /// answer). Inputs that do not fit the state are ignored.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) {
        match (input, self.phase) {
            (Input::Token(token), Phase::WaitToken { .. }) => {
                if let Some(old) = self.rejected.take()
                    && (token.is_none() || token == old)
                {
                    self.terminate(None, "unauthorized (HTTP 401)".to_owned(), false);
                    return;
                }
                self.token = token;
                self.open(now);
            }
            (Input::Token(token), Phase::Connected { .. })
                if self.renewal == Renewal::AwaitingToken =>
            {
                self.renew(token);
            }
            (Input::Connected, Phase::Opening { deadline }) => {
                self.phase = Phase::Handshaking { deadline };
            }
            (Input::Text(text), Phase::Handshaking { .. } | Phase::Connected { .. }) => {
                self.touch(now);
                self.on_text(now, text);
            }
            (Input::Activity, Phase::Connected { since, .. }) => {
                self.phase = Phase::Connected {
                    since,
                    last_rx: now,
                };
            }
            (
                Input::Closed { code, reason },
                Phase::Opening { .. } | Phase::Handshaking { .. } | Phase::Connected { .. },
            ) => {
                let terminal = code == Some(CLOSE_POLICY)
                    || (code == Some(CLOSE_NORMAL) && reason == "session resumed elsewhere");
                let code = Some(code.unwrap_or(CLOSE_ABNORMAL));
                let reason = if reason.is_empty() {
                    "connection lost".to_owned()
                } else {
                    reason.to_owned()
                };
                if terminal {
                    self.terminate(code, reason, false);
                } else {
                    self.drop_connection(now, code, reason);
                }
            }
            (Input::ConnectFailed { status }, Phase::Opening { deadline }) => match status {
                Some(401) if self.config.token_provider => {
                    self.rejected = Some(self.token.clone());
                    self.phase = Phase::WaitToken { deadline };
                    self.actions.push_back(Action::NeedToken);
                }
                Some(401) => self.terminate(None, "unauthorized (HTTP 401)".to_owned(), false),
                Some(s) => self.drop_connection(now, None, format!("connect failed (HTTP {s})")),
                None => self.drop_connection(now, None, "connect failed".to_owned()),
            },
            _ => {}
        }
    }

    /// Fires the deadline from [`poll_timeout`](Self::poll_timeout) if it
    /// has passed (early or extra calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(t) = self.poll_timeout() else {
            return;
        };
        if now < t {
            return;
        }
        match self.phase {
            Phase::Disconnected { .. } => self.start_attempt(now),
            Phase::WaitToken { .. } => {
                self.rejected = None;
                self.drop_connection(now, None, "connect timeout".to_owned());
            }
            Phase::Opening { .. } | Phase::Handshaking { .. } => {
                self.actions.push_back(Action::Close {
                    code: CLOSE_WATCHDOG,
                    reason: "connect timeout",
                });
                self.drop_connection(now, None, "connect timeout".to_owned());
            }
            Phase::Connected { .. } => {
                self.actions.push_back(Action::Close {
                    code: CLOSE_WATCHDOG,
                    reason: "watchdog timeout",
                });
                self.drop_connection(now, Some(CLOSE_WATCHDOG), "watchdog timeout".to_owned());
            }
            Phase::Closed => {}
        }
    }

    // ---- (D) outputs -------------------------------------------------------

    /// The next thing the driver must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The one deadline: the next attempt, the current attempt's timeout,
    /// or the watchdog. `None` when idle or closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Disconnected { retry_at } => retry_at,
            Phase::WaitToken { deadline }
            | Phase::Opening { deadline }
            | Phase::Handshaking { deadline } => Some(deadline),
            Phase::Connected { last_rx, .. } => {
                Some(last_rx + self.ping_interval + self.config.ping_grace)
            }
            Phase::Closed => None,
        }
    }

    // ---- internals -----------------------------------------------------------

    fn set_phase(&mut self, phase: Phase, code: Option<u16>, reason: String) {
        let from = self.phase.state();
        self.phase = phase;
        let to = phase.state();
        if from != to {
            self.events.push_back(Event::State(StateChange {
                from,
                to,
                code,
                reason,
            }));
        }
    }

    fn touch(&mut self, now: Instant) {
        if let Phase::Connected { since, .. } = self.phase {
            self.phase = Phase::Connected {
                since,
                last_rx: now,
            };
        }
    }

    fn start_attempt(&mut self, now: Instant) {
        let deadline = now + self.config.connect_timeout;
        if self.config.token_provider {
            self.set_phase(
                Phase::WaitToken { deadline },
                None,
                "asking for a token".to_owned(),
            );
            self.actions.push_back(Action::NeedToken);
        } else {
            self.open(now);
        }
    }

    fn open(&mut self, now: Instant) {
        let deadline = match self.phase {
            Phase::WaitToken { deadline } => deadline,
            _ => now + self.config.connect_timeout,
        };
        self.resuming = self.session.clone().map(|s| (s, self.last_seq));
        let mut params = Vec::new();
        if let Some(t) = &self.token {
            params.push(format!("token={}", wire::percent_encode(t)));
        }
        if let Some((s, seq)) = &self.resuming {
            params.push(format!("session={}", wire::percent_encode(s)));
            params.push(format!("last_seq={seq}"));
        }
        let mut url = self.config.url.clone();
        if !params.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&params.join("&"));
        }
        self.set_phase(Phase::Opening { deadline }, None, "connecting".to_owned());
        self.actions.push_back(Action::Open { url });
    }

    /// The connection (or attempt) is gone: schedule the next attempt.
    fn drop_connection(&mut self, now: Instant, code: Option<u16>, reason: String) {
        if let Phase::Connected { since, .. } = self.phase
            && now.saturating_duration_since(since) >= self.config.stable_after
        {
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay(&mut self.rng);
        for p in &mut self.pending {
            p.sent = false;
        }
        self.rejoins.clear();
        self.renewal = Renewal::Idle;
        self.set_phase(
            Phase::Disconnected {
                retry_at: Some(now + delay),
            },
            code,
            reason,
        );
    }

    /// Terminal: [`State::Closed`], every unanswered request abandoned.
    fn terminate(&mut self, code: Option<u16>, reason: String, send_close: bool) {
        let has_socket = matches!(
            self.phase,
            Phase::Opening { .. } | Phase::Handshaking { .. } | Phase::Connected { .. }
        );
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if send_close && has_socket {
            self.actions.push_back(Action::Close {
                code: CLOSE_NORMAL,
                reason: "client closed",
            });
        }
        self.rejected = None;
        self.rejoins.clear();
        self.renewal = Renewal::Idle;
        self.set_phase(Phase::Closed, code, reason);
        for p in self.pending.drain(..) {
            self.events.push_back(Event::Reply(Reply {
                id: p.id,
                op: p.op,
                result: Err(OpError::Closed),
            }));
        }
    }

    fn check_id(&mut self, id: Option<&str>) -> Result<String, SubmitError> {
        if matches!(self.phase, Phase::Closed) {
            return Err(SubmitError::Closed);
        }
        if self.pending.len() >= self.config.max_pending {
            return Err(SubmitError::BufferFull {
                limit: self.config.max_pending,
            });
        }
        match id {
            Some("") => Err(SubmitError::Empty("id")),
            Some(id) if self.pending.iter().any(|p| p.id == id) => {
                Err(SubmitError::DuplicateId(id.to_owned()))
            }
            Some(id) => Ok(id.to_owned()),
            None => Ok(self.fresh_id()),
        }
    }

    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.id_prefix, self.next_id)
    }

    fn submit(
        &mut self,
        id: String,
        op: Op,
        room: Option<&str>,
        frame: String,
    ) -> Result<String, SubmitError> {
        if let Some(limit) = self.max_message.filter(|m| frame.len() > *m) {
            return Err(SubmitError::TooLarge {
                size: frame.len(),
                limit,
            });
        }
        let sent = matches!(self.phase, Phase::Connected { .. });
        if sent {
            self.actions.push_back(Action::Send {
                text: frame.clone(),
            });
        }
        self.pending.push_back(Pending {
            id: id.clone(),
            op,
            room: room.map(str::to_owned),
            frame,
            sent,
        });
        Ok(id)
    }

    fn transmit(&mut self, req: &Request<'_>) {
        self.actions.push_back(Action::Send { text: req.encode() });
    }

    fn on_text(&mut self, now: Instant, text: &str) {
        let Some(m) = wire::parse(text) else {
            return;
        };
        match &*m.kind {
            "welcome" => {
                if let (Phase::Handshaking { .. }, Some(session)) = (self.phase, m.session) {
                    let ping = m.ping_interval_ms.map(Duration::from_millis);
                    let max = m.max_message_size.and_then(|m| usize::try_from(m).ok());
                    self.on_welcome(now, &session, m.user.as_deref(), ping, max);
                }
            }
            "resume_failed" => {
                let reason = resume_failure(m.reason.as_deref().unwrap_or(""));
                let last_seq = match (reason, &self.resuming) {
                    (ResumeFailure::Overflow, _) | (_, None) => self.last_seq,
                    (_, Some((_, seq))) => *seq,
                };
                self.events.push_back(Event::Gap(Gap {
                    reason: GapReason::ResumeFailed(reason),
                    last_seq,
                }));
            }
            "dropped" => {
                self.events.push_back(Event::Gap(Gap {
                    reason: GapReason::Dropped {
                        count: m.count.unwrap_or(0),
                    },
                    last_seq: self.last_seq,
                }));
            }
            "token_expiring" => self.on_token_expiring(m.expires_in_ms.unwrap_or(0)),
            "ack" | "nack" if m.op.as_deref() == Some("refresh") => {
                if matches!(&self.renewal, Renewal::Sent(id) if m.id.as_deref() == Some(id.as_str()))
                {
                    self.renewal = Renewal::Idle;
                    self.events.push_back(if m.kind == "ack" {
                        Event::TokenRefreshed
                    } else {
                        Event::TokenRefreshFailed {
                            reason: m.reason.map(|r| r.into_owned()).unwrap_or_default(),
                        }
                    });
                }
            }
            "ack" | "nack" => {
                let ok = m.kind == "ack";
                let (Some(id), Some(op)) = (m.id, m.op.as_deref().and_then(wire::parse_op)) else {
                    return;
                };
                let reason = m.reason.map(|r| r.into_owned()).unwrap_or_default();
                self.on_reply(&id, op, ok, m.duplicate, reason);
            }
            "message" => {
                let (Some(seq), Some(id), Some(from), Some(data)) = (m.seq, m.id, m.from, m.data)
                else {
                    return;
                };
                if self.config.delivery_acks {
                    self.transmit(&Request::Ack { seq });
                }
                if seq <= self.last_seq {
                    self.duplicates += 1;
                    return;
                }
                self.last_seq = seq;
                let target = match (m.room, m.to) {
                    (Some(room), _) => Target::Room(room.into_owned()),
                    (None, Some(to)) => Target::User(to.into_owned()),
                    (None, None) => Target::Broadcast,
                };
                self.events.push_back(Event::Message(Message {
                    seq,
                    target,
                    id: id.into_owned(),
                    from: from.into_owned(),
                    data: data.to_owned(),
                    text: text.to_owned(),
                }));
            }
            "error" => self.events.push_back(Event::ServerError {
                code: m.code.map(|c| c.into_owned()).unwrap_or_default(),
                message: m.message.map(|c| c.into_owned()).unwrap_or_default(),
            }),
            _ => {}
        }
    }

    /// `token_expiring`: with a token provider, ask it for a new token
    /// (once per warning; [`renew`](Self::renew) sends it).
    fn on_token_expiring(&mut self, expires_in_ms: u64) {
        self.events
            .push_back(Event::TokenExpiring { expires_in_ms });
        if self.config.token_provider
            && matches!(self.phase, Phase::Connected { .. })
            && self.renewal == Renewal::Idle
        {
            self.renewal = Renewal::AwaitingToken;
            self.actions.push_back(Action::NeedToken);
        }
    }

    /// The provider's answer for a renewal: `refresh` with a new token. The
    /// same token again (or none) cannot renew anything: reported, and the
    /// 4001 close at expiry leads to a reconnection with a fresh token.
    fn renew(&mut self, token: Option<String>) {
        match token {
            Some(token) if self.token.as_deref() != Some(token.as_str()) => {
                let id = self.fresh_id();
                self.transmit(&Request::Refresh {
                    token: &token,
                    id: &id,
                });
                self.token = Some(token);
                self.renewal = Renewal::Sent(id);
            }
            _ => {
                self.renewal = Renewal::Idle;
                self.events.push_back(Event::TokenRefreshFailed {
                    reason: "no_token".to_owned(),
                });
            }
        }
    }

    fn on_welcome(
        &mut self,
        now: Instant,
        session: &str,
        user: Option<&str>,
        ping: Option<Duration>,
        max_message: Option<usize>,
    ) {
        if let Some(p) = ping.filter(|p| !p.is_zero()) {
            self.ping_interval = p;
        }
        if let Some(max) = max_message {
            self.max_message = Some(max);
            // Never resend what the server will refuse (a frame over its
            // WebSocket limit would even close the connection, again and
            // again): answer it here.
            let (fit, too_large) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|p| p.frame.len() <= max);
            self.pending = fit;
            for p in too_large {
                self.events.push_back(Event::Reply(Reply {
                    id: p.id,
                    op: p.op,
                    result: Err(OpError::Nacked {
                        reason: "too_large".to_owned(),
                    }),
                }));
            }
        }
        let resumed = self
            .resuming
            .as_ref()
            .is_some_and(|(s, _)| s.as_str() == session);
        self.session = Some(session.to_owned());
        self.user = user.map(str::to_owned);
        self.set_phase(
            Phase::Connected {
                since: now,
                last_rx: now,
            },
            None,
            if resumed { "resumed" } else { "welcome" }.to_owned(),
        );
        if !resumed {
            // A new session: numbering restarts, the server knows nothing
            // of our settings and rooms. (Any lost messages are reported by
            // the `resume_failed` that follows.)
            self.last_seq = 0;
            if self.config.delivery_acks {
                self.transmit(&Request::Configure {
                    delivery_acks: true,
                });
            }
            let rooms: Vec<String> = self.rooms.iter().cloned().collect();
            for room in rooms {
                let id = self.fresh_id();
                self.transmit(&Request::Join {
                    room: &room,
                    id: &id,
                });
                self.rejoins.insert(id, room);
            }
        }
        // Everything unanswered goes out again, in order, with its id.
        for p in &mut self.pending {
            p.sent = true;
            self.actions.push_back(Action::Send {
                text: p.frame.clone(),
            });
        }
    }

    fn on_reply(&mut self, id: &str, op: Op, ok: bool, duplicate: bool, reason: String) {
        if let Some(room) = self.rejoins.remove(id) {
            if !ok {
                self.rooms.remove(&room);
                self.events.push_back(Event::RejoinFailed { room, reason });
            }
            return;
        }
        let Some(i) = self.pending.iter().position(|p| p.id == id && p.op == op) else {
            return;
        };
        let Some(p) = self.pending.remove(i) else {
            return;
        };
        // A retried leave that the server had already processed is nacked
        // `not_member`: the goal is reached all the same.
        let ok = ok || (op == Op::Leave && reason == "not_member");
        if ok {
            match (op, p.room) {
                (Op::Join, Some(room)) => {
                    self.rooms.insert(room);
                }
                (Op::Leave, Some(room)) => {
                    self.rooms.remove(&room);
                }
                _ => {}
            }
        }
        self.events.push_back(Event::Reply(Reply {
            id: p.id,
            op,
            result: if ok {
                Ok(Ack { duplicate })
            } else {
                Err(OpError::Nacked { reason })
            },
        }));
    }
}

fn non_empty(s: &str, what: &'static str) -> Result<(), SubmitError> {
    if s.is_empty() {
        Err(SubmitError::Empty(what))
    } else {
        Ok(())
    }
}

fn resume_failure(s: &str) -> ResumeFailure {
    match s {
        "expired" => ResumeFailure::Expired,
        "overflow" => ResumeFailure::Overflow,
        "forbidden" => ResumeFailure::Forbidden,
        "invalid_seq" => ResumeFailure::InvalidSeq,
        _ => ResumeFailure::Unknown,
    }
}
