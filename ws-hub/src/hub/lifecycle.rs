//! Connection lifecycle and resume: admitting a connection, giving it a new
//! or resumed session, closing it, and keeping or discarding its session.

use std::net::SocketAddr;
use std::time::Instant;

use super::timeouts::Timer;
use super::{
    CLOSE_GOING_AWAY, CLOSE_NO_STATUS, CLOSE_NORMAL, CLOSE_TRY_AGAIN_LATER, Conn, Hub,
    KEEP_SESSION, after,
};
use crate::action::{Action, CloseReason};
use crate::command::ResumeRequest;
use crate::id::{ConnId, Identity};
use crate::protocol::{ResumeFailure, ServerMessage};
use crate::ratelimit::{TokenBucket, ViolationWindow};
use crate::session::{ParsedSession, ReplayBuffer, Session, SessionKey, SessionSet};

/// What became of a resume request.
enum Resume {
    /// The session is back and its buffer holds everything after the
    /// client's `last_seq`.
    Complete { key: SessionKey, last_seq: u64 },
    /// The session is back but messages after `last_seq` were evicted.
    Overflow(SessionKey),
    /// No session to resume; a new one is started.
    Failed(ResumeFailure),
}

impl Hub {
    pub(super) fn on_connected(
        &mut self,
        now: Instant,
        conn: ConnId,
        identity: Identity,
        remote_addr: Option<SocketAddr>,
        resume: Option<ResumeRequest>,
    ) {
        if self.conns.contains_key(&conn) {
            // A reused handle: the old connection must be gone.
            self.detach(now, conn, true);
        }
        if self.shutting_down {
            self.refuse(conn, CLOSE_GOING_AWAY, "server shutting down");
            return;
        }
        if self.conns.len() >= self.config.max_connections {
            self.refuse(conn, CLOSE_TRY_AGAIN_LATER, "server full");
            return;
        }
        let resume = resume.map(|req| self.try_resume(&identity, &req));
        let key = match resume {
            Some(Resume::Complete { key, .. } | Resume::Overflow(key)) => key,
            None | Some(Resume::Failed(_)) => self.new_session(&identity),
        };
        self.open(now, conn, key, remote_addr);
        self.welcome(conn, key);
        match resume {
            None => {}
            Some(Resume::Failed(reason)) => self.resume_failed(conn, key, reason),
            Some(Resume::Overflow(_)) => {
                self.resume_failed(conn, key, ResumeFailure::Overflow);
            }
            Some(Resume::Complete { key, last_seq }) => {
                self.out.metrics.resumes_ok += 1;
                self.replay(now, conn, key, last_seq);
            }
        }
    }

    /// Registers the connection on session `key` and arms its timers.
    fn open(
        &mut self,
        now: Instant,
        conn: ConnId,
        key: SessionKey,
        remote_addr: Option<SocketAddr>,
    ) {
        self.attach(key, conn);
        let config = &self.config;
        let first = after(now, config.ping_interval).min(after(now, config.heartbeat_timeout));
        let first = config
            .idle_timeout
            .map_or(first, |d| first.min(after(now, d)));
        self.conns.insert(
            conn,
            Box::new(Conn {
                session: key,
                remote_addr,
                last_activity: now,
                last_message: now,
                next_ping: after(now, config.ping_interval),
                heartbeat_at: first,
                bucket: TokenBucket::new(config.rate_burst, now),
                violations: ViolationWindow::default(),
                token: None,
                done: false,
            }),
        );
        self.out.metrics.connections_total += 1;
        self.heartbeats.insert(first, conn);
    }

    fn welcome(&mut self, conn: ConnId, key: SessionKey) {
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        let config = &self.config;
        self.out.send(
            conn,
            &ServerMessage::Welcome {
                session: self.minter.mint(key).as_str(),
                user: s.user.as_str(),
                node: &config.node_id,
                ping_interval_ms: u64::try_from(config.ping_interval.as_millis())
                    .unwrap_or(u64::MAX),
                retention_ms: u64::try_from(config.session_retention.as_millis())
                    .unwrap_or(u64::MAX),
                max_message_size: config.max_message_size,
            },
        );
    }

    fn resume_failed(&mut self, conn: ConnId, key: SessionKey, reason: ResumeFailure) {
        self.out.metrics.resumes_failed += 1;
        if !self.sessions.contains_key(&key) {
            return;
        }
        self.out.send(
            conn,
            &ServerMessage::ResumeFailed {
                reason,
                session: self.minter.mint(key).as_str(),
            },
        );
    }

