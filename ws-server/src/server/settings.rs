//! Server configuration: command-line flags, environment variables and an
//! optional TOML file, merged in that order of precedence over defaults.
//!
//! Every setting is one field of [`Settings`]: a flag `--name`, an
//! environment variable `WS_NAME`, and a key `name` in the TOML file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ws_hub::{HubConfig, OutboundConfig, SlowConsumerPolicy};

use super::tls::{ClientCertMode, ServerTls, TlsSettings};
use ws_async::WsConfig;

/// A configuration that cannot work, reported at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// The TLS certificate, key or client CA cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] ws_async::tls::TlsError),
}

/// A default in the table below: a value of the setting's type, or a
/// `&str` for a `String` setting.
trait DefaultValue<T> {
    fn value(self) -> T;
}

impl DefaultValue<String> for &str {
    fn value(self) -> String {
        self.to_owned()
    }
}

macro_rules! default_is_itself {
    ($($t:ty),*) => { $(impl DefaultValue<$t> for $t { fn value(self) -> $t { self } })* };
}
default_is_itself!(String, u32, u64, usize, bool);

/// The protocol core's defaults, which the WebSocket settings fall back to.
fn proto() -> ws_proto::Config {
    ws_proto::Config::default()
}

/// The hub core's defaults, which the hub settings fall back to.
fn hub() -> HubConfig {
    HubConfig::default()
}

/// A duration as a number of milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The setting's name for a slow-consumer policy.
fn policy_name(policy: SlowConsumerPolicy) -> &'static str {
    match policy {
        SlowConsumerPolicy::Disconnect => "disconnect",
        SlowConsumerPolicy::DropOldest => "drop-oldest",
    }
}

/// The hub server's default `max_frame_size` (docs/PROTOCOL.md): 1 MiB,
/// far above the hub's 64 KiB message limit (so a message between the two
/// is refused politely) but well below the protocol core's general
/// default, which `echo` keeps.
const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;

/// The default address to listen on (of `serve` and `echo`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9001";

macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $(#[arg($($arg:tt)*)])? $name:ident : $ty:ty = $default:expr, $env:literal; )*) => {
        /// Every server setting. `None` means "not given here"; see
        /// [`Settings::merge`] and [`ServerConfig::from_settings`].
        #[derive(Debug, Default, Clone, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[doc = $doc])+
                #[arg(long, env = $env, help_heading = "Settings",
                      long_help = format!(
                          "{}\n[default: {}]",
                          concat!($($doc, "\n",)+),
                          DefaultValue::<$ty>::value($default),
                      ) $(, $($arg)*)?)]
                pub $name: Option<$ty>,
            )*
        }

        impl Settings {
            /// Fills what `self` leaves unset from `lower` (`self` wins).
            pub fn merge(self, lower: Self) -> Self {
                Self { $( $name: self.$name.or(lower.$name), )* }
            }

            /// The value of every setting, defaults applied.
            fn resolve(&self) -> Resolved {
                Resolved { $( $name: self.$name.clone().unwrap_or_else(|| DefaultValue::value($default)), )* }
            }
        }

        #[derive(Debug)]
        struct Resolved { $( $name: $ty, )* }
    };
}

