//! Room membership.
//!
//! Members are sessions, not connections: a detached session (awaiting
//! resume) stays in its rooms so that what it misses is buffered. Member
//! sets are ordered so fan-out order is deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::id::{RoomName, UserId};
use crate::session::SessionKey;

/// One room: its member sessions, and how many of them each user has
/// (presence).
#[derive(Debug, Default)]
pub(crate) struct Room {
    members: BTreeSet<SessionKey>,
    users: BTreeMap<UserId, u64>,
}

impl Room {
    /// The member sessions.
    pub(crate) fn members(&self) -> &BTreeSet<SessionKey> {
        &self.members
    }

    /// Each present user with its number of member sessions, by name.
    pub(crate) fn users(&self) -> &BTreeMap<UserId, u64> {
        &self.users
    }
}

/// What a join or leave changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Change {
    /// The room was created (join) or freed (leave).
    pub(crate) room: bool,
    /// The user's first session entered (join) or its last one left
    /// (leave).
    pub(crate) user: bool,
}

/// All rooms with at least one member.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    map: HashMap<RoomName, Room>,
}

impl Rooms {
    /// Adds `member` of `user`.
    pub(crate) fn join(&mut self, room: &RoomName, member: SessionKey, user: &UserId) -> Change {
        let created = !self.map.contains_key(room);
        let r = self.map.entry(room.clone()).or_default();
        if !r.members.insert(member) {
            return Change {
                room: created,
                user: false,
            };
        }
        let count = r.users.entry(user.clone()).or_default();
        *count += 1;
        Change {
            room: created,
            user: *count == 1,
        }
    }

    /// Removes `member` of `user`; frees the room when it becomes empty.
    pub(crate) fn leave(&mut self, room: &RoomName, member: SessionKey, user: &UserId) -> Change {
        let Some(r) = self.map.get_mut(room) else {
            return Change::default();
        };
        if !r.members.remove(&member) {
            return Change::default();
        }
        let mut last = false;
        if let Some(count) = r.users.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                r.users.remove(user);
                last = true;
            }
        }
        let freed = r.members.is_empty();
        if freed {
            self.map.remove(room);
        }
        Change {
            room: freed,
            user: last,
        }
    }

    /// The members of `room`, if it exists.
    pub(crate) fn members(&self, room: &str) -> Option<&BTreeSet<SessionKey>> {
        self.map.get(room).map(Room::members)
    }

    /// `room`, if it has members.
    pub(crate) fn get(&self, room: &str) -> Option<&Room> {
        self.map.get(room)
    }

    /// Number of rooms.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Every room (for invariant checks).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&RoomName, &Room)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_and_freed() {
        let mut r = Rooms::default();
        let room = RoomName::new("a");
        let (u, v) = (UserId::new("u"), UserId::new("v"));
        let both = Change {
            room: true,
            user: true,
        };
        let user_only = Change {
            room: false,
            user: true,
        };
        assert_eq!(r.join(&room, SessionKey(1), &u), both);
        assert_eq!(r.join(&room, SessionKey(2), &u), Change::default());
        assert_eq!(r.join(&room, SessionKey(2), &u), Change::default());
        assert_eq!(r.join(&room, SessionKey(3), &v), user_only);
        assert_eq!(r.members("a").map(BTreeSet::len), Some(3));
        let users: Vec<(&str, u64)> = r
            .get("a")
            .map(|r| r.users().iter().map(|(u, n)| (u.as_str(), *n)).collect())
            .unwrap_or_default();
        assert_eq!(users, [("u", 2), ("v", 1)]);
        assert_eq!(r.leave(&room, SessionKey(1), &u), Change::default());
        assert_eq!(r.leave(&room, SessionKey(3), &v), user_only);
        assert_eq!(r.leave(&room, SessionKey(2), &u), both);
        assert_eq!(r.len(), 0);
        assert_eq!(r.leave(&room, SessionKey(2), &u), Change::default());
    }
}
