//! The hub's invariants: internal consistency and configured bounds,
//! checked by the tests and the model test after every step.

use super::Hub;
use super::timeouts::Timer;
use crate::session::SessionSet;

impl Hub {
    /// Checks internal consistency and configured bounds. For tests and
    /// fuzzing; O(everything).
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let cfg = &self.config;
        for (conn, c) in &self.conns {
            if !self.heartbeats.contains(c.heartbeat_at, *conn) {
                return Err(format!("{conn}: heartbeat timer not armed"));
            }
            let s = self
                .sessions
                .get(&c.session)
                .ok_or_else(|| format!("{conn}: no session"))?;
            if s.conn != Some(*conn) {
                return Err(format!("{conn}: session points elsewhere"));
            }
        }
        let mut detached = 0;
        for (key, s) in &self.sessions {
            match s.conn {
                Some(c) => {
                    if self.conns.get(&c).map(|c| c.session) != Some(*key) {
                        return Err(format!("{key:?}: attached to unknown {c}"));
                    }
                }
                None => {
                    detached += 1;
                    if self.timers.get(Timer::SessionExpiry(*key)).is_none() {
                        return Err(format!("{key:?}: detached without expiry"));
                    }
                    if !s.unacked.is_empty() {
                        return Err(format!("{key:?}: detached with unacked"));
                    }
                }
            }
            if s.rooms.len() > cfg.max_rooms_per_conn {
                return Err(format!("{key:?}: too many rooms"));
            }
            for r in &s.rooms {
                if !self
                    .rooms
                    .members(r.as_str())
                    .is_some_and(|m| m.contains(key))
                {
                    return Err(format!("{key:?}: not in room {r}"));
                }
            }
            if s.replay.len() > cfg.replay_max_messages || s.replay.bytes() > cfg.replay_max_bytes {
                return Err(format!("{key:?}: replay buffer over bounds"));
            }
            if s.unacked.len() > cfg.max_unacked {
                return Err(format!("{key:?}: too many unacked"));
            }
            if !self.users.get(&s.user).is_some_and(|u| u.contains(key)) {
                return Err(format!("{key:?}: missing from user index"));
            }
        }
        if detached != self.detached || detached > cfg.max_detached_sessions {
            return Err(format!("detached count {detached} vs {}", self.detached));
        }
        for (room, r) in self.rooms.iter() {
            let members = r.members();
            if members.is_empty() {
                return Err(format!("empty room {room} not freed"));
            }
            for m in members {
                if !self.sessions.get(m).is_some_and(|s| s.rooms.contains(room)) {
                    return Err(format!("room {room}: stale member {m:?}"));
                }
            }
            let mut counts = std::collections::BTreeMap::new();
            for m in members {
                if let Some(s) = self.sessions.get(m) {
                    *counts.entry(s.user.clone()).or_insert(0u64) += 1;
                }
            }
            if &counts != r.users() {
                return Err(format!("room {room}: presence counts out of sync"));
            }
        }
        let user_sessions: usize = self.users.values().map(SessionSet::len).sum();
        if user_sessions != self.sessions.len() {
            return Err("user index out of sync".to_owned());
        }
        if self.dedup.len() > cfg.dedup_max_entries
            || self.dedup.footprint() > cfg.dedup_max_entries
        {
            return Err("dedup window over bounds".to_owned());
        }
        if self.heartbeats.len() != self.conns.len() {
            return Err("heartbeat timers out of sync".to_owned());
        }
        if self.timers.len() > 3 * self.conns.len() + self.sessions.len() {
            return Err("timer leak".to_owned());
        }
        if self.conns.len() > cfg.max_connections {
            return Err("too many connections".to_owned());
        }
        Ok(())
    }
}
