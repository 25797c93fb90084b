//! The command line both server binaries share (`ws-tokio`, `ws-smol`):
//! the same subcommands, flags and behaviour on either runtime.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use futures_lite::future;
use ws_proto::{CloseCode, Message};

use crate::autobahn::run_autobahn_client;
use crate::echo::serve_echo;
use crate::server::DEFAULT_LISTEN;
use crate::server::tls::{ServerTls, TlsArgs, TlsSettings, reload_on_sighup};
use crate::shutdown::{DEFAULT_GRACE, Shutdown, on_signals};
use ws_async::tls::{self, connect_url, rustls::ClientConfig};
use ws_async::{Runtime, WsConfig, WsError, WsUrl};

/// A WebSocket server and client on a sans-IO core.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    /// Worker threads (default: one per core).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub server: rooms, direct messages, broadcast, acks,
    /// de-duplication, resume and heartbeats over WebSocket (protocol in
    /// docs/PROTOCOL.md), with `GET /healthz` and `GET /metrics` on the same
    /// port. Settings come from flags, then `WS_*` environment variables,
    /// then the TOML file, then defaults. Serves until SIGINT/SIGTERM, then
    /// closes every client with 1001.
    Serve {
        /// TOML file with settings (keys are the flag names with `_`).
        #[arg(long, env = "WS_CONFIG")]
        config: Option<PathBuf>,
        /// Every setting (boxed: it is much larger than the other variants).
        #[command(flatten)]
        settings: Box<crate::server::Settings>,
        /// A key of the server API for backends (docs/API.md), sent as
        /// `Authorization: Bearer <key>`; may be given several times.
        /// Without one the API is off. Flag or environment only (not in
        /// the TOML file).
        #[arg(long = "api-key", env = "WS_API_KEY", hide_env_values = true)]
        api_keys: Vec<String>,
    },
    /// Echo every text and binary message back (the Autobahn server).
    /// Serves until SIGINT/SIGTERM, then closes clients with 1001.
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Protocol limits.
        #[command(flatten)]
        limits: LimitArgs,
        /// TLS (wss://); the certificate is reloaded on SIGHUP.
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Run the Autobahn|Testsuite client procedure against a
    /// `wstest -m fuzzingserver` at URL.
    AutobahnClient {
        /// Base URL of the fuzzing server.
        #[arg(long)]
        url: String,
        /// Agent name in the report.
        #[arg(long)]
        agent: String,
        /// With a wss:// URL: CA certificates (PEM) to trust instead of the
        /// platform's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Protocol limits.
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Interactive client (like wscat): each stdin line is sent as a text
    /// message; each message received is printed on its own line (binary
    /// messages as `base64:` followed by the base64 of the payload). At the
    /// end of stdin it closes with 1000 and exits 0 after the close
    /// handshake; failures exit non-zero with a message on stderr.
    Client {
        /// Server URL, `ws://host:port/path?query` or `wss://...` (TLS: the
        /// server's certificate is verified for the host, against
        /// --ca-file or else the platform's trust store).
        #[arg(long)]
        url: String,
        /// With a wss:// URL: CA certificates (PEM) to trust instead of the
        /// platform's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Protocol limits.
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Hub client (docs/PROTOCOL.md): joins ROOM, publishes each stdin
    /// line as `data` (a JSON string), prints every delivered `message`
    /// object as one JSON line on stdout and every gap as one JSON line on
    /// stderr; reconnects and resumes on its own (full-jitter backoff),
    /// retrying unanswered publishes with the same id. At the end of stdin
    /// it waits for every publish to be acked, closes with 1000 and exits
    /// 0; exits 1 if a publish or the join was refused, or on a terminal
    /// close (1008, HTTP 401).
    HubClient {
        /// Hub URL, `ws://host:port/ws` or `wss://...`.
        #[arg(long)]
        url: String,
        /// The room to join and publish to.
        #[arg(long)]
        room: String,
        /// Token for the server's authenticator (sent as `?token=`).
        #[arg(long)]
        token: Option<String>,
        /// For `wss://`: trust this CA certificate (PEM) instead of the
        /// platform's trust store.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Protocol limits.
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Write a self-signed certificate and its key (PEM) for trying TLS:
    /// `serve --tls-cert cert.pem --tls-key key.pem`, and clients trust
    /// `cert.pem` (`client --ca-file cert.pem`).
    GenCert {
        /// Where to write the certificate.
        #[arg(long, default_value = "cert.pem")]
        cert: PathBuf,
        /// Where to write the private key (mode 0600).
        #[arg(long, default_value = "key.pem")]
        key: PathBuf,
        /// Host names and addresses the certificate is for.
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"])]
        names: Vec<String>,
    },
    /// Print a token for `--user` that `serve --auth-secret S` accepts
    /// (the HMAC-SHA256 format of docs/PROTOCOL.md), valid for `--ttl`
    /// seconds from now, followed by a newline. Handy for trying
    /// authentication without writing code; applications mint their own.
    Token {
        /// The shared secret, the same as `serve --auth-secret`.
        #[arg(long, env = "WS_AUTH_SECRET", hide_env_values = true)]
        secret: String,
        /// The user id the token is for (any non-empty string).
        #[arg(long)]
        user: String,
        /// Seconds until the token expires (at least 1).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        ttl: u64,
    },
}

/// Limits shared by every subcommand; each defaults to the protocol
/// core's default (`ws_proto::Config`, and `ws_async::WsConfig` for the
/// outbound bound), the same defaults `serve` falls back to.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest accepted frame payload, in bytes.
    #[arg(long, default_value_t = ws_proto::Config::default().max_frame_size)]
    pub max_frame_size: usize,
    /// Largest accepted message, in bytes.
    #[arg(long, default_value_t = ws_proto::Config::default().max_message_size)]
    pub max_message_size: usize,
    /// Largest HTTP handshake head, in bytes.
    #[arg(long, default_value_t = ws_proto::Config::default().max_handshake_size)]
    pub max_handshake_size: usize,
    /// Sending waits while more than this many bytes are queued.
    #[arg(long, default_value_t = WsConfig::default().max_outbound)]
    pub max_outbound: usize,
    /// Opening handshake deadline, in milliseconds.
    #[arg(long, default_value_t = ws_proto::Config::default().handshake_timeout.map_or(0, millis))]
    pub handshake_timeout_ms: u64,
    /// How long to wait for the peer's close frame, in milliseconds.
    #[arg(long, default_value_t = millis(ws_proto::Config::default().close_timeout))]
    pub close_timeout_ms: u64,
    /// How long shutdown waits for clients to finish closing, in
    /// milliseconds.
    #[arg(long, default_value_t = millis(DEFAULT_GRACE))]
    pub shutdown_grace_ms: u64,
    /// permessage-deflate: `shared` (no context takeover, nothing held by
    /// an idle connection), `dedicated` (context takeover, windows of
    /// `--deflate-window-bits`) or `off`. Servers accept offers, clients
    /// make them.
    #[arg(long, default_value = "shared")]
    pub deflate: String,
    /// Window bits (9 to 15) of the `dedicated` deflate mode.
    #[arg(long, default_value_t = 15)]
    pub deflate_window_bits: u8,
}

/// A duration as a number of milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl LimitArgs {
    /// The async-layer configuration these flags describe.
    pub fn config(&self) -> Result<WsConfig, WsError> {
        let mut config = WsConfig::default();
        config.proto.max_frame_size = self.max_frame_size;
        config.proto.max_message_size = self.max_message_size;
        config.proto.max_handshake_size = self.max_handshake_size;
        config.proto.handshake_timeout = Some(Duration::from_millis(self.handshake_timeout_ms));
        config.proto.close_timeout = Duration::from_millis(self.close_timeout_ms);
        config.set_deflate(&self.deflate, self.deflate_window_bits)?;
        config.proto.validate()?;
        config.max_outbound = self.max_outbound;
        Ok(config)
    }
}