settings! {
    /// Address to listen on.
    listen: String = DEFAULT_LISTEN, "WS_LISTEN";
    /// This node's id (unique per node in a cluster).
    node_id: String = hub().node_id, "WS_NODE_ID";
    /// Redis URL for multi-node fan-out (e.g. redis://127.0.0.1:6379); none: one node.
    redis: String = "", "WS_REDIS";
    /// Shared secret for HMAC tokens (`?token=` or `Authorization: Bearer`); empty: no token check.
    auth_secret: String = "", "WS_AUTH_SECRET";
    /// Accept connections without a token (as anonymous users) even when a secret is set (`--allow-anonymous` alone means true).
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    allow_anonymous: bool = false, "WS_ALLOW_ANONYMOUS";
    /// Allowed Origin values, comma separated (others get 403; requests without Origin are allowed); empty: any origin.
    allowed_origins: String = "", "WS_ALLOWED_ORIGINS";
    /// Most connections in total.
    max_connections: usize = hub().max_connections, "WS_MAX_CONNECTIONS";
    /// Most simultaneous connections from one IP address (0: no limit).
    max_connections_per_ip: usize = 16_384, "WS_MAX_CONNECTIONS_PER_IP";
    /// Server ping interval, milliseconds.
    ping_interval_ms: u64 = millis(hub().ping_interval), "WS_PING_INTERVAL_MS";
    /// Close a connection silent (no pong, no traffic) this long, milliseconds.
    heartbeat_timeout_ms: u64 = millis(hub().heartbeat_timeout), "WS_HEARTBEAT_TIMEOUT_MS";
    /// Evict a connection that sends no message this long, milliseconds (0: never).
    idle_timeout_ms: u64 = hub().idle_timeout.map_or(0, millis), "WS_IDLE_TIMEOUT_MS";
    /// Largest hub message from a client, bytes.
    max_message_size: usize = hub().max_message_size, "WS_MAX_MESSAGE_SIZE";
    /// Most rooms one connection may join.
    max_rooms_per_conn: usize = hub().max_rooms_per_conn, "WS_MAX_ROOMS_PER_CONN";
    /// Token-bucket rate: messages per second per connection.
    rate_per_sec: u32 = hub().rate_per_sec, "WS_RATE_PER_SEC";
    /// Token-bucket burst per connection.
    rate_burst: u32 = hub().rate_burst, "WS_RATE_BURST";
    /// De-duplication window, milliseconds.
    dedup_window_ms: u64 = millis(hub().dedup_window), "WS_DEDUP_WINDOW_MS";
    /// De-duplication ids remembered per publisher (LRU bound).
    dedup_per_publisher: usize = hub().dedup_per_publisher, "WS_DEDUP_PER_PUBLISHER";
    /// How long a disconnected session can be resumed, milliseconds (a client closing with 1000 ends it at once).
    session_retention_ms: u64 = millis(hub().session_retention), "WS_SESSION_RETENTION_MS";
    /// Messages kept per session for resume.
    replay_max_messages: usize = hub().replay_max_messages, "WS_REPLAY_MAX_MESSAGES";
    /// Bytes kept per session for resume.
    replay_max_bytes: usize = hub().replay_max_bytes, "WS_REPLAY_MAX_BYTES";
    /// First retransmission timeout for delivery acks, milliseconds.
    ack_timeout_ms: u64 = millis(hub().ack_timeout), "WS_ACK_TIMEOUT_MS";
    /// Retransmissions before a connection is treated as dead.
    ack_max_retries: u32 = hub().ack_max_retries, "WS_ACK_MAX_RETRIES";
    /// Messages queued per connection before the slow-consumer policy applies.
    outbound_max_messages: usize = hub().outbound.max_messages, "WS_OUTBOUND_MAX_MESSAGES";
    /// Bytes queued per connection before the slow-consumer policy applies.
    outbound_max_bytes: usize = hub().outbound.max_bytes, "WS_OUTBOUND_MAX_BYTES";
    /// Slow-consumer policy: `disconnect` (close 1013) or `drop-oldest`.
    slow_consumer: String = policy_name(hub().outbound.policy), "WS_SLOW_CONSUMER";
    /// permessage-deflate: `shared` (no context takeover; an idle connection holds no compression context; a publish is compressed once for all members), `dedicated` (context takeover, windows of deflate_window_bits) or `off`.
    deflate: String = "shared", "WS_DEFLATE";
    /// Window bits (9 to 15) of the `dedicated` deflate mode.
    deflate_window_bits: u32 = 15, "WS_DEFLATE_WINDOW_BITS";
    /// Longest room, user or message id name, bytes.
    max_name_len: usize = hub().max_name_len, "WS_MAX_NAME_LEN";
    /// Malformed messages tolerated per violation window before closing with 1008.
    max_violations: usize = hub().max_violations, "WS_MAX_VIOLATIONS";
    /// Window over which malformed messages are counted, milliseconds.
    violation_window_ms: u64 = millis(hub().violation_window), "WS_VIOLATION_WINDOW_MS";
    /// De-duplication ids remembered in total (bounds memory; when full, new ids are nacked `busy`).
    dedup_max_entries: usize = hub().dedup_max_entries, "WS_DEDUP_MAX_ENTRIES";
    /// Disconnected sessions kept for resume at most.
    max_detached_sessions: usize = hub().max_detached_sessions, "WS_MAX_DETACHED_SESSIONS";
    /// Longest retransmission backoff for delivery acks, milliseconds.
    ack_max_backoff_ms: u64 = millis(hub().ack_max_backoff), "WS_ACK_MAX_BACKOFF_MS";
    /// Unacknowledged deliveries per session before closing it as a slow consumer (1013).
    max_unacked: usize = hub().max_unacked, "WS_MAX_UNACKED";
    /// Most HTTP headers in a handshake request.
    max_headers: usize = proto().max_headers, "WS_MAX_HEADERS";
    /// Largest WebSocket frame (and fragmented message, if above max_message_size), bytes; larger closes the connection with 1009.
    max_frame_size: usize = DEFAULT_MAX_FRAME_SIZE, "WS_MAX_FRAME_SIZE";
    /// Largest HTTP handshake head, bytes.
    max_handshake_size: usize = proto().max_handshake_size, "WS_MAX_HANDSHAKE_SIZE";
    /// Opening handshake deadline, milliseconds.
    handshake_timeout_ms: u64 = proto().handshake_timeout.map_or(0, millis), "WS_HANDSHAKE_TIMEOUT_MS";
    /// Close handshake deadline, milliseconds.
    close_timeout_ms: u64 = millis(proto().close_timeout), "WS_CLOSE_TIMEOUT_MS";
    /// Bytes queued in a socket's write buffer before delivery pauses.
    socket_max_outbound: usize = 262_144, "WS_SOCKET_MAX_OUTBOUND";
    /// Upper bound on a graceful shutdown, milliseconds.
    shutdown_grace_ms: u64 = millis(crate::shutdown::DEFAULT_GRACE), "WS_SHUTDOWN_GRACE_MS";
    /// Send `join` / `leave` presence events to room members (`--presence-events` alone means true).
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    presence_events: bool = hub().presence_events, "WS_PRESENCE_EVENTS";
    /// A `presence` answer lists users only up to this many per room; above, counts only.
    presence_max_users: usize = hub().presence_max_users, "WS_PRESENCE_MAX_USERS";
    /// Send `token_expiring` this long before a connection's token expires, milliseconds.
    token_expiring_before_ms: u64 = millis(hub().token_expiring_before), "WS_TOKEN_EXPIRING_BEFORE_MS";
    /// With Redis: TTL of this node's part of the presence table, milliseconds (refreshed every third of it).
    presence_ttl_ms: u64 = 15_000, "WS_PRESENCE_TTL_MS";
    /// Certificate chain (PEM) to serve TLS (wss://, and /healthz, /metrics over https) on the port; empty: plain TCP. Reloaded on SIGHUP.
    tls_cert: String = "", "WS_TLS_CERT";
    /// Private key (PEM) of tls_cert. Reloaded on SIGHUP.
    tls_key: String = "", "WS_TLS_KEY";
    /// CA certificates (PEM) that verify client certificates; empty: none asked for.
    tls_client_ca: String = "", "WS_TLS_CLIENT_CA";
    /// With tls_client_ca: `required` (handshake fails without one) or `optional`.
    tls_client_cert: String = "required", "WS_TLS_CLIENT_CERT";
}

