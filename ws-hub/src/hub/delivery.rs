//! Delivery and fan-out: acknowledging a publish, numbering one shared body
//! per receiving session, forwarding to and accepting from the bus, and
//! replaying a resumed session's buffer.

use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::timeouts::Timer;
use super::{ConnId, Hub, Outbox, after};
use crate::action::{Action, Payload};
use crate::bus::{BusMessage, BusTarget};
use crate::config::HubConfig;
use crate::dedup::Seen;
use crate::id::UserId;
use crate::protocol::{NackReason, Op, ServerMessage, message_body};
use crate::session::{Session, SessionKey, SessionSet};
use crate::timers::TimerSet;

/// The parts of the hub a numbered delivery touches besides the session,
/// borrowed apart from the session maps so that fan-out can walk them.
pub(super) struct Courier<'a> {
    pub(super) out: &'a mut Outbox,
    pub(super) timers: &'a mut TimerSet<Timer>,
    pub(super) config: &'a HubConfig,
    pub(super) now: Instant,
}

impl Courier<'_> {
    /// Sends message `seq` of session `s` to its connection `conn`, first
    /// tracking it for retransmission when the session wants delivery
    /// acks. `false` (nothing sent): the session's unacknowledged set is
    /// full, so the connection is a slow consumer.
    fn deliver(&mut self, s: &mut Session, conn: ConnId, seq: u64, payload: Payload) -> bool {
        if s.delivery_acks {
            let due = after(self.now, self.config.ack_timeout);
            if !s.track(seq, &payload, due, self.config.max_unacked) {
                return false;
            }
            if self.timers.get(Timer::Retransmit(conn)).is_none() {
                self.timers.set(Timer::Retransmit(conn), due);
            }
        }
        self.out.deliver(conn, payload);
        true
    }
}

impl Hub {
    /// Session `key` and a courier for its connection, borrowed apart.
    pub(super) fn courier_for(
        &mut self,
        now: Instant,
        key: SessionKey,
    ) -> Option<(&mut Session, Courier<'_>)> {
        let Self {
            sessions,
            out,
            config,
            timers,
            ..
        } = self;
        let s = sessions.get_mut(&key)?;
        let courier = Courier {
            out,
            timers,
            config,
            now,
        };
        Some((s, courier))
    }

    /// Acks (possibly as a duplicate), delivers locally, and forwards to the
    /// bus. All checks have passed.
    pub(super) fn publish(
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
        self.deliver_new(now, target, id, from, data);
    }

    /// Delivers a publish that passed de-duplication: locally, and to the
    /// other nodes in a cluster.
    pub(super) fn deliver_new(
        &mut self,
        now: Instant,
        target: BusTarget,
        id: &str,
        from: UserId,
        data: &RawValue,
    ) {
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
        let mut courier = Courier {
            out,
            timers,
            config,
            now,
        };
        let limits = config.replay_limits();
        let mut slow = Vec::new();
        let mut one = |s: &mut Session| {
            let (seq, payload) = s.stamp(body, limits);
            if let Some(conn) = s.conn
                && !courier.deliver(s, conn, seq, payload)
            {
                slow.push(conn);
            }
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
                for key in users.get(user).into_iter().flat_map(SessionSet::iter) {
                    if let Some(s) = sessions.get_mut(key) {
                        one(s);
                    }
                }
            }
            BusTarget::Broadcast => sessions.values_mut().for_each(|s| one(s)),
        }
        for conn in slow {
            self.slow_consumer(now, conn);
        }
    }

    pub(super) fn on_bus(&mut self, now: Instant, msg: BusMessage) {
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

    /// Answers a complete resume: `resumed`, then every buffered message
    /// after `last_seq`, in order.
    pub(super) fn replay(&mut self, now: Instant, conn: ConnId, key: SessionKey, last_seq: u64) {
        let id = self.minter.mint(key);
        let Some((s, mut courier)) = self.courier_for(now, key) else {
            return;
        };
        let replay: Vec<(u64, Payload)> = s
            .replay
            .after(last_seq)
            .map(Iterator::collect)
            .unwrap_or_default();
        courier.out.send(
            conn,
            &ServerMessage::Resumed {
                session: id.as_str(),
                last_seq,
                replayed: replay.len() as u64,
            },
        );
        let complete = replay
            .into_iter()
            .all(|(seq, payload)| courier.deliver(s, conn, seq, payload));
        if !complete {
            self.slow_consumer(now, conn);
        }
    }
}
