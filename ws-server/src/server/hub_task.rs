//! The hub task: the one place the `ws_hub::Hub` state machine lives.
//!
//! Connection tasks (on every core) do the socket and protocol work,
//! size-check and parse client messages (`ws_hub::Request::parse`), and
//! send the hub plain commands over one bounded channel; the hub task
//! applies them in order, with no lock, and hands deliveries to each
//! connection's [`Outbox`]. A publish to a room is encoded once by the hub;
//! every receiver gets the same body bytes.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use ws_hub::{BusMessage, Command, ConnId, Hub, Identity, Metrics, PresenceQuery, ResumeRequest};

use super::dispatch::{self, Then};
use super::metrics::thread_cpu_time;
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
    /// Cluster presence queries, for the task that reads Redis.
    pub(crate) presence: async_channel::Sender<PresenceQuery>,
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
    /// CPU nanoseconds spent working, from a wake-up to the next wait.
    cpu_ns: Arc<AtomicU64>,
}

impl<R: Runtime> HubTask<R> {
    pub(crate) fn new(
        rt: R,
        hub: Hub,
        inbox: async_channel::Receiver<ToHub>,
        bus: Option<BusLink>,
        metrics: Arc<Mutex<Metrics>>,
        cpu_ns: Arc<AtomicU64>,
    ) -> Self {
        Self {
            rt,
            hub,
            inbox,
            bus,
            metrics,
            conns: HashMap::new(),
            timer: None,
            cpu_ns,
        }
    }

    /// Runs until every sender of the inbox is gone.
    pub(crate) async fn run(mut self) {
        loop {
            let wake = self.next().await;
            let started = thread_cpu_time();
            match wake {
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
            // No `.await` since `started`: all of it ran on this thread.
            let ns = thread_cpu_time().saturating_sub(started).as_nanos();
            self.cpu_ns
                .fetch_add(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
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
            ToHub::Api(call, reply) => {
                if let super::api::ApiCall::Disconnect(d) = &call {
                    self.to_bus(d.relay());
                }
                let _ = reply.try_send(call.apply(&mut self.hub, now));
            }
            other => {
                if let Some(command) = dispatch::open_or_command(other, &mut self.conns) {
                    self.hub.handle(now, command);
                }
            }
        }
    }

    fn bus_message(&mut self, channel: &str, payload: &[u8]) {
        if channel == ws_hub::GLOBAL_CHANNEL && super::api::Disconnect::is_relay(payload) {
            let node = &self.hub.config().node_id;
            if let Some(d) = super::api::Disconnect::from_relay(payload, node) {
                let now = self.rt.now();
                d.apply(&mut self.hub, now);
            }
            return;
        }
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
            match dispatch::route_action(action, &mut self.conns) {
                Then::Done => {}
                Then::Hub(command) => {
                    let now = self.rt.now();
                    self.hub.handle(now, command);
                }
                Then::Bus(command) => self.to_bus(command),
                Then::Presence(query) => self.query_presence(query),
            }
        }
    }

    /// Hands a cluster presence query to the task that reads Redis; if it
    /// is behind by [`MAX_QUERIES`](super::presence_table::MAX_QUERIES),
    /// the client is answered `unavailable` at once.
    fn query_presence(&mut self, query: PresenceQuery) {
        let refused = match &self.bus {
            Some(link) => link.presence.try_send(query).err().map(|e| e.into_inner()),
            None => Some(query),
        };
        if let Some(query) = refused {
            let now = self.rt.now();
            let others = None;
            self.hub
                .handle(now, Command::ClusterPresence { query, others });
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