impl Settings {
    /// Reads a TOML file of settings (keys as the field names).
    pub fn from_file(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SettingsError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// Everything the hub server needs, validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// WebSocket limits.
    pub ws: WsConfig,
    /// Hub behaviour and limits.
    pub hub: HubConfig,
    /// Allowed `Origin` values (empty: any).
    pub allowed_origins: Vec<String>,
    /// Per-IP connection limit (0: none).
    pub max_connections_per_ip: usize,
    /// With Redis: TTL of this node's part of the presence table.
    pub presence_ttl: Duration,
    /// Keys of the server API (`--api-key`); empty: the API is off.
    pub api_keys: super::api::ApiKeys,
    /// HMAC token secret, if tokens are checked.
    pub auth_secret: Option<String>,
    /// Accept connections without a token when a secret is set.
    pub allow_anonymous: bool,
    /// Redis URL for multi-node fan-out.
    pub redis: Option<String>,
    /// Bytes queued in a socket's write buffer before delivery pauses.
    pub socket_max_outbound: usize,
    /// Upper bound on a graceful shutdown.
    pub shutdown_grace: Duration,
    /// TLS on the port (certificate loaded; reload with
    /// [`ServerTls::reload`]), or plain TCP.
    pub tls: Option<Arc<ServerTls>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::from_settings(&Settings::default())
            .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }
}

