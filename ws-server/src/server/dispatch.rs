//! The server's plumbing as plain code, with no IO: what a connection
//! event means to the hub ([`command_for`], [`ended`]), what the hub task
//! does with each hub action ([`route_action`]), and which writer calls
//! serve what an [`Outbox`] holds ([`serve_outbox`]). The tasks in
//! `conn.rs` and `hub_task.rs` only move values between these functions
//! and the sockets, channels and clocks.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ws_async::{CloseInfo, Incoming};
use ws_hub::{Action, BusMessage, Command, ConnId, PresenceQuery, PushOutcome};
use ws_proto::{CloseCode, Message, PreparedBody};

use super::bodies::BodyCache;
use super::hub_task::ToHub;
use super::outbox::{Outbox, Pending};
use crate::bus::BusCommand;

/// The hub command for something a connection received; `None` for what
/// the hub need not hear of, and for everything once the connection is
/// closing.
pub(crate) fn command_for(
    conn: ConnId,
    incoming: Incoming,
    closing: bool,
    max_message_size: usize,
) -> Option<Command> {
    match incoming {
        _ if closing => None,
        Incoming::Message(message) => {
            let (data, is_text) = match message {
                Message::Text(t) => (t.into_bytes(), true),
                Message::Binary(b) => (b, false),
            };
            // Size check and parse here, on the connection's task and in
            // parallel across connections: the hub task only dispatches.
            let request = ws_hub::Request::parse(&data, is_text, max_message_size);
            Some(Command::Request { conn, request })
        }
        Incoming::Pong(_) | Incoming::Ping(_) => Some(Command::Activity { conn }),
        _ => None,
    }
}

/// The hub commands for a connection that has ended, `close` being how:
/// the client's own clean close first (the hub decides what its code means
/// for the session), then `Disconnected`.
pub(crate) fn ended(conn: ConnId, close: Option<CloseInfo>) -> impl Iterator<Item = Command> {
    let client_closed = close.filter(|c| c.clean).map(|c| Command::ClientClosed {
        conn,
        code: c.code.0,
        reason: c.reason,
    });
    client_closed
        .into_iter()
        .chain([Command::Disconnected { conn }])
}

/// The hub command for a message to the hub task, keeping `conns` (the
/// outboxes of open connections) up to date.
pub(crate) fn open_or_command(
    message: ToHub,
    conns: &mut HashMap<ConnId, Arc<Outbox>>,
) -> Option<Command> {
    Some(match message {
        ToHub::Open {
            conn,
            outbox,
            identity,
            remote_addr,
            resume,
        } => {
            conns.insert(conn, outbox);
            Command::Connected {
                conn,
                identity,
                remote_addr: Some(remote_addr),
                resume,
            }
        }
        ToHub::Command(command) => {
            if let Command::Disconnected { conn } = &command {
                conns.remove(conn);
            }
            command
        }
        // The hub task answers API calls itself.
        ToHub::Api(..) => return None,
    })
}

/// What is left to do after [`route_action`].
#[derive(Debug)]
pub(crate) enum Then {
    /// Nothing.
    Done,
    /// Feed this command back to the hub (an outbox overflowed).
    Hub(Command),
    /// Send this to the cluster bus.
    Bus(BusCommand),
    /// Read the other nodes' presence for this query.
    Presence(PresenceQuery),
}

/// Hands one hub action to the outbox it is for (`conns` forgets a
/// connection once it is closed) and says what is left to do.
pub(crate) fn route_action(action: Action, conns: &mut HashMap<ConnId, Arc<Outbox>>) -> Then {
    match action {
        Action::Deliver { conn, payload } => match conns.get(&conn) {
            Some(outbox) if outbox.push(payload) == PushOutcome::Overflow => {
                Then::Hub(Command::Overflowed { conn })
            }
            _ => Then::Done,
        },
        Action::Ping { conn } => {
            if let Some(outbox) = conns.get(&conn) {
                outbox.ping();
            }
            Then::Done
        }
        Action::Close { conn, code, reason } => {
            if let Some(outbox) = conns.remove(&conn) {
                outbox.close(code, reason);
            }
            Then::Done
        }
        Action::PublishBus(message) => Then::Bus(BusCommand::Publish {
            channel: message.channel(),
            payload: message.to_json().into(),
        }),
        Action::SubscribeBus(room) => {
            Then::Bus(BusCommand::Subscribe(BusMessage::room_channel(&room)))
        }
        Action::UnsubscribeBus(room) => {
            Then::Bus(BusCommand::Unsubscribe(BusMessage::room_channel(&room)))
        }
        Action::QueryPresence(query) => Then::Presence(query),
        _ => Then::Done,
    }
}

