//! Client requests on the hub's serial path: answering rejected messages,
//! the rate limit, dispatch by type, the per-request checks (names, rooms,
//! the authoriser), and nacks and violations. Size check and parse come
//! before, off the serial path ([`Request::parse`]).

use std::time::Instant;

use serde_json::value::RawValue;

use super::timeouts::Timer;
use super::{CLOSE_POLICY, Hub};
use crate::action::Action;
use crate::auth::Authoriser;
use crate::bus::BusTarget;
use crate::id::{ConnId, RoomName, UserId};
use crate::protocol::{ClientMessage, ErrorCode, NackReason, Op, ServerMessage};
use crate::request::{Rejection, Request};
use crate::session::{Session, SessionKey};

impl Hub {
    pub(super) fn on_request(&mut self, now: Instant, conn: ConnId, request: Request) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_activity = now;
        c.last_message = now;
        self.out.metrics.messages_in += 1;
        let msg = match request.0 {
            Ok(msg) => msg,
            Err(rejection) => {
                self.reject(conn, rejection);
                self.violation(now, conn);
                return;
            }
        };
        if self.rate_limited(now, conn, &msg) {
            return;
        }
        self.dispatch(now, conn, msg);
    }

    /// Answers a message that is not a request to dispatch.
    fn reject(&mut self, conn: ConnId, rejection: Rejection) {
        match rejection {
            Rejection::Binary => self.out.error(
                conn,
                ErrorCode::BinaryUnsupported,
                "binary messages are not supported",
            ),
            Rejection::TooLarge {
                op: Some(op),
                id,
                room,
            } => self.nack(
                conn,
                op,
                id.as_deref(),
                room.as_deref(),
                NackReason::TooLarge,
            ),
            Rejection::TooLarge { op: None, .. } => self.out.error(
                conn,
                ErrorCode::TooLarge,
                "message exceeds max_message_size",
            ),
            Rejection::BadRequest { op, id } => {
                self.out.metrics.protocol_errors += 1;
                self.nack(conn, op, id.as_deref(), None, NackReason::BadRequest);
            }
            Rejection::Malformed { code, detail } => self.out.error(conn, code, detail),
        }
    }

    /// Takes a token for `msg`; if there is none, answers as the protocol
    /// says and returns `true`. Everything that makes the hub work or
    /// answer costs a token; only delivery acks (answers to what the hub
    /// sent) are free.
    fn rate_limited(&mut self, now: Instant, conn: ConnId, msg: &ClientMessage<'_>) -> bool {
        if matches!(msg, ClientMessage::Ack { .. }) {
            return false;
        }
        let (rate, burst) = (self.config.rate_per_sec, self.config.rate_burst);
        let allowed = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.bucket.try_take(now, rate, burst));
        if allowed {
            return false;
        }
        match msg.op() {
            Some(op) => {
                self.nack(conn, op, msg.id(), msg.room(), NackReason::RateLimited);
                self.violation(now, conn);
            }
            // Pings and configures over the limit are dropped unanswered;
            // they are not violations (a fast application heartbeat must
            // not cost the session).
            None => self.out.metrics.dropped_over_rate += 1,
        }
        true
    }

    fn dispatch(&mut self, now: Instant, conn: ConnId, msg: ClientMessage<'_>) {
        match msg {
            ClientMessage::Join { room, id } => self.on_join(now, conn, &room, id.as_deref()),
            ClientMessage::Leave { room, id } => self.on_leave(now, conn, &room, id.as_deref()),
            ClientMessage::Publish { room, id, data } => {
                self.on_publish(now, conn, &room, &id, &data);
            }
            ClientMessage::Send { user, id, data } => self.on_send(now, conn, &user, &id, &data),
            ClientMessage::Broadcast { id, data } => self.on_broadcast(now, conn, &id, &data),
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
            ClientMessage::Presence { room, id } => {
                self.on_presence(now, conn, Op::Presence, &room, id.as_deref());
            }
            ClientMessage::PresenceStats { room, id } => {
                self.on_presence(now, conn, Op::PresenceStats, &room, id.as_deref());
            }
            ClientMessage::Refresh { token, id } => {
                self.on_refresh(now, conn, &token, id.as_deref());
            }
            ClientMessage::Ping { id } => {
                self.out
                    .send(conn, &ServerMessage::Pong { id: id.as_deref() });
            }
        }
    }

    fn on_publish(&mut self, now: Instant, conn: ConnId, room: &str, id: &str, data: &RawValue) {
        if !self.valid_name(room) || !self.valid_name(id) {
            self.bad_request(now, conn, Op::Publish, Some(id));
            return;
        }
        let Some(members) = self.rooms.members(room) else {
            self.nack(conn, Op::Publish, Some(id), None, NackReason::UnknownRoom);
            return;
        };
        let Some(key) = self.conns.get(&conn).map(|c| c.session) else {
            return;
        };
        if !members.contains(&key) {
            self.nack(conn, Op::Publish, Some(id), None, NackReason::NotMember);
            return;
        }
        let room = RoomName::new(room);
        let user = self.sessions.get(&key).map(|s| s.user.clone());
        if !user.is_some_and(|u| self.authoriser.may_publish(&u, &room)) {
            self.nack(conn, Op::Publish, Some(id), None, NackReason::Forbidden);
            return;
        }
        self.publish(now, conn, Op::Publish, BusTarget::Room(room), id, data);
    }

    fn on_send(&mut self, now: Instant, conn: ConnId, to: &str, id: &str, data: &RawValue) {
        if !self.valid_name(to) || !self.valid_name(id) {
            self.bad_request(now, conn, Op::Send, Some(id));
            return;
        }
        let to = UserId::new(to);
        if !self.authorise(conn, Op::Send, Some(id), None, |a, u| a.may_send(u, &to)) {
            return;
        }
        if !self.config.cluster && !self.users.contains_key(&to) {
            self.nack(conn, Op::Send, Some(id), None, NackReason::UnknownUser);
            return;
        }
        self.publish(now, conn, Op::Send, BusTarget::User(to), id, data);
    }

    fn on_broadcast(&mut self, now: Instant, conn: ConnId, id: &str, data: &RawValue) {
        if !self.valid_name(id) {
            self.bad_request(now, conn, Op::Broadcast, Some(id));
            return;
        }
        if !self.authorise(conn, Op::Broadcast, Some(id), None, |a, u| {
            a.may_broadcast(u)
        }) {
            return;
        }
        self.publish(now, conn, Op::Broadcast, BusTarget::Broadcast, id, data);
    }

    /// Validates a join, leave or presence request and finds the sender's
    /// session; a malformed name gets `bad_request`.
    pub(super) fn room_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        op: Op,
        room: &str,
        id: Option<&str>,
    ) -> Option<SessionKey> {
        if !self.valid_name(room) || id.is_some_and(|i| !self.valid_name(i)) {
            self.nack(conn, op, id, Some(room), NackReason::BadRequest);
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
            let user = s.user.clone();
            let change = self.rooms.join(&name, key, &user);
            if change.room && self.config.cluster {
                self.out
                    .actions
                    .push_back(Action::SubscribeBus(name.clone()));
            }
            self.room_ack(conn, Op::Join, id, room);
            self.presence_event(&name, &user, change, true, Some(key));
            return;
        }
        self.room_ack(conn, Op::Join, id, room);
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
        let user = s.user.clone();
        let change = self.rooms.leave(&name, key, &user);
        if change.room && self.config.cluster {
            self.out
                .actions
                .push_back(Action::UnsubscribeBus(name.clone()));
        }
        self.room_ack(conn, Op::Leave, id, room);
        self.presence_event(&name, &user, change, false, None);
    }

    fn room_ack(&mut self, conn: ConnId, op: Op, id: Option<&str>, room: &str) {
        self.out.send(
            conn,
            &ServerMessage::Ack {
                op,
                id,
                room: Some(room),
                duplicate: false,
            },
        );
    }

    fn session_mut(&mut self, conn: ConnId) -> Option<&mut Session> {
        let key = self.conns.get(&conn)?.session;
        self.sessions.get_mut(&key).map(|s| &mut **s)
    }

    fn valid_name(&self, s: &str) -> bool {
        !s.is_empty() && s.len() <= self.config.max_name_len
    }

    /// Whether the [`Authoriser`] lets `conn`'s user make this request
    /// (`may` asks it); if not, the request is nacked `forbidden`.
    pub(super) fn authorise(
        &mut self,
        conn: ConnId,
        op: Op,
        id: Option<&str>,
        room: Option<&str>,
        may: impl FnOnce(&dyn Authoriser, &UserId) -> bool,
    ) -> bool {
        let allowed = self
            .user(conn)
            .is_some_and(|u| may(self.authoriser.as_ref(), u));
        if !allowed {
            self.nack(conn, op, id, room, NackReason::Forbidden);
        }
        allowed
    }

    /// Nacks a request. An `id` or `room` that is not a valid name (empty
    /// or longer than `max_name_len`) is never echoed, whatever the reason:
    /// the client cannot have meant it, and a nack stays small.
    pub(super) fn nack(
        &mut self,
        conn: ConnId,
        op: Op,
        id: Option<&str>,
        room: Option<&str>,
        reason: NackReason,
    ) {
        let id = id.filter(|i| self.valid_name(i));
        let room = room.filter(|r| self.valid_name(r));
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

    /// Nacks a request `bad_request` and counts a violation.
    pub(super) fn bad_request(&mut self, now: Instant, conn: ConnId, op: Op, id: Option<&str>) {
        self.nack(conn, op, id, None, NackReason::BadRequest);
        self.violation(now, conn);
    }

    /// Records a violation; closes the connection (1008) when there were
    /// too many recently. The session is not kept: an abusive client does
    /// not get to resume.
    fn violation(&mut self, now: Instant, conn: ConnId) {
        let (max, window) = (self.config.max_violations, self.config.violation_window);
        let exceeded = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.violations.record(now, max, window));
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
}
