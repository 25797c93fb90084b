//! # ws-hub: a sans-IO real-time messaging hub
//!
//! All the logic of a WebSocket messaging hub — rooms, direct and broadcast
//! delivery, heartbeats, idle eviction, de-duplication, publish and
//! delivery acks with retransmission, session resume with bounded replay,
//! rate limits and slow-consumer handling — as a **deterministic state
//! machine**.
//!
//! The crate never does IO, never reads a clock (time is a parameter), never
//! spawns threads or tasks, uses no randomness except what the caller gives
//! it (the [`SessionSecret`], [`HubConfig::session_seed`]) and contains no
//! `unsafe`. It knows nothing about WebSocket framing: inputs and outputs are
//! plain bytes, and an adapter turns them into frames. Nothing a client
//! sends can make it panic or grow memory beyond its [`HubConfig`].
//!
//! ## Driving it
//!
//! ```text
//! loop {
//!     wait for: a socket event, a bus message, or hub.poll_timeout()
//!     hub.handle(now, Command::...)   or   hub.handle_timeout(now)
//!     while let Some(action) = hub.poll_action() { perform it }
//! }
//! ```
//!
//! The caller MUST drain [`Hub::poll_action`] after every `handle*` call and
//! then re-read [`Hub::poll_timeout`] (one earliest deadline). `now` MUST be
//! monotonic. A client message can be size-checked and parsed anywhere
//! ([`Request::parse`], pure) and handed over as [`Command::Request`], so a
//! hub running on its own task does no parsing. [`Action::Deliver`] payloads go through a per-connection
//! [`OutboundQueue`] owned by the adapter's connection task.
//!
//! ## Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use ws_hub::{Action, Command, ConnId, Hub, HubConfig, Identity, SessionSecret};
//!
//! // A real embedder draws the secret from the OS random source (see the
//! // `embed` example); a constant makes session ids forgeable.
//! let secret = SessionSecret::new(*b"an example, never use a constant");
//! let mut hub = Hub::with_defaults(HubConfig::default(), secret).unwrap();
//! let now = Instant::now(); // adapters read their runtime's clock
//! for (conn, user) in [(ConnId(1), "alice"), (ConnId(2), "bob")] {
//!     hub.handle(now, Command::Connected {
//!         conn,
//!         identity: Identity::user(user),
//!         remote_addr: None,
//!         resume: None,
//!     });
//!     hub.handle(now, Command::Received {
//!         conn,
//!         data: Bytes::from_static(br#"{"type":"join","room":"lobby"}"#),
//!         is_text: true,
//!     });
//! }
//! while hub.poll_action().is_some() {} // welcomes and join acks
//!
//! hub.handle(now, Command::Received {
//!     conn: ConnId(1),
//!     data: Bytes::from_static(br#"{"type":"publish","room":"lobby","id":"m1","data":"hi"}"#),
//!     is_text: true,
//! });
//! let mut out = Vec::new();
//! while let Some(Action::Deliver { conn, payload }) = hub.poll_action() {
//!     out.push((conn, String::from_utf8(payload.to_vec()).unwrap()));
//! }
//! assert_eq!(out, [
//!     (ConnId(1), r#"{"type":"ack","op":"publish","id":"m1"}"#.to_owned()),
//!     (ConnId(1), r#"{"type":"message","seq":1,"room":"lobby","id":"m1","from":"alice","data":"hi"}"#.to_owned()),
//!     (ConnId(2), r#"{"type":"message","seq":1,"room":"lobby","id":"m1","from":"alice","data":"hi"}"#.to_owned()),
//! ]);
//! // Next deadline: the first heartbeat ping, 30 s from now.
//! assert_eq!(hub.poll_timeout(), Some(now + Duration::from_secs(30)));
//! ```
//!
//! ## Wire protocol
//!
//! JSON text messages, specified in `docs/PROTOCOL.md` at the repository
//! root (message types, nack reasons, error and close codes, the resume
//! flow and a browser client).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod action;
mod auth;
mod bus;
pub mod client;
mod command;
mod config;
mod dedup;
mod error;
mod hub;
mod id;
mod metrics;
mod outbound;
pub mod protocol;
mod ratelimit;
mod request;
mod room;
mod session;
mod timers;

pub use action::{Action, CloseReason, Payload};
pub use auth::{AllowAll, AllowAnonymous, AuthRequest, Authenticator, Authoriser, HmacTokenAuth};
pub use bus::{BusMessage, BusTarget, GLOBAL_CHANNEL, ROOM_CHANNEL_PREFIX};
pub use command::{Command, ResumeRequest, query_param};
pub use config::{HubConfig, MAX_DURATION};
pub use error::{AuthError, BusDecodeError, CloseReasonError, ConfigError};
pub use hub::{
    API_PUBLISHER, ApiPublished, CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_NORMAL, CLOSE_POLICY,
    CLOSE_TOKEN_EXPIRED, CLOSE_TRY_AGAIN_LATER, Hub, KEEP_SESSION, PresenceQuery, PresenceSnapshot,
};
pub use id::{ConnId, Identity, RoomName, UserId};
pub use metrics::{Metrics, NackCounts};
pub use outbound::{OutboundConfig, OutboundQueue, PushOutcome, SlowConsumerPolicy};
pub use protocol::{ErrorCode, NackReason, ResumeFailure};
pub use request::Request;
pub use session::{SessionId, SessionSecret};

/// A base instant for unit tests (the only clock read, and only in tests).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_instant() -> std::time::Instant {
    std::time::Instant::now()
}