/// The writing half of a connection, as [`serve_outbox`] uses it.
pub(crate) trait Writer {
    /// The error of a failed call.
    type Error;
    /// Bytes queued and not yet written.
    fn buffered(&self) -> usize;
    /// Queues one text message made of `parts`.
    fn text(&mut self, parts: &[Bytes]) -> Result<(), Self::Error>;
    /// Queues one text message: `head`, then a body compressed once for
    /// every member that negotiated deflate without server context
    /// takeover.
    fn text_with_body(&mut self, head: &Bytes, body: &PreparedBody) -> Result<(), Self::Error>;
    /// Queues a ping.
    fn ping(&mut self) -> Result<(), Self::Error>;
    /// Starts the close handshake.
    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Self::Error>;
}

impl<T: ws_async::Transport, R: ws_async::Runtime> Writer for ws_async::WriteHalf<T, R> {
    type Error = ws_async::WsError;

    fn buffered(&self) -> usize {
        Self::buffered(self)
    }

    fn text(&mut self, parts: &[Bytes]) -> Result<(), Self::Error> {
        self.queue_text_bytes(parts)
    }

    fn text_with_body(&mut self, head: &Bytes, body: &PreparedBody) -> Result<(), Self::Error> {
        self.queue_text_with_body(head, body)
    }

