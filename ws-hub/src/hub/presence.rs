//! Presence: who is in a room (`presence`, `presence_stats`) and the
//! optional `join` / `leave` events.
//!
//! A user is present in a room while at least one of its sessions is a
//! member, attached to a connection or detached and awaiting resume. So a
//! dropped connection that resumes within the retention time never leaves
//! (no event churn), and a detached session leaves when it is discarded
//! (retention over, detached-session bound, a clean close).

use std::time::Instant;

use super::Hub;
use crate::id::{ConnId, RoomName, UserId};
use crate::protocol::{Op, PresenceEntry, ServerMessage};
use crate::room::Change;
use crate::session::SessionKey;

/// Users and member sessions of a room on this node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceSnapshot {
    /// Each present user with its number of member sessions (attached or
    /// detached), by user name; empty when the room has no members.
    pub users: Vec<(UserId, u64)>,
    /// Number of member sessions.
    pub connections: u64,
}

impl Hub {
    pub(super) fn on_presence(
        &mut self,
        now: Instant,
        conn: ConnId,
        op: Op,
        room: &str,
        id: Option<&str>,
    ) {
        if self.room_request(now, conn, op, room, id).is_none() {
            return;
        }
        let name = RoomName::new(room);
        if !self.authorise(conn, op, id, Some(room), |a, u| a.may_presence(u, &name)) {
            return;
        }
        let (user_count, connection_count) = self.rooms.get(room).map_or((0, 0), |r| {
            (r.users().len() as u64, r.members().len() as u64)
        });
        let msg = if op == Op::PresenceStats {
            ServerMessage::PresenceStats {
                room,
                id,
                user_count,
                connection_count,
            }
        } else {
            let truncated = user_count > self.config.presence_max_users as u64;
            let users = (!truncated).then(|| {
                self.rooms
                    .get(room)
                    .map(|r| {
                        r.users()
                            .iter()
                            .map(|(u, n)| PresenceEntry {
                                user: u.as_str(),
                                connections: *n,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            });
            ServerMessage::Presence {
                room,
                id,
                user_count,
                connection_count,
                users,
                truncated,
            }
        };
        self.out.send(conn, &msg);
    }

    /// Presence of `room` on this node (for adapters: the server API and
    /// the cluster presence table).
    pub fn presence(&self, room: &str) -> PresenceSnapshot {
        self.rooms
            .get(room)
            .map(|r| PresenceSnapshot {
                users: r.users().iter().map(|(u, n)| (u.clone(), *n)).collect(),
                connections: r.members().len() as u64,
            })
            .unwrap_or_default()
    }

    /// Presence of every room with members on this node, by room name.
    pub fn presence_by_room(&self) -> Vec<(RoomName, PresenceSnapshot)> {
        let mut all: Vec<(RoomName, PresenceSnapshot)> = self
            .rooms
            .iter()
            .map(|(name, _)| (name.clone(), self.presence(name.as_str())))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Number of users with at least one session (attached or detached).
    pub fn online_users(&self) -> usize {
        self.users.len()
    }

    /// Sends `join` (when `joined`) or `leave` for `user` in `room` to
    /// every attached member session but `except`, if presence events are
    /// on and `change` is the user's first entry or last exit.
    pub(super) fn presence_event(
        &mut self,
        room: &RoomName,
        user: &UserId,
        change: Change,
        joined: bool,
        except: Option<SessionKey>,
    ) {
        if !self.config.presence_events || !change.user {
            return;
        }
        let Some(r) = self.rooms.get(room.as_str()) else {
            return;
        };
        let msg = if joined {
            ServerMessage::Join {
                room: room.as_str(),
                user: user.as_str(),
            }
        } else {
            ServerMessage::Leave {
                room: room.as_str(),
                user: user.as_str(),
            }
        };
        let payload = msg.encode();
        for key in r.members() {
            if Some(*key) == except {
                continue;
            }
            if let Some(conn) = self.sessions.get(key).and_then(|s| s.conn) {
                self.out.deliver(conn, payload.clone());
            }
        }
    }
}
