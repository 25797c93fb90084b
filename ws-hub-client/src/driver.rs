//! The task that drives a [`Client`] core over a WebSocket and a timer.

use std::collections::HashMap;
use std::future::{Future, pending};
use std::pin::Pin;
use std::time::Instant;

use futures_lite::future;
use ws_async::{Incoming, Runtime, WebSocket, WsError};
use ws_hub::client::{Action, Client, Event, Input, OpError, State};
use ws_proto::{CloseCode, HandshakeError, Message};

use crate::{ClientError, ClientOptions, Command, ReplyTx, TokenProvider};

/// The transport: plain TCP, or with feature `tls` plain or TLS.
#[cfg(feature = "tls")]
type Io<R> = ws_async::tls::MaybeTls<<R as Runtime>::Stream>;
#[cfg(not(feature = "tls"))]
type Io<R> = <R as Runtime>::Stream;
type Ws<R> = WebSocket<Io<R>, R>;
type Connecting<R> = Pin<Box<dyn Future<Output = Result<Ws<R>, WsError>> + Send>>;

/// What woke the driver.
enum Wake<R: Runtime> {
    Command(Option<Command>),
    Opened(Result<Ws<R>, WsError>),
    Received(Result<Option<Incoming>, WsError>),
    Timer,
}

pub(crate) struct Driver<R: Runtime> {
    rt: R,
    core: Client,
    commands: async_channel::Receiver<Command>,
    events: async_channel::Sender<Event>,
    replies: HashMap<String, ReplyTx>,
    token_provider: Option<TokenProvider>,
    options: ClientOptions,
    ws: Option<Ws<R>>,
    connecting: Option<Connecting<R>>,
    /// Told when the client has stopped (from `close`).
    closed: Vec<async_channel::Sender<()>>,
}

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(
        rt: R,
        core: Client,
        commands: async_channel::Receiver<Command>,
        events: async_channel::Sender<Event>,
        options: ClientOptions,
    ) -> Self {
        Self {
            rt,
            core,
            commands,
            events,
            replies: HashMap::new(),
            token_provider: options.token_provider.clone(),
            options,
            ws: None,
            connecting: None,
            closed: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        self.core.connect(self.rt.now());
        loop {
            self.perform().await;
            self.forward().await;
            if self.core.state() == State::Closed {
                break;
            }
            let wake = self.wait().await;
            let now = self.rt.now();
            match wake {
                Wake::Command(Some(c)) => self.command(c),
                Wake::Command(None) => self.core.close(),
                Wake::Opened(Ok(ws)) => {
                    self.connecting = None;
                    self.ws = Some(ws);
                    self.core.handle(now, Input::Connected);
                }
                Wake::Opened(Err(e)) => {
                    self.connecting = None;
                    let status = match e {
                        WsError::Handshake(HandshakeError::Rejected(s)) => Some(s),
                        _ => None,
                    };
                    self.core.handle(now, Input::ConnectFailed { status });
                }
                Wake::Received(Ok(Some(Incoming::Message(Message::Text(t))))) => {
                    self.core.handle(now, Input::Text(t.as_str()));
                }
                Wake::Received(Ok(Some(_))) => self.core.handle(now, Input::Activity),
                Wake::Received(Ok(None) | Err(_)) => self.lost(now),
                Wake::Timer => self.core.handle_timeout(now),
            }
        }
        // Closed: drain what is left, answer everything, stop.
        self.perform().await;
        self.forward().await;
        for tx in self.replies.drain().map(|(_, tx)| tx) {
            let _ = tx.try_send(Err(ClientError::Op(OpError::Closed)));
        }
        // Requests still queued would wait forever (the handles keep the
        // channel alive): refuse new ones and answer these.
        self.commands.close();
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Close(done) => self.closed.push(done),
                Command::Join(_, tx)
                | Command::Leave(_, tx)
                | Command::Publish(_, _, _, tx)
                | Command::Send(_, _, _, tx)
                | Command::Broadcast(_, _, tx) => {
                    let _ = tx.try_send(Err(ClientError::Stopped));
                }
            }
        }
        for tx in self.closed.drain(..) {
            let _ = tx.try_send(());
        }
    }

    /// The socket ended: report its close code and reason.
    fn lost(&mut self, now: Instant) {
        let info = self.ws.take().and_then(|ws| ws.close_info());
        let (code, reason) = match &info {
            Some(i) if i.code.0 != 1006 => (Some(i.code.0), i.reason.as_str()),
            _ => (None, ""),
        };
        self.core.handle(now, Input::Closed { code, reason });
    }

    async fn wait(&mut self) -> Wake<R> {
        let deadline = self.core.poll_timeout();
        let rt = self.rt.clone();
        let timer = async move {
            match deadline {
                Some(t) => rt.sleep_until(t).await,
                None => pending().await,
            }
            Wake::Timer
        };
        let commands = self.commands.clone();
        let command = async move { Wake::Command(commands.recv().await.ok()) };
        let socket = async {
            if let Some(c) = self.connecting.as_mut() {
                Wake::Opened(c.await)
            } else if let Some(ws) = self.ws.as_mut() {
                Wake::Received(ws.recv_incoming().await)
            } else {
                pending().await
            }
        };
        future::or(command, future::or(socket, timer)).await
    }

    fn command(&mut self, c: Command) {
        let (result, tx) = match c {
            Command::Join(room, tx) => (self.core.join(&room), tx),
            Command::Leave(room, tx) => (self.core.leave(&room), tx),
            Command::Publish(room, data, id, tx) => {
                (self.core.publish(&room, &data, id.as_deref()), tx)
            }
            Command::Send(user, data, id, tx) => (self.core.send(&user, &data, id.as_deref()), tx),
            Command::Broadcast(data, id, tx) => (self.core.broadcast(&data, id.as_deref()), tx),
            Command::Close(done) => {
                self.closed.push(done);
                self.core.close();
                return;
            }
        };
        match result {
            Ok(id) => {
                self.replies.insert(id, tx);
            }
            Err(e) => {
                let _ = tx.try_send(Err(ClientError::Submit(e)));
            }
        }
    }

    /// Performs the core's actions.
    async fn perform(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::NeedToken => {
                    let token = self.token_provider.as_ref().and_then(|p| p());
                    self.core.handle(self.rt.now(), Input::Token(token));
                }
                Action::Open { url } => {
                    self.ws = None;
                    let rt = self.rt.clone();
                    let config = self.options.ws.clone();
                    #[cfg(feature = "tls")]
                    let tls = self.options.tls.clone();
                    self.connecting = Some(Box::pin(async move {
                        #[cfg(feature = "tls")]
                        let opened = ws_async::tls::connect_url(rt, &url, tls, config).await;
                        #[cfg(not(feature = "tls"))]
                        let opened = ws_async::connect(rt, &url, config).await;
                        opened.map(|(ws, _)| ws)
                    }));
                }
                Action::Send { text } => {
                    let sent = match self.ws.as_mut() {
                        Some(ws) => ws.send(Message::text(text)).await,
                        None => Ok(()),
                    };
                    if sent.is_err() {
                        self.lost(self.rt.now());
                    }
                }
                Action::Close { code, reason } => {
                    self.connecting = None;
                    if let Some(mut ws) = self.ws.take() {
                        // In the background: a dead peer must not stall us.
                        self.rt.spawn(async move {
                            let _ = ws.close(CloseCode(code), reason).await;
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Hands the core's events out: answers to their requests, the rest to
    /// the application (waiting while its buffer is full).
    async fn forward(&mut self) {
        while let Some(event) = self.core.poll_event() {
            let event = match event {
                Event::Reply(r) => {
                    if let Some(tx) = self.replies.remove(&r.id) {
                        let _ = tx.try_send(r.result.map_err(ClientError::Op));
                    }
                    continue;
                }
                other => other,
            };
            let _ = self.events.send(event).await;
        }
    }
}
