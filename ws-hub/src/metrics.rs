//! Counters and gauges for adapters to export.

use crate::protocol::NackReason;

/// Nacks sent, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NackCounts {
    /// `not_member`.
    pub not_member: u64,
    /// `too_large`.
    pub too_large: u64,
    /// `rate_limited`.
    pub rate_limited: u64,
    /// `unknown_room`.
    pub unknown_room: u64,
    /// `unknown_user`.
    pub unknown_user: u64,
    /// `forbidden`.
    pub forbidden: u64,
    /// `bad_request`.
    pub bad_request: u64,
    /// `too_many_rooms`.
    pub too_many_rooms: u64,
    /// `busy`.
    pub busy: u64,
    /// `invalid_token`.
    pub invalid_token: u64,
    /// `unavailable`.
    pub unavailable: u64,
}

impl NackCounts {
    pub(crate) fn bump(&mut self, reason: NackReason) {
        let c = match reason {
            NackReason::NotMember => &mut self.not_member,
            NackReason::TooLarge => &mut self.too_large,
            NackReason::RateLimited => &mut self.rate_limited,
            NackReason::UnknownRoom => &mut self.unknown_room,
            NackReason::UnknownUser => &mut self.unknown_user,
            NackReason::Forbidden => &mut self.forbidden,
            NackReason::BadRequest => &mut self.bad_request,
            NackReason::TooManyRooms => &mut self.too_many_rooms,
            NackReason::Busy => &mut self.busy,
            NackReason::InvalidToken => &mut self.invalid_token,
            NackReason::Unavailable => &mut self.unavailable,
        };
        *c += 1;
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.not_member
            + self.too_large
            + self.rate_limited
            + self.unknown_room
            + self.unknown_user
            + self.forbidden
            + self.bad_request
            + self.too_many_rooms
            + self.busy
            + self.invalid_token
            + self.unavailable
    }
}

/// Hub metrics, read with [`Hub::metrics`](crate::Hub::metrics).
///
/// Fields documented as *gauge* are current values; all others are
/// monotonically increasing counters since the hub was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Gauge: open connections.
    pub connections: u64,
    /// Gauge: sessions, attached or detached (awaiting resume).
    pub sessions: u64,
    /// Gauge: detached sessions kept for resume.
    pub detached_sessions: u64,
    /// Gauge: rooms with at least one member.
    pub rooms: u64,
    /// Gauge: users with at least one session, attached or detached
    /// (online users, in the sense of presence).
    pub users: u64,
    /// Gauge: entries in the de-duplication window.
    pub dedup_entries: u64,
    /// Connections closed because their token expired (4001).
    pub token_expiry_closes: u64,
    /// Connections accepted.
    pub connections_total: u64,
    /// Client messages received (any kind, including malformed ones).
    pub messages_in: u64,
    /// Payloads delivered (every [`Action::Deliver`](crate::Action::Deliver),
    /// control messages included).
    pub messages_out: u64,
    /// Bytes in delivered payloads.
    pub bytes_out: u64,
    /// Publishes (room, user, broadcast) accepted and delivered.
    pub publishes: u64,
    /// Publishes (local or from the bus) suppressed as duplicates.
    pub duplicates_suppressed: u64,
    /// Messages retransmitted for lack of a delivery ack.
    pub retransmissions: u64,
    /// Connections closed because their outbound queue overflowed.
    pub slow_consumer_disconnects: u64,
    /// Connections closed for missing heartbeats.
    pub heartbeat_timeouts: u64,
    /// Connections closed as idle.
    pub idle_evictions: u64,
    /// Connections closed after exhausting delivery-ack retries.
    pub ack_timeouts: u64,
    /// Connections closed for repeated protocol violations.
    pub abuse_closes: u64,
    /// Connections refused because the hub was full or shutting down.
    pub refused: u64,
    /// Successful resumes.
    pub resumes_ok: u64,
    /// Failed resumes (expired, overflow, unknown, forbidden, invalid_seq).
    pub resumes_failed: u64,
    /// `error` messages sent (malformed input, binary frames, ...).
    pub protocol_errors: u64,
    /// Nacks by reason.
    pub nacks: NackCounts,
    /// `ping`s and `configure`s over the rate limit, dropped unanswered.
    pub dropped_over_rate: u64,
    /// Bus messages delivered without being recorded for de-duplication
    /// because the de-dup table was full.
    pub dedup_full_bus: u64,
    /// Bus messages published.
    pub bus_out: u64,
    /// Bus messages received (including ignored ones).
    pub bus_in: u64,
    /// Bus messages ignored because this node published them.
    pub bus_echoes_ignored: u64,
}
