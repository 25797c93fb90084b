//! The hub task: the one place the `ws_hub::Hub` state machine lives.
//!
//! Connection tasks (on every core) do the socket and protocol work and
//! send the hub plain commands over one bounded channel; the hub task
//! applies them in order, with no lock, and hands deliveries to each
//! connection's [`Outbox`]. A publish to a room is encoded once by the hub;
//! every receiver gets the same body bytes.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use ws_hub::{
    Action, BusMessage, Command, ConnId, Hub, Identity, Metrics, PushOutcome, ResumeRequest,
};

use super::outbox::Outbox;
use crate::bus::BusCommand;
use ws_async::Runtime;

/// Most channel messages applied in one round, before the hub hands out
/// the round's actions and yields to the connection tasks. A round may put
/// up to two messages per command (an ack and a delivery) into one outbox,
/// so this stays well below the default outbox bound (1,024 messages).
const BATCH: usize = 64;

/// A message to the hub task.
pub(crate) enum ToHub {
    /// A new connection and its mailbox.
    Open {
        conn: ConnId,
        outbox: Arc<Outbox>,
        identity: Identity,
        remote_addr: SocketAddr,
        resume: Option<ResumeRequest>,
    },
    /// Anything else.
    Command(Command),
    /// A server-API request and where to send its answer.
    Api(
        super::api::ApiCall,
        async_channel::Sender<super::api::ApiAnswer>,
    ),
}

/// The hub task's links to the cluster bus.
pub(crate) struct BusLink {
    pub(crate) commands: async_channel::Sender<BusCommand>,
    pub(crate) incoming: async_channel::Receiver<(String, Bytes)>,
}

enum Wake {
    Message(ToHub),
    Bus(String, Bytes),
    Timer,
    Closed,
}

pub(crate) struct HubTask<R: Runtime> {
    pub(crate) rt: R,
    pub(crate) hub: Hub,
    pub(crate) inbox: async_channel::Receiver<ToHub>,
    pub(crate) bus: Option<BusLink>,
    pub(crate) metrics: Arc<Mutex<Metrics>>,
    pub(crate) conns: HashMap<ConnId, Arc<Outbox>>,
    timer: Option<(Instant, Pin<Box<R::Sleep>>)>,
}

impl<R: Runtime> HubTask<R> {
    pub(crate) fn new(
        rt: R,
        hub: Hub,
        inbox: async_channel::Receiver<ToHub>,
        bus: Option<BusLink>,
        metrics: Arc<Mutex<Metrics>>,
    ) -> Self {
        Self {
            rt,
            hub,
            inbox,
            bus,
            metrics,
            conns: HashMap::new(),
            timer: None,
        }
    }

    /// Runs until every sender of the inbox is gone.
    pub(crate) async fn run(mut self) {
        loop {
            match self.next().await {
                Wake::Closed => break,
                Wake::Message(m) => self.apply(m),
                Wake::Bus(channel, payload) => self.bus_message(&channel, &payload),
                Wake::Timer => {
                    let now = self.rt.now();
                    self.hub.handle_timeout(now);
                }
            }
            for _ in 0..BATCH {
                match self.inbox.try_recv() {
                    Ok(m) => self.apply(m),
                    Err(_) => break,
                }
            }
            self.drain_actions();
            if let Ok(mut snapshot) = self.metrics.lock() {
                *snapshot = self.hub.metrics();
            }
            // Let the connection tasks write what this round queued before
            // the next one. Without this, a backlog of commands is applied
            // in one go, its deliveries pile up in the outboxes of
            // connections that have had no chance to run, and the
            // slow-consumer policy cuts off readers that keep up.
            if !self.inbox.is_empty() {
                futures_lite::future::yield_now().await;
            }
        }
    }

    async fn next(&mut self) -> Wake {
        let deadline = self.hub.poll_timeout();
        if self.timer.as_ref().map(|t| t.0) != deadline {
            self.timer = deadline.map(|d| (d, Box::pin(self.rt.sleep_until(d))));
        }
        let mut inbox = pin!(self.inbox.recv());
        let mut bus = pin!(async {
            match &self.bus {
                Some(link) => link.incoming.recv().await.ok(),
                None => std::future::pending().await,
            }
        });
        let timer = &mut self.timer;
        poll_fn(|cx| {
            if let Poll::Ready(m) = inbox.as_mut().poll(cx) {
                return Poll::Ready(m.map_or(Wake::Closed, Wake::Message));
            }
            if let Poll::Ready(Some((channel, payload))) = bus.as_mut().poll(cx) {
                return Poll::Ready(Wake::Bus(channel, payload));
            }
            if let Some((_, sleep)) = timer
                && sleep.as_mut().poll(cx).is_ready()
            {
                *timer = None;
                return Poll::Ready(Wake::Timer);
            }
            Poll::Pending
        })
        .await
    }

    fn apply(&mut self, message: ToHub) {
        let now = self.rt.now();
        match message {
            ToHub::Open {
                conn,
                outbox,
                identity,
                remote_addr,
                resume,
            } => {
                self.conns.insert(conn, outbox);
                self.hub.handle(
                    now,
                    Command::Connected {
                        conn,
                        identity,
                        remote_addr: Some(remote_addr),
                        resume,
                    },
                );
            }
            ToHub::Command(command) => {
                if let Command::Disconnected { conn } = &command {
                    self.conns.remove(conn);
                }
                self.hub.handle(now, command);
            }
            ToHub::Api(call, reply) => {
                let _ = reply.try_send(call.apply(&mut self.hub, now));
            }
        }
    }

    fn bus_message(&mut self, channel: &str, payload: &[u8]) {
        match BusMessage::from_json(payload) {
            Ok(message) => {
                let now = self.rt.now();
                self.hub.handle(now, Command::Bus(message));
            }
            Err(e) => tracing::warn!(channel, error = %e, "undecodable bus message"),
        }
    }

    fn drain_actions(&mut self) {
        while let Some(action) = self.hub.poll_action() {
            match action {
                Action::Deliver { conn, payload } => {
                    let Some(outbox) = self.conns.get(&conn) else {
                        continue;
                    };
                    if outbox.push(payload) == PushOutcome::Overflow {
                        let now = self.rt.now();
                        self.hub.handle(now, Command::Overflowed { conn });
                    }
                }
                Action::Ping { conn } => {
                    if let Some(outbox) = self.conns.get(&conn) {
                        outbox.ping();
                    }
                }
                Action::Close { conn, code, reason } => {
                    if let Some(outbox) = self.conns.remove(&conn) {
                        outbox.close(code, reason);
                    }
                }
                Action::PublishBus(message) => self.to_bus(BusCommand::Publish {
                    channel: message.channel(),
                    payload: message.to_json().into(),
                }),
                Action::SubscribeBus(room) => {
                    self.to_bus(BusCommand::Subscribe(BusMessage::room_channel(&room)))
                }
                Action::UnsubscribeBus(room) => {
                    self.to_bus(BusCommand::Unsubscribe(BusMessage::room_channel(&room)))
                }
                _ => {}
            }
        }
    }

    fn to_bus(&self, command: BusCommand) {
        if let Some(link) = &self.bus
            && link.commands.try_send(command).is_err()
        {
            tracing::warn!("bus command queue full; message dropped");
        }
    }
}
