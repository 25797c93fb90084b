//! # ws-hub-client: the hub client, async, on any runtime
//!
//! A thin async driver around the sans-IO [`ws_hub::client::Client`]: it
//! owns the WebSocket and the timer, and the core decides everything else
//! (backoff with jitter, resume, rejoin and gaps, duplicate filtering,
//! delivery acks, retries with the same id, the bounded pending buffer,
//! the watchdog, terminal closes). Written once over the runtime-generic
//! [`Runtime`] trait; the tokio and smol adapters expose it as
//! `hub_client::connect(url, options)`.
//!
//! ```
//! # use ws_hub_client::{connect, ClientOptions, HubEvent};
//! # fn demo<R: ws_async::Runtime>(rt: R) { let _ = async move {
//! let hub = connect(rt, "ws://127.0.0.1:8080/ws", ClientOptions::default())?;
//! hub.join("lobby").await?;
//! let ack = hub.publish("lobby", &"hello")?.await?; // resolves to the ack, or the nack
//! while let Some(event) = hub.next_event().await {
//!     if let HubEvent::Message(m) = event { println!("{}", m.text); }
//! }
//! hub.close().await;
//! # Ok::<(), ws_hub_client::ClientError>(()) }; }
//! ```
//!
//! Runnable examples are on the adapters (`runtime_tokio::hub_client`,
//! `runtime_smol::hub_client`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod driver;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use thiserror::Error;

use ws_async::{Runtime, WsConfig};
pub use ws_hub::client::{
    Ack, ClientConfig, Gap, GapReason, Message, OpError, State, StateChange, SubmitError, Target,
};
use ws_hub::client::{Client, ClientConfigError};

/// Asked for a token before every connection attempt (and after a 401);
/// `None` for none.
pub type TokenProvider = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Settings of [`connect`].
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// A fixed token (`?token=`).
    pub token: Option<String>,
    /// Asked before every attempt; takes precedence over `token`.
    pub token_provider: Option<TokenProvider>,
    /// Ask the server for delivery acks (and ack every message).
    pub delivery_acks: bool,
    /// Reconnect delays lie in `[backoff_min, backoff_max]`.
    pub backoff_min: Duration,
    /// See `backoff_min`.
    pub backoff_max: Duration,
    /// At most this many unanswered requests (then
    /// [`SubmitError::BufferFull`]).
    pub max_pending: usize,
    /// Events kept for the application before the client stops reading
    /// the socket (backpressure).
    pub event_buffer: usize,
    /// The WebSocket layer's settings.
    pub ws: WsConfig,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("token", &self.token.as_ref().map(|_| "<token>"))
            .field("token_provider", &self.token_provider.is_some())
            .field("delivery_acks", &self.delivery_acks)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("max_pending", &self.max_pending)
            .field("event_buffer", &self.event_buffer)
            .finish_non_exhaustive()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        let core = ClientConfig::new("ws://x");
        Self {
            token: None,
            token_provider: None,
            delivery_acks: false,
            backoff_min: core.backoff_min,
            backoff_max: core.backoff_max,
            max_pending: core.max_pending,
            event_buffer: 1024,
            ws: WsConfig::default(),
        }
    }
}

/// Errors of the async client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Invalid settings or URL.
    #[error("invalid client configuration: {0}")]
    Config(#[from] ClientConfigError),
    /// `data` could not be serialised to JSON.
    #[error("data is not serialisable to JSON: {0}")]
    Data(String),
    /// The request could not be queued (buffer full, closed, ...).
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The server refused the request, or the client closed first.
    #[error(transparent)]
    Op(#[from] OpError),
    /// The client's task has stopped.
    #[error("client stopped")]
    Stopped,
}

/// What the client reports besides answers to requests.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HubEvent {
    /// A new message (duplicates are already filtered).
    Message(Message),
    /// The connection state changed.
    State(StateChange),
    /// Messages were lost (resume failed, or the server dropped some).
    Gap(Gap),
    /// A room could not be joined again after a lost session.
    RejoinFailed {
        /// The room.
        room: String,
        /// The nack reason.
        reason: String,
    },
    /// The server sent an `error`.
    ServerError {
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
}

type ReplyTx = async_channel::Sender<Result<Ack, ClientError>>;

/// What the handle asks of the driver task.
enum Command {
    Join(String, ReplyTx),
    Leave(String, ReplyTx),
    Publish(String, Box<RawValue>, Option<String>, ReplyTx),
    Send(String, Box<RawValue>, Option<String>, ReplyTx),
    Broadcast(Box<RawValue>, Option<String>, ReplyTx),
    Close(async_channel::Sender<()>),
}

/// The answer to one request: resolves to the ack, or to the nack (or
/// another [`ClientError`]).
#[must_use = "a reply does nothing unless awaited (the request is sent regardless)"]
pub struct Reply {
    answer: Pin<Box<dyn Future<Output = Result<Ack, ClientError>> + Send>>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").finish_non_exhaustive()
    }
}

