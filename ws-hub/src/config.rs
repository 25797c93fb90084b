//! Hub configuration: every limit, with its default.

use std::time::Duration;

use crate::error::ConfigError;
use crate::outbound::OutboundConfig;

/// Upper bound for every configured duration (about ten years), so deadline
/// arithmetic can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Configuration of a [`Hub`](crate::Hub). Every field has a documented
/// default ([`HubConfig::default`]); [`HubConfig::validate`] (called by
/// [`Hub::new`](crate::Hub::new)) rejects combinations that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// This node's id on the bus (1-64 bytes). Default `"node-1"`.
    pub node_id: String,
    /// Emit [`Action::PublishBus`](crate::Action::PublishBus) and
    /// `SubscribeBus`/`UnsubscribeBus` actions for multi-node operation,
    /// and answer `presence` / `presence_stats` across nodes through
    /// [`Action::QueryPresence`](crate::Action::QueryPresence) (which the
    /// adapter must answer). Default `false` (single node: no bus actions
    /// at all, presence answered at once).
    pub cluster: bool,
    /// Distinguishes runs of the hub (session ids of an earlier run under
    /// the same [`SessionSecret`](crate::SessionSecret) are reported
    /// `expired`; under another secret
    /// they are `unknown`) and is part of
    /// [`anonymous_namespace`](Self::anonymous_namespace). Default 0; an
    /// adapter SHOULD pass a random value.
    pub session_seed: u64,
    /// Send a ping when a connection has been quiet this long. Default 30 s.
    pub ping_interval: Duration,
    /// Close (1001) a connection that shows no pong or other traffic for
    /// this long. Default 90 s (three missed pings).
    pub heartbeat_timeout: Duration,
    /// Close (1001) a connection that sends no message (pongs do not count)
    /// for this long; `None` disables idle eviction. Default 1 hour.
    pub idle_timeout: Option<Duration>,
    /// Connections beyond this are refused with 1013. Default 100,000.
    pub max_connections: usize,
    /// Maximum size of a client message in bytes; larger publishes are
    /// nacked `too_large`. Default 64 KiB.
    pub max_message_size: usize,
    /// Maximum rooms a session may be in. Default 64.
    pub max_rooms_per_conn: usize,
    /// Maximum length in bytes of a room name, message id or user name in a
    /// request. Default 128.
    pub max_name_len: usize,
    /// Token-bucket refill rate per connection. Every client message but a
    /// delivery `ack` takes a token; a request over the limit is nacked
    /// `rate_limited` (a violation), a `ping` or `configure` over it is
    /// dropped unanswered (not a violation). Default 50/s.
    pub rate_per_sec: u32,
    /// Token-bucket size (burst). Default 100.
    pub rate_burst: u32,
    /// A connection with more than this many violations (malformed or
    /// oversized input, binary messages, rate-limited requests) within
    /// `violation_window` is closed with 1008. Default 20.
    pub max_violations: usize,
    /// See `max_violations`. Default 60 s.
    pub violation_window: Duration,
    /// How long a message id is remembered for de-duplication. Default 30 s.
    pub dedup_window: Duration,
    /// Ids remembered per publisher (LRU). Default 1024.
    pub dedup_per_publisher: usize,
    /// Ids remembered in total. When this many ids are inside their window,
    /// a new publish is refused (`nack` `busy`) rather than evicting
    /// another publisher's ids early. Must be at least
    /// `dedup_per_publisher`. Default 262,144.
    pub dedup_max_entries: usize,
    /// How long a detached session is kept for resume (`retention_ms` in
    /// `welcome`). Sessions of clients that closed with 1000 or no code are
    /// not kept (see [`Command::ClientClosed`](crate::Command::ClientClosed)).
    /// Default 120 s.
    pub session_retention: Duration,
    /// Detached sessions kept at most; beyond this a dropped connection's
    /// session is discarded at once. Default 100,000.
    pub max_detached_sessions: usize,
    /// Messages kept per session for replay on resume. Default 128.
    pub replay_max_messages: usize,
    /// Bytes kept per session for replay on resume. Default 256 KiB.
    pub replay_max_bytes: usize,
    /// First retransmission delay for sessions with delivery acks.
    /// Default 5 s; each retry doubles it.
    pub ack_timeout: Duration,
    /// Cap of the doubling retransmission delay. Default 60 s.
    pub ack_max_backoff: Duration,
    /// Retransmissions of one message before the connection is closed as
    /// dead (1008). Default 5.
    pub ack_max_retries: u32,
    /// Unacknowledged messages per session; more closes the connection as a
    /// slow consumer (1013). Default 256.
    pub max_unacked: usize,
    /// Limits for adapters' per-connection [`OutboundQueue`](crate::OutboundQueue)s.
    pub outbound: OutboundConfig,
    /// A `presence` answer lists the users of a room only when it has at
    /// most this many; above, it carries the counts alone and
    /// `"truncated":true`. Default 1,000.
    pub presence_max_users: usize,
    /// Send `join` and `leave` presence events to the members of a room
    /// when a user's first session enters it or its last one leaves it.
    /// Default `false`.
    pub presence_events: bool,
    /// How long before its token expires a connection is sent
    /// `token_expiring` (when the adapter reported an expiry with
    /// [`Command::TokenExpiry`](crate::Command::TokenExpiry)). Default 60 s.
    pub token_expiring_before: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            node_id: "node-1".to_owned(),
            cluster: false,
            session_seed: 0,
            ping_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(90),
            idle_timeout: Some(Duration::from_secs(3600)),
            max_connections: 100_000,
            max_message_size: 64 * 1024,
            max_rooms_per_conn: 64,
            max_name_len: 128,
            rate_per_sec: 50,
            rate_burst: 100,
            max_violations: 20,
            violation_window: Duration::from_secs(60),
            dedup_window: Duration::from_secs(30),
            dedup_per_publisher: 1024,
            dedup_max_entries: 262_144,
            session_retention: Duration::from_secs(120),
            max_detached_sessions: 100_000,
            replay_max_messages: 128,
            replay_max_bytes: 256 * 1024,
            ack_timeout: Duration::from_secs(5),
            ack_max_backoff: Duration::from_secs(60),
            ack_max_retries: 5,
            max_unacked: 256,
            outbound: OutboundConfig::default(),
            presence_max_users: 1000,
            presence_events: false,
            token_expiring_before: Duration::from_secs(60),
        }
    }
}

