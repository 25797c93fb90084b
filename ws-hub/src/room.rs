//! Room membership.
//!
//! Members are sessions, not connections: a detached session (awaiting
//! resume) stays in its rooms so that what it misses is buffered. Member
//! sets are ordered so fan-out order is deterministic.

use std::collections::{BTreeSet, HashMap};

use crate::id::RoomName;
use crate::session::SessionKey;

/// All rooms with at least one member.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    map: HashMap<RoomName, BTreeSet<SessionKey>>,
}

impl Rooms {
    /// Adds `member`; returns `true` if the room was created.
    pub(crate) fn join(&mut self, room: &RoomName, member: SessionKey) -> bool {
        match self.map.get_mut(room) {
            Some(set) => {
                set.insert(member);
                false
            }
            None => {
                self.map.insert(room.clone(), BTreeSet::from([member]));
                true
            }
        }
    }

    /// Removes `member`; returns `true` if the room became empty and was
    /// freed.
    pub(crate) fn leave(&mut self, room: &RoomName, member: SessionKey) -> bool {
        let Some(set) = self.map.get_mut(room) else {
            return false;
        };
        set.remove(&member);
        if set.is_empty() {
            self.map.remove(room);
            true
        } else {
            false
        }
    }

    /// The members of `room`, if it exists.
    pub(crate) fn members(&self, room: &str) -> Option<&BTreeSet<SessionKey>> {
        self.map.get(room)
    }

    /// Number of rooms.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Every room with its members (for invariant checks).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&RoomName, &BTreeSet<SessionKey>)> {
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
        assert!(r.join(&room, SessionKey(1)));
        assert!(!r.join(&room, SessionKey(2)));
        assert!(!r.join(&room, SessionKey(2)));
        assert_eq!(r.members("a").map(BTreeSet::len), Some(2));
        assert!(!r.leave(&room, SessionKey(1)));
        assert!(r.leave(&room, SessionKey(2)));
        assert_eq!(r.len(), 0);
        assert!(!r.leave(&room, SessionKey(2)));
    }
}