impl Future for Reply {
    type Output = Result<Ack, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.answer.as_mut().poll(cx)
    }
}

/// A handle to a running hub client (cheap to clone; the client stops when
/// [`close`](Self::close) is called or every handle is dropped).
#[derive(Debug, Clone)]
pub struct HubClient {
    commands: async_channel::Sender<Command>,
    events: async_channel::Receiver<HubEvent>,
}

/// Starts a hub client on `rt` for `url` (`ws://host:port/ws`): it
/// connects at once and keeps connected until [`HubClient::close`].
/// Requests made meanwhile are queued (bounded) and sent when connected.
pub fn connect<R: Runtime>(
    rt: R,
    url: &str,
    options: ClientOptions,
) -> Result<HubClient, ClientError> {
    let mut seed = [0u8; 8];
    // Without OS randomness, jitter still works (from a fixed seed); ids
    // would then repeat across processes, so refuse instead.
    getrandom::fill(&mut seed).map_err(|e| ClientError::Data(e.to_string()))?;
    let mut config = ClientConfig::new(url);
    config.token = options.token.clone();
    config.token_provider = options.token_provider.is_some();
    config.delivery_acks = options.delivery_acks;
    config.backoff_min = options.backoff_min;
    config.backoff_max = options.backoff_max;
    config.max_pending = options.max_pending;
    config.seed = u64::from_le_bytes(seed);
    let core = Client::new(config)?;
    let (commands, command_rx) = async_channel::unbounded();
    let (event_tx, events) = async_channel::bounded(options.event_buffer.max(1));
    let driver = driver::Driver::new(rt.clone(), core, command_rx, event_tx, options);
    rt.spawn(driver.run());
    Ok(HubClient { commands, events })
}

fn to_raw(data: &impl Serialize) -> Result<Box<RawValue>, ClientError> {
    serde_json::value::to_raw_value(data).map_err(|e| ClientError::Data(e.to_string()))
}

impl HubClient {
    fn request(&self, make: impl FnOnce(ReplyTx) -> Command) -> Reply {
        let (tx, rx) = async_channel::bounded(1);
        // Unbounded: fails only when the driver stopped, and then dropping
        // the command (and `tx`) makes the reply resolve to `Stopped`.
        let _ = self.commands.try_send(make(tx));
        Reply {
            answer: Box::pin(async move { rx.recv().await.unwrap_or(Err(ClientError::Stopped)) }),
        }
    }

    /// Joins `room` (kept joined across reconnects).
    pub fn join(&self, room: &str) -> Reply {
        self.request(|tx| Command::Join(room.to_owned(), tx))
    }

    /// Leaves `room`.
    pub fn leave(&self, room: &str) -> Reply {
        self.request(|tx| Command::Leave(room.to_owned(), tx))
    }

    /// Publishes `data` to `room` with a generated id.
    pub fn publish(&self, room: &str, data: &impl Serialize) -> Result<Reply, ClientError> {
        self.publish_with_id(room, data, None)
    }

    /// Publishes with the caller's id (unique per user within the server's
    /// de-dup window), or a generated one.
    pub fn publish_with_id(
        &self,
        room: &str,
        data: &impl Serialize,
        id: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let data = to_raw(data)?;
        let id = id.map(str::to_owned);
        Ok(self.request(|tx| Command::Publish(room.to_owned(), data, id, tx)))
    }

    /// Sends `data` to every connection of `user`.
    pub fn send(&self, user: &str, data: &impl Serialize) -> Result<Reply, ClientError> {
        let data = to_raw(data)?;
        Ok(self.request(|tx| Command::Send(user.to_owned(), data, None, tx)))
    }

    /// Broadcasts `data` to every connection.
    pub fn broadcast(&self, data: &impl Serialize) -> Result<Reply, ClientError> {
        let data = to_raw(data)?;
        Ok(self.request(|tx| Command::Broadcast(data, None, tx)))
    }

    /// The next message or state event; `None` once the client stopped and
    /// every event was taken.
    pub async fn next_event(&self) -> Option<HubEvent> {
        self.events.recv().await.ok()
    }

    /// The events as a stream (`futures_core::Stream`).
    pub fn events(&self) -> async_channel::Receiver<HubEvent> {
        self.events.clone()
    }

    /// Closes with 1000 and stops the client; unanswered requests fail with
    /// [`OpError::Closed`]. Returns when the client has stopped.
    pub async fn close(&self) {
        let (tx, rx) = async_channel::bounded(1);
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.recv().await;
        }
    }
}