/// Why a command failed (printed as `error: ...`, exit code 1).
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Ws(#[from] WsError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid configuration: {0}")]
    Settings(#[from] crate::server::SettingsError),
    #[error(transparent)]
    Autobahn(#[from] crate::autobahn::AutobahnError),
    #[error(transparent)]
    HubClient(#[from] ws_hub_client::ClientError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot make a certificate: {0}")]
    CertGen(#[from] ws_async::certgen::Error),
    #[error("{0}")]
    Usage(&'static str),
}

/// Sets up `tracing` logging to stderr.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A failed log write must never panic the thread that logged (the
        // default reports it with `eprintln!`, which panics when stderr is
        // gone, e.g. the reader of a log pipe exited).
        .log_internal_errors(false)
        .try_init();
}

/// Runs a parsed command line on runtime `rt`; returns the exit code.
pub async fn run<R: Runtime>(rt: R, cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Serve {
            config,
            settings,
            api_keys,
        } => serve(rt, config.as_deref(), *settings, api_keys).await,
        Command::Echo {
            listen,
            limits,
            tls,
        } => echo(rt, listen, &limits, &tls).await,
        Command::AutobahnClient {
            url,
            agent,
            ca_file,
            limits,
        } => match (limits.config(), client_tls(&url, ca_file.as_deref())) {
            (Ok(config), Ok(tls)) => run_autobahn_client(rt, &url, &agent, tls, config)
                .await
                .map(|count| {
                    tracing::info!(count, "Autobahn cases done");
                    0
                })
                .map_err(CliError::from),
            (Err(e), _) => Err(e.into()),
            (_, Err(e)) => Err(e),
        },
        Command::Client {
            url,
            ca_file,
            limits,
        } => match (limits.config(), client_tls(&url, ca_file.as_deref())) {
            (Ok(config), Ok(tls)) => client(rt, &url, tls, config).await.map_err(CliError::from),
            (Err(e), _) => Err(e.into()),
            (_, Err(e)) => Err(e),
        },
        Command::HubClient {
            url,
            room,
            token,
            ca_file,
            limits,
        } => match (limits.config(), client_tls(&url, ca_file.as_deref())) {
            (Ok(config), Ok(tls)) => {
                crate::hub_client::run_hub_client(rt, &url, &room, token, tls, config)
                    .await
                    .map_err(CliError::from)
            }
            (Err(e), _) => Err(e.into()),
            (_, Err(e)) => Err(e),
        },
        Command::GenCert { cert, key, names } => gen_cert(&cert, &key, &names),
        Command::Token { secret, user, ttl } => token(&secret, &user, ttl),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// TLS client settings for `url` when it is `wss://`: trusting `ca_file`,
/// else the platform's roots.
fn client_tls(url: &str, ca_file: Option<&Path>) -> Result<Option<Arc<ClientConfig>>, CliError> {
    let secure = WsUrl::parse(url).map_err(WsError::from)?.secure;
    if !secure {
        return Ok(None);
    }
    let roots = match ca_file {
        Some(path) => tls::load_roots(path)?,
        None => tls::platform_roots()?,
    };
    Ok(Some(tls::client_config(roots, None)?))
}

/// Loads the server certificate and reloads it on SIGHUP.
fn server_tls(settings: Option<TlsSettings>) -> Result<Option<Arc<ServerTls>>, CliError> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let tls = ServerTls::load(&settings)?;
    reload_on_sighup(tls.clone())?;
    Ok(Some(tls))
}

async fn echo<R: Runtime>(
    rt: R,
    listen: SocketAddr,
    limits: &LimitArgs,
    tls: &TlsArgs,
) -> Result<i32, CliError> {
    let config = limits.config()?;
    let tls = tls
        .settings()
        .map_err(crate::server::SettingsError::Invalid)?;
    let tls = server_tls(tls)?;
    let listener = rt.bind(listen).await?;
    let shutdown = Shutdown::new();
    on_signals(shutdown.clone())?;
    tracing::info!(addr = %R::local_addr(&listener)?, tls = tls.is_some(), "echo server listening");
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    serve_echo(rt, listener, config, tls, shutdown, grace).await?;
    Ok(0)
}

/// `gen-cert`: a self-signed certificate and its key.
fn gen_cert(cert: &Path, key: &Path, names: &[String]) -> Result<i32, CliError> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let made = ws_async::certgen::self_signed(&names)?;
    std::fs::write(cert, &made.cert_pem)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(key)?.write_all(made.key_pem.as_bytes())?;
    println!(
        "wrote {} and {} for {}",
        cert.display(),
        key.display(),
        names.join(", ")
    );
    Ok(0)
}

/// `token`: prints a token for `user` valid for `ttl` seconds.
fn token(secret: &str, user: &str, ttl: u64) -> Result<i32, CliError> {
    if secret.is_empty() {
        return Err(CliError::Usage("--secret must not be empty"));
    }
    if user.is_empty() {
        return Err(CliError::Usage("--user must not be empty"));
    }
    // The expiry is wall-clock time; the binary owns the clock.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let auth = ws_hub::HmacTokenAuth::new(secret.as_bytes().to_vec());
    println!("{}", auth.issue(user, now.saturating_add(ttl)));
    Ok(0)
}

async fn serve<R: Runtime>(
    rt: R,
    file: Option<&Path>,
    flags: crate::server::Settings,
    api_keys: Vec<String>,
) -> Result<i32, CliError> {
    let settings = match file {
        Some(path) => match crate::server::Settings::from_file(path) {
            Ok(from_file) => flags.merge(from_file),
            Err(e) => return Err(e.into()),
        },
        None => flags,
    };
    let mut config = crate::server::ServerConfig::from_settings(&settings)?;
    config.api_keys = crate::server::api::ApiKeys::new(api_keys);
    let listener = rt.bind(config.listen).await?;
    let shutdown = Shutdown::new();
    on_signals(shutdown.clone())?;
    if let Some(tls) = &config.tls {
        reload_on_sighup(tls.clone())?;
    }
    tracing::info!(addr = %R::local_addr(&listener)?, node = %config.hub.node_id, redis = ?config.redis, tls = config.tls.is_some(), "hub server listening");
    crate::server::serve(rt, listener, config, shutdown).await?;
    Ok(0)
}

/// The interactive client; see [`Command::Client`].
async fn client<R: Runtime>(
    rt: R,
    url: &str,
    tls: Option<Arc<ClientConfig>>,
    config: WsConfig,
) -> Result<i32, WsError> {
    let (ws, _) = connect_url(rt, url, tls, config).await?;
    let (mut reader, mut writer) = ws.split();
    let lines_rx = crate::task::stdin_lines()?;
    let read_side = async {
        let mut stdout = std::io::stdout();
        while let Some(message) = reader.recv().await? {
            match message {
                Message::Text(text) => writeln!(stdout, "{text}")?,
                Message::Binary(data) => {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
                    writeln!(stdout, "base64:{encoded}")?;
                }
            }
            stdout.flush()?;
        }
        Ok::<_, WsError>(reader.close_info())
    };
    let write_side = async {
        while let Ok(line) = lines_rx.recv().await {
            writer.send(Message::text(line)).await?;
        }
        writer.close(CloseCode::NORMAL, "").await?;
        // The read side finishes once the close handshake is done.
        future::pending::<Result<Option<ws_async::CloseInfo>, WsError>>().await
    };
    let info = future::or(read_side, write_side).await?;
    match info {
        Some(info)
            if info.clean && matches!(info.code, CloseCode::NORMAL | CloseCode::GOING_AWAY) =>
        {
            Ok(0)
        }
        Some(info) => {
            eprintln!("connection closed: code {} {}", info.code, info.reason);
            Ok(1)
        }
        None => {
            eprintln!("connection closed without a close handshake");
            Ok(1)
        }
    }
}
