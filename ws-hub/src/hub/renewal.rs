//! Token expiry during the connection: `token_expiring` ahead of it,
//! `refresh` with a new token of the same user, and a close with
//! [`CLOSE_TOKEN_EXPIRED`] (session kept for resume) when it passes.
//!
//! The hub reads no clock: the adapter reports the wall-clock time once,
//! with the expiry ([`Command::TokenExpiry`](crate::Command::TokenExpiry)),
//! and the hub derives the wall-clock time of later instants from it.

use std::time::{Duration, Instant};

use super::timeouts::Timer;
use super::{CLOSE_TOKEN_EXPIRED, Hub, after};
use crate::auth::AuthRequest;
use crate::id::ConnId;
use crate::protocol::{NackReason, Op, ServerMessage};

/// A connection's token expiry against the hub's clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokenClock {
    /// An instant and the Unix seconds the wall clock read then.
    base: Instant,
    base_unix_secs: u64,
    expires_unix_secs: u64,
}

impl TokenClock {
    fn unix_secs_at(&self, now: Instant) -> u64 {
        self.base_unix_secs
            .saturating_add(now.saturating_duration_since(self.base).as_secs())
    }

    fn expires_at(&self) -> Instant {
        let left = self.expires_unix_secs.saturating_sub(self.base_unix_secs);
        after(self.base, Duration::from_secs(left))
    }
}

impl Hub {
    pub(super) fn on_token_expiry(
        &mut self,
        now: Instant,
        conn: ConnId,
        now_unix_secs: u64,
        expires_unix_secs: u64,
    ) {
        let clock = TokenClock {
            base: now,
            base_unix_secs: now_unix_secs,
            expires_unix_secs,
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.token = Some(Box::new(clock));
        let expires = clock.expires_at();
        let warn = expires
            .checked_sub(self.config.token_expiring_before)
            .map_or(now, |t| t.max(now));
        self.timers.set(Timer::TokenExpiring(conn), warn);
        self.timers.set(Timer::TokenExpired(conn), expires.max(now));
    }

    pub(super) fn on_refresh(&mut self, now: Instant, conn: ConnId, token: &str, id: Option<&str>) {
        if id.is_some_and(|i| i.is_empty() || i.len() > self.config.max_name_len) {
            self.bad_request(now, conn, Op::Refresh, None);
            return;
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(clock) = c.token.as_deref().copied() else {
            // A connection without an expiring token has nothing to renew
            // (not a violation: the client may not know how it was let in).
            self.nack(conn, Op::Refresh, id, None, NackReason::BadRequest);
            return;
        };
        let remote_addr = c.remote_addr;
        let req = AuthRequest {
            conn,
            token: Some(token),
            remote_addr,
            now_unix_secs: clock.unix_secs_at(now),
            namespace: "",
        };
        let Ok(identity) = self.authenticator.authenticate(&req) else {
            self.nack(conn, Op::Refresh, id, None, NackReason::InvalidToken);
            return;
        };
        let same_user = self
            .user(conn)
            .is_some_and(|u| !identity.anonymous && *u == identity.user);
        if !same_user {
            self.nack(conn, Op::Refresh, id, None, NackReason::Forbidden);
            return;
        }
        match self.authenticator.token_expiry(token) {
            Some(expires_unix_secs) => {
                self.on_token_expiry(now, conn, clock.unix_secs_at(now), expires_unix_secs)
            }
            None => {
                // A token that never expires: nothing left to enforce.
                for t in [Timer::TokenExpiring(conn), Timer::TokenExpired(conn)] {
                    self.timers.cancel(t);
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.token = None;
                }
            }
        }
        self.out.send(
            conn,
            &ServerMessage::Ack {
                op: Op::Refresh,
                id,
                room: None,
                duplicate: false,
            },
        );
    }

    pub(super) fn on_token_expiring(&mut self, now: Instant, conn: ConnId) {
        let Some(clock) = self
            .conns
            .get(&conn)
            .and_then(|c| c.token.as_deref().copied())
        else {
            return;
        };
        let left = clock.expires_at().saturating_duration_since(now);
        self.out.send(
            conn,
            &ServerMessage::TokenExpiring {
                expires_in_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            },
        );
    }

    pub(super) fn on_token_expired(&mut self, now: Instant, conn: ConnId) {
        if self.conns.get(&conn).is_some_and(|c| c.token.is_some()) {
            self.out.metrics.token_expiry_closes += 1;
            self.close(now, conn, CLOSE_TOKEN_EXPIRED, "token expired", true);
        }
    }
}