impl ServerConfig {
    /// Applies defaults to `settings` and validates the result.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        let s = settings.resolve();
        let ms = Duration::from_millis;
        let policy = match s.slow_consumer.as_str() {
            "disconnect" => SlowConsumerPolicy::Disconnect,
            "drop-oldest" | "drop_oldest" => SlowConsumerPolicy::DropOldest,
            other => {
                return Err(SettingsError::Invalid(format!(
                    "slow_consumer must be `disconnect` or `drop-oldest`, not {other:?}"
                )));
            }
        };
        let mut ws = WsConfig::default();
        ws.proto.max_frame_size = s.max_frame_size;
        // A hub message is one frame or several; the hub limit applies after.
        ws.proto.max_message_size = s.max_frame_size.max(s.max_message_size);
        ws.proto.max_handshake_size = s.max_handshake_size;
        ws.proto.max_headers = s.max_headers;
        ws.proto.handshake_timeout = Some(ms(s.handshake_timeout_ms));
        ws.proto.close_timeout = ms(s.close_timeout_ms);
        let window_bits = u8::try_from(s.deflate_window_bits).unwrap_or(u8::MAX);
        ws.set_deflate(&s.deflate, window_bits)
            .map_err(|e| SettingsError::Invalid(e.to_string()))?;
        ws.proto
            .validate()
            .map_err(|e| SettingsError::Invalid(e.to_string()))?;
        ws.max_outbound = s.socket_max_outbound.max(1);
        let hub = HubConfig {
            node_id: s.node_id.clone(),
            cluster: !s.redis.is_empty(),
            ping_interval: ms(s.ping_interval_ms),
            heartbeat_timeout: ms(s.heartbeat_timeout_ms),
            idle_timeout: (s.idle_timeout_ms > 0).then(|| ms(s.idle_timeout_ms)),
            max_connections: s.max_connections,
            max_message_size: s.max_message_size,
            max_rooms_per_conn: s.max_rooms_per_conn,
            rate_per_sec: s.rate_per_sec,
            rate_burst: s.rate_burst,
            dedup_window: ms(s.dedup_window_ms),
            dedup_per_publisher: s.dedup_per_publisher,
            session_retention: ms(s.session_retention_ms),
            replay_max_messages: s.replay_max_messages,
            replay_max_bytes: s.replay_max_bytes,
            ack_timeout: ms(s.ack_timeout_ms),
            ack_max_retries: s.ack_max_retries,
            ack_max_backoff: ms(s.ack_max_backoff_ms),
            max_unacked: s.max_unacked,
            presence_events: s.presence_events,
            presence_max_users: s.presence_max_users,
            token_expiring_before: ms(s.token_expiring_before_ms),
            max_name_len: s.max_name_len,
            max_violations: s.max_violations,
            violation_window: ms(s.violation_window_ms),
            dedup_max_entries: s.dedup_max_entries,
            max_detached_sessions: s.max_detached_sessions,
            outbound: OutboundConfig {
                max_messages: s.outbound_max_messages,
                max_bytes: s.outbound_max_bytes,
                policy,
            },
            ..HubConfig::default()
        };
        hub.validate()
            .map_err(|e| SettingsError::Invalid(e.to_string()))?;
        if !s.redis.is_empty()
            && let Err(e) = crate::bus::validate_url(&s.redis)
        {
            // The URL itself is not repeated: it may hold a password.
            return Err(SettingsError::Invalid(format!(
                "redis: {e} (expected redis://[[user]:password@]host[:port][/db])"
            )));
        }
        let allowed_origins = s
            .allowed_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        if s.presence_ttl_ms < 300 {
            return Err(SettingsError::Invalid(
                "presence_ttl_ms must be at least 300".to_owned(),
            ));
        }
        let tls = tls_settings(&s)?.map(|t| ServerTls::load(&t)).transpose()?;
        let listen = s.listen.parse().map_err(|_| {
            SettingsError::Invalid(format!("listen must be IP:PORT, not {:?}", s.listen))
        })?;
        Ok(Self {
            listen,
            ws,
            hub,
            allowed_origins,
            max_connections_per_ip: s.max_connections_per_ip,
            api_keys: super::api::ApiKeys::default(),
            presence_ttl: ms(s.presence_ttl_ms),
            auth_secret: (!s.auth_secret.is_empty()).then(|| s.auth_secret.clone()),
            allow_anonymous: s.allow_anonymous || s.auth_secret.is_empty(),
            redis: (!s.redis.is_empty()).then(|| s.redis.clone()),
            socket_max_outbound: s.socket_max_outbound,
            shutdown_grace: ms(s.shutdown_grace_ms),
            tls,
        })
    }
}