    /// Checks a resume request and, if it names a live session of this
    /// user, detaches that session from any older connection.
    fn try_resume(&mut self, identity: &Identity, req: &ResumeRequest) -> Resume {
        let Some(last_seq) = req.last_seq else {
            return Resume::Failed(ResumeFailure::InvalidSeq);
        };
        let key = match self.minter.parse(&req.session) {
            ParsedSession::Ours(key) => key,
            ParsedSession::Foreign => return Resume::Failed(ResumeFailure::Expired),
            ParsedSession::Invalid => return Resume::Failed(ResumeFailure::Unknown),
        };
        let Some(s) = self.sessions.get(&key) else {
            return Resume::Failed(ResumeFailure::Expired);
        };
        if !s.anonymous && (identity.anonymous || identity.user != s.user) {
            return Resume::Failed(ResumeFailure::Forbidden);
        }
        if last_seq > s.last_seq() {
            return Resume::Failed(ResumeFailure::InvalidSeq);
        }
        let complete = s.replay.after(last_seq).is_some();
        if let Some(old) = s.conn {
            // Hand the session over: the old connection goes, the session
            // stays (it is never counted as detached, so the detached-session
            // bound cannot discard it mid-resume).
            self.out.actions.push_back(Action::Close {
                conn: old,
                code: CLOSE_NORMAL,
                reason: "session resumed elsewhere".into(),
            });
            self.release_conn(old);
            if let Some(s) = self.sessions.get_mut(&key) {
                s.conn = None;
                s.unacked.clear();
            }
        }
        if complete {
            Resume::Complete { key, last_seq }
        } else {
            Resume::Overflow(key)
        }
    }

    fn new_session(&mut self, identity: &Identity) -> SessionKey {
        self.next_session += 1;
        let key = SessionKey(self.next_session);
        let session = Session::new(
            identity.user.clone(),
            identity.anonymous,
            ReplayBuffer::default(),
        );
        self.users
            .entry(identity.user.clone())
            .and_modify(|set| set.insert(key))
            .or_insert(SessionSet::One(key));
        self.sessions.insert(key, Box::new(session));
        key
    }

    fn attach(&mut self, key: SessionKey, conn: ConnId) {
        if self.timers.get(Timer::SessionExpiry(key)).is_some() {
            self.timers.cancel(Timer::SessionExpiry(key));
            self.detached -= 1;
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.conn = Some(conn);
        }
    }

    pub(super) fn on_client_closed(&mut self, conn: ConnId, code: u16, reason: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.done = matches!(code, CLOSE_NORMAL | CLOSE_NO_STATUS) && reason != KEEP_SESSION;
        }
    }

    pub(super) fn on_disconnected(&mut self, now: Instant, conn: ConnId) {
        let retain = !self.conns.get(&conn).is_some_and(|c| c.done);
        self.detach(now, conn, retain);
    }

    /// Closes every connection with 1001 and refuses new ones.
    pub(super) fn shut_down(&mut self, now: Instant) {
        self.shutting_down = true;
        let all: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in all {
            self.close(now, conn, CLOSE_GOING_AWAY, "server shutting down", false);
        }
    }

    /// Closes a connection that cannot keep up (1013), keeping its
    /// session for resume.
    pub(super) fn slow_consumer(&mut self, now: Instant, conn: ConnId) {
        self.out.metrics.slow_consumer_disconnects += 1;
        self.close(now, conn, CLOSE_TRY_AGAIN_LATER, "slow consumer", true);
    }

    fn refuse(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        self.out.metrics.refused += 1;
        self.out.actions.push_back(Action::Close {
            conn,
            code,
            reason: reason.into(),
        });
    }

    /// Emits `Close` and forgets the connection.
    pub(super) fn close(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: u16,
        reason: impl Into<CloseReason>,
        retain: bool,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.out.actions.push_back(Action::Close {
            conn,
            code,
            reason: reason.into(),
        });
        self.detach(now, conn, retain);
    }

    /// Forgets the connection; keeps its session for resume if `retain`.
    fn detach(&mut self, now: Instant, conn: ConnId, retain: bool) {
        let Some(key) = self.release_conn(conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.conn != Some(conn) {
            return;
        }
        s.conn = None;
        s.unacked.clear();
        if retain && self.detached < self.config.max_detached_sessions {
            self.timers.set(
                Timer::SessionExpiry(key),
                after(now, self.config.session_retention),
            );
            self.detached += 1;
        } else {
            self.destroy_session(key);
        }
    }

    /// Removes the connection and its timers; returns its session.
    fn release_conn(&mut self, conn: ConnId) -> Option<SessionKey> {
        let c = self.conns.remove(&conn)?;
        self.heartbeats.remove(c.heartbeat_at, conn);
        for t in Timer::of_conn(conn) {
            self.timers.cancel(t);
        }
        Some(c.session)
    }

    pub(super) fn on_session_expiry(&mut self, key: SessionKey) {
        let detached = self.sessions.get(&key).is_some_and(|s| s.conn.is_none());
        if detached {
            self.detached -= 1;
            self.destroy_session(key);
        }
    }

    /// Drops a detached session now instead of at the end of its
    /// retention time.
    pub(super) fn discard_detached(&mut self, key: SessionKey) {
        if self.timers.get(Timer::SessionExpiry(key)).is_some() {
            self.timers.cancel(Timer::SessionExpiry(key));
            self.on_session_expiry(key);
        }
    }

    fn destroy_session(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.remove(&key) else {
            return;
        };
        for room in &s.rooms {
            let change = self.rooms.leave(room, key, &s.user);
            if change.room && self.config.cluster {
                self.out
                    .actions
                    .push_back(Action::UnsubscribeBus(room.clone()));
            }
            self.presence_event(room, &s.user, change, false, None);
        }
        if let Some(set) = self.users.get_mut(&s.user)
            && set.remove(key)
        {
            self.users.remove(&s.user);
        }
    }
}