impl HubConfig {
    /// The bounds of each session's replay buffer.
    pub(crate) fn replay_limits(&self) -> crate::session::ReplayLimits {
        crate::session::ReplayLimits {
            max_messages: self.replay_max_messages,
            max_bytes: self.replay_max_bytes,
        }
    }

    /// What adapters pass as [`AuthRequest::namespace`](crate::AuthRequest::namespace):
    /// `<node_id>-<8 hex digits of session_seed>`, unique to this run of
    /// this node (node ids are unique in a cluster, the seed is random per
    /// run), so anonymous names never collide across nodes or restarts.
    pub fn anonymous_namespace(&self) -> String {
        format!("{}-{:08x}", self.node_id, self.session_seed & 0xffff_ffff)
    }

    /// Checks that the configuration can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id.is_empty() || self.node_id.len() > 64 {
            return Err(ConfigError::BadNodeId);
        }
        let durations = [
            ("ping_interval", self.ping_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("violation_window", self.violation_window),
            ("dedup_window", self.dedup_window),
            ("ack_timeout", self.ack_timeout),
        ];
        for (field, d) in durations {
            if d.is_zero() {
                return Err(ConfigError::Zero { field });
            }
        }
        let all = durations.into_iter().chain([
            ("session_retention", self.session_retention),
            ("ack_max_backoff", self.ack_max_backoff),
            ("idle_timeout", self.idle_timeout.unwrap_or_default()),
        ]);
        for (field, d) in all {
            if d > MAX_DURATION {
                return Err(ConfigError::TooLong { field });
            }
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Zero {
                field: "idle_timeout",
            });
        }
        let counts = [
            ("max_connections", self.max_connections),
            ("max_message_size", self.max_message_size),
            ("max_rooms_per_conn", self.max_rooms_per_conn),
            ("max_name_len", self.max_name_len),
            ("rate_per_sec", self.rate_per_sec as usize),
            ("rate_burst", self.rate_burst as usize),
            ("max_violations", self.max_violations),
            ("dedup_per_publisher", self.dedup_per_publisher),
            ("dedup_max_entries", self.dedup_max_entries),
            ("replay_max_messages", self.replay_max_messages),
            ("replay_max_bytes", self.replay_max_bytes),
            ("max_unacked", self.max_unacked),
            ("outbound.max_messages", self.outbound.max_messages),
            ("outbound.max_bytes", self.outbound.max_bytes),
        ];
        for (field, n) in counts {
            if n == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if self.heartbeat_timeout <= self.ping_interval {
            return Err(ConfigError::HeartbeatTimeoutTooShort {
                timeout_ms: self.heartbeat_timeout.as_millis(),
                interval_ms: self.ping_interval.as_millis(),
            });
        }
        if self.ack_max_backoff < self.ack_timeout {
            return Err(ConfigError::BackoffBelowTimeout);
        }
        if self.dedup_per_publisher > self.dedup_max_entries {
            return Err(ConfigError::DedupBounds);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(HubConfig::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_nonsense() {
        let c = HubConfig {
            ping_interval: Duration::ZERO,
            ..HubConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::Zero {
                field: "ping_interval"
            })
        );
        let c = HubConfig {
            heartbeat_timeout: Duration::from_secs(30),
            ..HubConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::HeartbeatTimeoutTooShort { .. })
        ));
        let c = HubConfig {
            node_id: String::new(),
            ..HubConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::BadNodeId));
        let c = HubConfig {
            max_unacked: 0,
            ..HubConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::Zero {
                field: "max_unacked"
            })
        );
        let c = HubConfig {
            dedup_per_publisher: 10,
            dedup_max_entries: 5,
            ..HubConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::DedupBounds));
    }
}
