//! Presence: who is in a room (`presence`, `presence_stats`) and the
//! optional `join` / `leave` events.
//!
//! A user is present in a room while at least one of its sessions is a
//! member, attached to a connection or detached and awaiting resume. So a
//! dropped connection that resumes within the retention time never leaves
//! (no event churn), and a detached session leaves when it is discarded
//! (retention over, detached-session bound, a clean close).

use std::collections::BTreeMap;
use std::time::Instant;

use super::Hub;
use crate::action::Action;
use crate::id::{ConnId, RoomName, UserId};
use crate::protocol::{NackReason, Op, PresenceEntry, ServerMessage};
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

/// A `presence` or `presence_stats` request that needs the other nodes'
/// parts of the presence table: in a cluster
/// ([`HubConfig::cluster`](crate::HubConfig::cluster)) the hub hands it
/// out as [`Action::QueryPresence`] (after the usual checks and the
/// authoriser) and answers the client when the adapter feeds back
/// [`Command::ClusterPresence`](crate::Command::ClusterPresence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceQuery {
    /// The asking connection.
    pub conn: ConnId,
    /// The room.
    pub room: RoomName,
    /// The request's id, echoed in the answer.
    pub id: Option<String>,
    /// `presence_stats` (counts only) rather than `presence`.
    pub stats: bool,
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
        if self.config.cluster {
            self.out
                .actions
                .push_back(Action::QueryPresence(PresenceQuery {
                    conn,
                    room: name,
                    id: id.map(str::to_owned),
                    stats: op == Op::PresenceStats,
                }));
            return;
        }
        let users = self.presence(room).users;
        self.answer_presence(conn, op, room, id, &users);
    }

    /// Answers a [`PresenceQuery`] with this node's members now plus
    /// `others` (the other nodes' users of the room with their sessions),
    /// or nacks it `unavailable` when they could not be read. Nothing is
    /// sent if the connection has gone meanwhile.
    pub(super) fn on_cluster_presence(
        &mut self,
        query: PresenceQuery,
        others: Option<Vec<(UserId, u64)>>,
    ) {
        let PresenceQuery {
            conn,
            room,
            id,
            stats,
        } = query;
        if !self.conns.contains_key(&conn) {
            return;
        }
        let op = if stats {
            Op::PresenceStats
        } else {
            Op::Presence
        };
        let Some(others) = others else {
            self.nack(
                conn,
                op,
                id.as_deref(),
                Some(room.as_str()),
                NackReason::Unavailable,
            );
            return;
        };
        let mut users: BTreeMap<UserId, u64> =
            self.presence(room.as_str()).users.into_iter().collect();
        for (user, n) in others {
            let total = users.entry(user).or_default();
            *total = total.saturating_add(n);
        }
        let users: Vec<(UserId, u64)> = users.into_iter().collect();
        self.answer_presence(conn, op, room.as_str(), id.as_deref(), &users);
    }

    /// Sends the `presence` (or `presence_stats`) answer for `users`
    /// (sorted by name), counts only above `presence_max_users`.
    fn answer_presence(
        &mut self,
        conn: ConnId,
        op: Op,
        room: &str,
        id: Option<&str>,
        users: &[(UserId, u64)],
    ) {
        let user_count = users.len() as u64;
        // Saturating: other nodes' counts come from Redis.
        let connection_count = users
            .iter()
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
        let msg = if op == Op::PresenceStats {
            ServerMessage::PresenceStats {
                room,
                id,
                user_count,
                connection_count,
            }
        } else {
            let truncated = users.len() > self.config.presence_max_users;
            let users = (!truncated).then(|| {
                users
                    .iter()
                    .map(|(u, n)| PresenceEntry {
                        user: u.as_str(),
                        connections: *n,
                    })
                    .collect()
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
