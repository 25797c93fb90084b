//! What the hub's timers are for and what each does when it fires:
//! heartbeats, idle eviction, retransmission and session expiry.
//!
//! Deadlines that move forward on every message (liveness, idle) are checked
//! lazily: the timer fires at the deadline computed when it was armed, and
//! the handler re-arms it if traffic has since pushed the real deadline
//! later. A busy connection therefore costs one timer update per interval,
//! not one per message.

use std::time::Instant;

use super::{CLOSE_GOING_AWAY, CLOSE_POLICY, Hub, after};
use crate::id::ConnId;
use crate::session::SessionKey;

/// What a timer is for: the key of the hub's [`TimerSet`](crate::timers::TimerSet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Timer {
    /// Heartbeat and idle eviction: close the connection if it has been
    /// silent past the heartbeat deadline, or has sent no message for the
    /// idle timeout; else send a ping if it has been quiet for an
    /// interval. One timer per connection serves all three (each timer
    /// entry costs an idle connection about 100 bytes). The checks come in
    /// that order, so a connection due for several is closed once, without
    /// a pointless last ping. Kept in the hub's `heartbeats`
    /// ([`Deadlines`](crate::timers::Deadlines), the connection holds its
    /// deadline), never in its `TimerSet`.
    Heartbeat(ConnId),
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
    /// Every timer a connection may have armed in the `TimerSet`.
    pub(super) fn of_conn(conn: ConnId) -> [Self; 3] {
        [
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
        // Both sets in one time order; at equal instants heartbeats come
        // first, as `Timer::Heartbeat` is the first kind.
        let mut due = Vec::new();
        loop {
            let heartbeat = self.heartbeats.next().filter(|&t| t <= now);
            let other = self.timers.next().filter(|&t| t <= now);
            let heartbeat_first = match (heartbeat, other) {
                (Some(h), Some(o)) => h <= o,
                (h, _) => h.is_some(),
            };
            let t = if heartbeat_first {
                self.heartbeats
                    .pop_due(now)
                    .map(|(_, c)| Timer::Heartbeat(c))
            } else {
                self.timers.pop_due(now).map(|(_, t)| t)
            };
            let Some(t) = t else { break };
            due.push(t);
        }
        for t in due {
            match t {
                Timer::Heartbeat(c) => self.on_heartbeat_timer(now, c),
                Timer::Retransmit(c) => self.on_retransmit_timer(now, c),
                Timer::SessionExpiry(k) => self.on_session_expiry(k),
                Timer::TokenExpiring(c) => self.on_token_expiring(now, c),
                Timer::TokenExpired(c) => self.on_token_expired(now, c),
            }
        }
    }

    /// Liveness first, then idle eviction (both deadlines are checked
    /// lazily: traffic since the timer was armed moves them), then the
    /// ping: sent when the connection has been quiet for an interval, and
    /// again every interval while it stays quiet. Re-arms for whichever of
    /// the three comes next.
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
        let idle_at = config.idle_timeout.map(|d| after(c.last_message, d));
        if idle_at.is_some_and(|t| t <= now) {
            self.out.metrics.idle_evictions += 1;
            self.close(now, conn, CLOSE_GOING_AWAY, "idle timeout", true);
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
        let next = idle_at.map_or(next, |t| next.min(t));
        // Popped when it fired: nothing to remove first.
        c.heartbeat_at = next;
        self.heartbeats.insert(next, conn);
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
