//! Requests of a server API for backends (the adapter authenticates the
//! backend): publish, direct messages and broadcast under the
//! pseudo-publisher [`API_PUBLISHER`], and disconnecting a user.

use std::time::Instant;

use serde_json::value::RawValue;

use super::Hub;
use crate::action::CloseReason;
use crate::bus::BusTarget;
use crate::dedup::Seen;
use crate::id::UserId;
use crate::protocol::NackReason;

/// The `from` of messages published through the server API; their ids
/// are de-duplicated under this name.
pub const API_PUBLISHER: &str = "api";

/// What a server-API publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiPublished {
    /// Delivered (to however many local members, and to the bus in a
    /// cluster).
    Delivered,
    /// The id was already published within the de-dup window: not
    /// delivered again.
    Duplicate,
}

impl Hub {
    /// Publishes `data` to `target` as [`API_PUBLISHER`]. With an `id`,
    /// it is de-duplicated like a client publish; without one the hub
    /// names it `api-<n>`. Errors: `BadRequest` (empty or too long room,
    /// user or id), `UnknownUser` (single node, no session of the user),
    /// `Busy` (de-dup table full).
    pub fn api_publish(
        &mut self,
        now: Instant,
        target: BusTarget,
        id: Option<&str>,
        data: &RawValue,
    ) -> Result<ApiPublished, NackReason> {
        let valid = |s: &str| !s.is_empty() && s.len() <= self.config.max_name_len;
        let name_ok = match &target {
            BusTarget::Room(r) => valid(r.as_str()),
            BusTarget::User(u) => valid(u.as_str()),
            BusTarget::Broadcast => true,
        };
        if !name_ok || id.is_some_and(|i| !valid(i)) {
            return Err(NackReason::BadRequest);
        }
        if let BusTarget::User(u) = &target
            && !self.config.cluster
            && !self.users.contains_key(u)
        {
            return Err(NackReason::UnknownUser);
        }
        let from = UserId::new(API_PUBLISHER);
        let id = match id {
            Some(id) => {
                match self.dedup.check_and_insert(now, &from, id) {
                    Seen::New => {}
                    Seen::Duplicate => {
                        self.out.metrics.duplicates_suppressed += 1;
                        return Ok(ApiPublished::Duplicate);
                    }
                    Seen::Full => return Err(NackReason::Busy),
                }
                id.to_owned()
            }
            None => {
                self.next_api_id += 1;
                format!("api-{}-{}", self.config.node_id, self.next_api_id)
            }
        };
        self.deliver_new(now, target, &id, from, data);
        Ok(ApiPublished::Delivered)
    }

    /// Closes every connection of `user` on this node with `code` and
    /// `reason`; with `discard`, also drops all its sessions (no resume),
    /// else they are kept for resume. Returns how many connections were
    /// closed.
    pub fn api_disconnect(
        &mut self,
        now: Instant,
        user: &UserId,
        code: u16,
        reason: &CloseReason,
        discard: bool,
    ) -> usize {
        let keys: Vec<_> = self
            .users
            .get(user)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        let mut closed = 0;
        for key in keys {
            if let Some(conn) = self.sessions.get(&key).and_then(|s| s.conn) {
                self.close(now, conn, code, reason.clone(), !discard);
                closed += 1;
            } else if discard {
                self.discard_detached(key);
            }
        }
        closed
    }
}