/// The TLS part of the settings.
fn tls_settings(s: &Resolved) -> Result<Option<TlsSettings>, SettingsError> {
    let mode = match s.tls_client_cert.as_str() {
        "required" => ClientCertMode::Required,
        "optional" => ClientCertMode::Optional,
        other => {
            return Err(SettingsError::Invalid(format!(
                "tls_client_cert must be `required` or `optional`, not {other:?}"
            )));
        }
    };
    let path = |p: &str| Some(PathBuf::from(p));
    TlsSettings::from_parts(
        path(&s.tls_cert),
        path(&s.tls_key),
        path(&s.tls_client_ca),
        mode,
    )
    .map_err(SettingsError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_layers_merge() {
        let config = ServerConfig::default();
        assert_eq!(config.hub.ping_interval, Duration::from_secs(30));
        assert!(config.allow_anonymous);
        let file: Settings = toml::from_str("ping_interval_ms = 1000\nnode_id = \"file\"").unwrap();
        let flags = Settings {
            node_id: Some("flag".into()),
            ..Settings::default()
        };
        let merged = flags.merge(file);
        let config = ServerConfig::from_settings(&merged).unwrap();
        assert_eq!(config.hub.node_id, "flag");
        assert_eq!(config.hub.ping_interval, Duration::from_secs(1));
    }

    #[test]
    fn defaults_are_the_cores_defaults() {
        let config = ServerConfig::default();
        assert_eq!(config.hub, HubConfig::default());
        let proto = ws_proto::Config::default();
        // The one exception: the hub's frame limit (docs/PROTOCOL.md).
        assert_eq!(config.ws.proto.max_frame_size, 1 << 20);
        assert_eq!(config.ws.proto.max_handshake_size, proto.max_handshake_size);
        assert_eq!(config.ws.proto.max_headers, proto.max_headers);
        assert_eq!(config.ws.proto.handshake_timeout, proto.handshake_timeout);
        assert_eq!(config.ws.proto.close_timeout, proto.close_timeout);
        assert_eq!(config.shutdown_grace, crate::shutdown::DEFAULT_GRACE);
    }

    #[test]
    fn boolean_flags_may_stand_alone() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
                .map(|c| (c.settings.allow_anonymous, c.settings.presence_events))
                .ok()
        };
        assert_eq!(
            parse(&["--allow-anonymous", "--presence-events"]),
            Some((Some(true), Some(true)))
        );
        assert_eq!(
            parse(&["--allow-anonymous", "false", "--presence-events", "true"]),
            Some((Some(false), Some(true)))
        );
        assert_eq!(parse(&[]), Some((None, None)));
        assert_eq!(parse(&["--allow-anonymous", "maybe"]), None);
    }

    #[test]
    fn bad_settings_are_refused_clearly() {
        assert!(toml::from_str::<Settings>("no_such_key = 1").is_err());
        let bad = Settings {
            slow_consumer: Some("sometimes".into()),
            ..Settings::default()
        };
        assert!(
            ServerConfig::from_settings(&bad)
                .unwrap_err()
                .to_string()
                .contains("slow_consumer")
        );
        let bad = Settings {
            ping_interval_ms: Some(0),
            ..Settings::default()
        };
        assert!(ServerConfig::from_settings(&bad).is_err());
        let bad = Settings {
            redis: Some("http://x".into()),
            ..Settings::default()
        };
        assert!(ServerConfig::from_settings(&bad).is_err());
    }
}
