//! What the hub's timers are for and what each does when it fires:
//! heartbeats, idle eviction, retransmission and session expiry.
//!
//! Deadlines that move forward on every message (liveness, idle) are checked
//! lazily: the timer fires at the deadline computed when it was armed, and
//! the handler re-arms it if traffic has since pushed the real deadline
//! later. A busy connection therefore costs one timer update per interval,
//! not one per message.

use std::time::{Duration, Instant};

use super::{CLOSE_GOING_AWAY, CLOSE_POLICY, Hub, after};
use crate::id::ConnId;
use crate::session::SessionKey;

/// What a timer is for: the key of the hub's [`TimerSet`](crate::timers::TimerSet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Timer {
    /// Heartbeat: close the connection if it has been silent past the
    /// deadline, else send a ping if it has been quiet for an interval.
    /// One timer per connection serves both (each timer entry costs an
    /// idle connection about 100 bytes); the liveness check comes first, so
    /// a connection due both is closed without a pointless last ping.
    Heartbeat(ConnId),
    /// Close the connection if it has sent no message for the idle timeout.
    Idle(ConnId),
    /// Retransmit unacknowledged messages.
    Retransmit(ConnId),
    /// Drop a detached session whose retention time is over.
    SessionExpiry(SessionKey),
    /// Tell the connection its token expires soon.
    TokenExpiring(ConnId),
    /// Close the connection: its token has expired.
    TokenExpired(ConnId),
}

impl Timer {
    /// Every timer a connection may have armed.
    pub(super) fn of_conn(conn: ConnId) -> [Self; 5] {
        [
            Self::Heartbeat(conn),
            Self::Idle(conn),
            Self::Retransmit(conn),
            Self::TokenExpiring(conn),
            Self::TokenExpired(conn),
        ]
    }
}

impl Hub {
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
                Timer::Heartbeat(c) => self.on_heartbeat_timer(now, c),
                Timer::Idle(c) => self.on_idle_timer(now, c),
                Timer::Retransmit(c) => self.on_retransmit_timer(now, c),
                Timer::SessionExpiry(k) => self.on_session_expiry(k),
                Timer::TokenExpiring(c) => self.on_token_expiring(now, c),
                Timer::TokenExpired(c) => self.on_token_expired(now, c),
            }
        }
    }

    /// Liveness first (the deadline is checked lazily: traffic since the
    /// timer was armed moves it), then the ping: sent when the connection
    /// has been quiet for an interval, and again every interval while it
    /// stays quiet. Re-arms for whichever of the two comes next.
    fn on_heartbeat_timer(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let config = &self.config;
        let dead_at = after(c.last_activity, config.heartbeat_timeout);
        if dead_at <= now {
            self.out.metrics.heartbeat_timeouts += 1;
            self.close(now, conn, CLOSE_GOING_AWAY, "heartbeat timeout", true);
            return;
        }
        if c.next_ping <= now {
            let due = after(c.last_activity, config.ping_interval);
            if due <= now {
                self.out.actions.push_back(crate::Action::Ping { conn });
                c.next_ping = after(now, config.ping_interval);
            } else {
                c.next_ping = due;
            }
        }
        let next = c.next_ping.min(dead_at);
        self.timers.set(Timer::Heartbeat(conn), next);
    }

    fn on_idle_timer(&mut self, now: Instant, conn: ConnId) {
        let (Some(last), Some(limit)) = (
            self.conns.get(&conn).map(|c| c.last_message),
            self.config.idle_timeout,
        ) else {
            return;
        };
        if self.close_if_silent(now, conn, Timer::Idle(conn), last, limit, "idle timeout") {
            self.out.metrics.idle_evictions += 1;
        }
    }

    /// Closes `conn` (1001, keeping its session) if `limit` has passed
    /// since `last`; otherwise re-arms its `timer` for the moment it will
    /// have. Returns whether it closed.
    fn close_if_silent(
        &mut self,
        now: Instant,
        conn: ConnId,
        timer: Timer,
        last: Instant,
        limit: Duration,
        reason: &'static str,
    ) -> bool {
        let due = after(last, limit);
        if due <= now {
            self.close(now, conn, CLOSE_GOING_AWAY, reason, true);
            true
        } else {
            self.timers.set(timer, due);
            false
        }
    }

    /// Re-sends every unacknowledged message that is due, with doubling
    /// backoff; closes the connection (1008) once one has used up its
    /// retries.
    fn on_retransmit_timer(&mut self, now: Instant, conn: ConnId) {
        let Some(key) = self.conns.get(&conn).map(|c| c.session) else {
            return;
        };
        let Some((s, courier)) = self.courier_for(now, key) else {
            return;
        };
        let config = courier.config;
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
                courier.out.metrics.retransmissions += 1;
                courier.out.deliver(conn, u.payload.clone());
            }
            next = Some(next.map_or(u.due, |n| n.min(u.due)));
        }
        if dead {
            self.out.metrics.ack_timeouts += 1;
            self.close(now, conn, CLOSE_POLICY, "delivery ack timeout", true);
        } else if let Some(n) = next {
            courier.timers.set(Timer::Retransmit(conn), n);
        }
    }
}