    fn ping(&mut self) -> Result<(), Self::Error> {
        self.try_ping(Bytes::new())
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Self::Error> {
        self.begin_close(code, reason)
    }
}

/// Serves what `pending` reports: queued messages while the writer holds
/// less than `bound` bytes (all of them before a close), then the ping,
/// then the close. Returns whether the connection is now closing.
pub(crate) fn serve_outbox<W: Writer>(
    pending: Pending,
    outbox: &Outbox,
    writer: &mut W,
    bodies: Option<&BodyCache>,
    bound: usize,
) -> Result<bool, W::Error> {
    while writer.buffered() < bound || pending.close.is_some() {
        let Some(payload) = outbox.pop() else { break };
        match bodies.and_then(|b| b.prepare(&payload.body)) {
            Some(body) => writer.text_with_body(&payload.head, &body)?,
            None => writer.text(&[payload.head, payload.body])?,
        }
    }
    if pending.ping && outbox.take_ping() {
        writer.ping()?;
    }
    if let Some((code, reason)) = pending.close {
        writer.close(CloseCode(code), reason.as_str())?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};
    use std::time::{Duration, Instant};

    use ws_hub::{
        AllowAll, AllowAnonymous, Hub, HubConfig, Identity, OutboundConfig, Payload, RoomName,
        SessionSecret,
    };

    use super::*;

    /// A writer that records its calls; each queued byte stays buffered.
    #[derive(Debug, Default)]
    struct Recorder {
        ops: Vec<Op>,
        buffered: usize,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Op {
        Text(String),
        Ping,
        Close(u16, String),
    }

    impl Writer for Recorder {
        type Error = ();
        fn buffered(&self) -> usize {
            self.buffered
        }
        fn text(&mut self, parts: &[Bytes]) -> Result<(), ()> {
            let text: Vec<u8> = parts.concat();
            self.buffered += text.len();
            self.ops.push(Op::Text(String::from_utf8(text).unwrap()));
            Ok(())
        }
        fn text_with_body(&mut self, _: &Bytes, _: &PreparedBody) -> Result<(), ()> {
            unreachable!("these tests run without deflate")
        }
        fn ping(&mut self) -> Result<(), ()> {
            self.ops.push(Op::Ping);
            Ok(())
        }
        fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), ()> {
            self.ops.push(Op::Close(code.0, reason.into()));
            Ok(())
        }
    }

    fn pending(outbox: &Outbox) -> Option<Pending> {
        match outbox.poll_pending(&Context::from_waker(Waker::noop())) {
            Poll::Ready(p) => Some(p),
            Poll::Pending => None,
        }
    }

    /// The hub and the server's plumbing around it, on a virtual clock.
    struct Harness {
        hub: Hub,
        now: Instant,
        conns: HashMap<ConnId, Arc<Outbox>>,
        outboxes: HashMap<ConnId, Arc<Outbox>>,
        bus: Vec<BusCommand>,
        queries: Vec<PresenceQuery>,
    }

    impl Harness {
        fn new(config: HubConfig) -> Self {
            let hub = Hub::new(
                config,
                SessionSecret::new([7; 32]),
                AllowAnonymous,
                AllowAll,
            )
            .unwrap();
            // Any start will do: the clock below is virtual.
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            Self {
                hub,
                now,
                conns: HashMap::new(),
                outboxes: HashMap::new(),
                bus: Vec::new(),
                queries: Vec::new(),
            }
        }

        /// What the hub task does with one message, then its actions.
        fn send(&mut self, message: ToHub) {
            if let Some(command) = open_or_command(message, &mut self.conns) {
                self.hub.handle(self.now, command);
            }
            self.drain();
        }

        fn drain(&mut self) {
            while let Some(action) = self.hub.poll_action() {
                match route_action(action, &mut self.conns) {
                    Then::Done => {}
                    Then::Hub(command) => self.hub.handle(self.now, command),
                    Then::Bus(command) => self.bus.push(command),
                    Then::Presence(query) => self.queries.push(query),
                }
            }
        }

        fn open(&mut self, n: u64, user: &str) -> ConnId {
            let conn = ConnId(n);
            let outbox = Arc::new(Outbox::new(OutboundConfig::default()));
            self.outboxes.insert(conn, outbox.clone());
            self.send(ToHub::Open {
                conn,
                outbox,
                identity: Identity::user(user),
                remote_addr: "127.0.0.1:1".parse().unwrap(),
                resume: None,
            });
            conn
        }

        /// The connection task's side: a received frame.
        fn receive(&mut self, conn: ConnId, incoming: Incoming) {
            if let Some(command) = command_for(conn, incoming, false, usize::MAX) {
                self.send(ToHub::Command(command));
            }
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
            while let Some(t) = self.hub.poll_timeout().filter(|t| *t <= self.now) {
                self.hub.handle_timeout(t);
                self.drain();
            }
        }

        /// What the connection task writes for `conn` now.
        fn written(&self, conn: ConnId) -> Vec<Op> {
            let outbox = &self.outboxes[&conn];
            let mut writer = Recorder::default();
            if let Some(p) = pending(outbox) {
                serve_outbox(p, outbox, &mut writer, None, usize::MAX).unwrap();
            }
            writer.ops
        }
    }

    fn kinds(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                Op::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(t).unwrap();
                    v["type"].as_str().unwrap_or("?").to_owned()
                }
                Op::Ping => "ping".into(),
                Op::Close(code, reason) => format!("close {code} {reason}"),
            })
            .collect()
    }

    #[test]
    fn connection_events_become_hub_commands() {
        let conn = ConnId(3);
        let text = Incoming::Message(Message::text("{}"));
        assert!(matches!(
            command_for(conn, text.clone(), false, 64),
            Some(Command::Request {
                conn: ConnId(3),
                ..
            })
        ));
        let binary = Incoming::Message(Message::Binary(Bytes::from_static(b"x")));
        assert!(matches!(
            command_for(conn, binary, false, 64),
            Some(Command::Request {
                conn: ConnId(3),
                ..
            })
        ));
        for control in [Incoming::Ping(Bytes::new()), Incoming::Pong(Bytes::new())] {
            assert!(matches!(
                command_for(conn, control.clone(), false, 64),
                Some(Command::Activity { conn: ConnId(3) })
            ));
            assert!(command_for(conn, control, true, 64).is_none(), "closing");
        }
        assert!(command_for(conn, text, true, 64).is_none(), "closing");

        let clean = CloseInfo {
            code: CloseCode(1000),
            reason: "bye".into(),
            clean: true,
        };
        let closed: Vec<_> = ended(conn, Some(clean.clone())).collect();
        assert!(
            matches!(
                &closed[..],
                [
                    Command::ClientClosed { conn: ConnId(3), code: 1000, reason },
                    Command::Disconnected { conn: ConnId(3) },
                ] if reason == "bye"
            ),
            "{closed:?}"
        );
        let unclean = CloseInfo {
            clean: false,
            ..clean
        };
        let dropped: Vec<_> = ended(conn, Some(unclean)).collect();
        assert!(matches!(
            &dropped[..],
            [Command::Disconnected { conn: ConnId(3) }]
        ));
        assert_eq!(ended(conn, None).count(), 1);
    }

    #[test]
    fn outbox_orders_become_writer_calls_within_the_bound() {
        let outbox = Outbox::new(OutboundConfig::default());
        for body in ["a", "bb", "ccc"] {
            let queued = outbox.push(Payload::control(Bytes::from(body)));
            assert_eq!(queued, PushOutcome::Queued);
        }
        outbox.ping();
        // Over the bound after the first message: the rest waits.
        let mut writer = Recorder::default();
        let p = pending(&outbox).unwrap();
        assert_eq!(serve_outbox(p, &outbox, &mut writer, None, 1), Ok(false));
        assert_eq!(writer.ops, [Op::Text("a".into()), Op::Ping]);
        // A close flushes everything first, whatever the bound.
        outbox.close(1001, "going away".into());
        let p = pending(&outbox).unwrap();
        assert_eq!(serve_outbox(p, &outbox, &mut writer, None, 1), Ok(true));
        assert_eq!(
            writer.ops[2..],
            [
                Op::Text("bb".into()),
                Op::Text("ccc".into()),
                Op::Close(1001, "going away".into())
            ]
        );
        assert!(pending(&outbox).unwrap().close.is_some(), "orders stay");
    }

    #[test]
    fn a_full_server_closes_the_newcomer_with_1013_and_nothing_else() {
        let mut h = Harness::new(HubConfig {
            max_connections: 1,
            ..HubConfig::default()
        });
        let first = h.open(1, "alice");
        let second = h.open(2, "bob");
        assert_eq!(kinds(&h.written(first)), ["welcome"]);
        assert_eq!(kinds(&h.written(second)), ["close 1013 server full"]);
        assert!(!h.conns.contains_key(&second), "forgotten once closed");
        // Its end reaches the hub as commands that change nothing.
        for command in ended(second, None) {
            h.send(ToHub::Command(command));
        }
        assert!(h.written(first).is_empty());
    }

    #[test]
    fn a_publish_is_acked_and_delivered_through_the_plumbing() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b) = (h.open(1, "alice"), h.open(2, "bob"));
        h.written(a);
        h.written(b);
        let say = |s: &'static str| Incoming::Message(Message::text(s));
        h.receive(a, say(r#"{"type":"join","room":"r"}"#));
        h.receive(b, say(r#"{"type":"join","room":"r"}"#));
        h.receive(
            a,
            say(r#"{"type":"publish","room":"r","id":"m1","data":1}"#),
        );
        assert_eq!(kinds(&h.written(a)), ["ack", "ack", "message"]);
        assert_eq!(kinds(&h.written(b)), ["ack", "message"]);
        assert!(h.bus.is_empty(), "no cluster: no bus commands");
    }

    #[test]
    fn heartbeats_in_virtual_time_ping_then_close_a_silent_client() {
        let config = HubConfig::default();
        let (interval, timeout) = (config.ping_interval, config.heartbeat_timeout);
        let mut h = Harness::new(config);
        let (quiet, lively) = (h.open(1, "q"), h.open(2, "l"));
        h.written(quiet);
        h.written(lively);
        h.advance(interval);
        assert_eq!(kinds(&h.written(quiet)), ["ping"]);
        assert_eq!(kinds(&h.written(lively)), ["ping"]);
        h.receive(lively, Incoming::Pong(Bytes::new()));
        // Step through the deadline in small increments, answering for
        // the lively one each time it is pinged.
        let step = Duration::from_millis(100);
        let mut elapsed = Duration::ZERO;
        while elapsed <= timeout + interval {
            h.advance(step);
            elapsed += step;
            if h.written(lively).contains(&Op::Ping) {
                h.receive(lively, Incoming::Pong(Bytes::new()));
            }
        }
        let closes: Vec<_> = kinds(&h.written(quiet))
            .into_iter()
            .filter(|k| k.starts_with("close"))
            .collect();
        assert_eq!(closes.len(), 1, "{closes:?}");
        assert!(closes[0].starts_with("close 1001"), "{closes:?}");
        assert!(h.conns.contains_key(&lively) && !h.conns.contains_key(&quiet));
    }

    #[test]
    fn cluster_actions_become_bus_commands() {
        let mut h = Harness::new(HubConfig {
            cluster: true,
            ..HubConfig::default()
        });
        let a = h.open(1, "alice");
        h.receive(
            a,
            Incoming::Message(Message::text(r#"{"type":"join","room":"r"}"#)),
        );
        let channel = BusMessage::room_channel(&RoomName::new("r"));
        assert!(h.bus.contains(&BusCommand::Subscribe(channel.clone())));
        h.receive(
            a,
            Incoming::Message(Message::text(r#"{"type":"leave","room":"r"}"#)),
        );
        assert!(h.bus.contains(&BusCommand::Unsubscribe(channel)));
    }
}
