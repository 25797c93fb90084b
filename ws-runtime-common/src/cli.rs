//! The command line both server binaries share (`ws-tokio`, `ws-smol`):
//! the same subcommands, flags and behaviour on either runtime.

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use futures_lite::future;
use ws_proto::{CloseCode, Message};

use crate::autobahn::run_autobahn_client;
use crate::echo::serve_echo;
use crate::error::WsError;
use crate::handshake::connect;
use crate::runtime::Runtime;
use crate::shutdown::{Shutdown, on_signals};
use crate::stream::WsConfig;

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
        config: Option<std::path::PathBuf>,
        /// Every setting (boxed: it is much larger than the other variants).
        #[command(flatten)]
        settings: Box<crate::server::Settings>,
    },
    /// Echo every text and binary message back (the Autobahn server).
    /// Serves until SIGINT/SIGTERM, then closes clients with 1001.
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Protocol limits.
        #[command(flatten)]
        limits: LimitArgs,
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
        /// Server URL, `ws://host:port/path?query`.
        #[arg(long)]
        url: String,
        /// Protocol limits.
        #[command(flatten)]
        limits: LimitArgs,
    },
}

/// Limits shared by every subcommand; each has a default.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest accepted frame payload, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_frame_size: usize,
    /// Largest accepted message, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_message_size: usize,
    /// Largest HTTP handshake head, in bytes.
    #[arg(long, default_value_t = 8 << 10)]
    pub max_handshake_size: usize,
    /// Sending waits while more than this many bytes are queued.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_outbound: usize,
    /// Opening handshake deadline, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// How long to wait for the peer's close frame, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub close_timeout_ms: u64,
    /// How long shutdown waits for clients to finish closing, in
    /// milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
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
        config.proto.validate()?;
        config.max_outbound = self.max_outbound;
        Ok(config)
    }
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
        Command::Serve { config, settings } => serve(rt, config.as_deref(), *settings).await,
        Command::Echo { listen, limits } => echo(rt, listen, &limits).await,
        Command::AutobahnClient { url, agent, limits } => match limits.config() {
            Ok(config) => run_autobahn_client(rt, &url, &agent, config)
                .await
                .map(|count| {
                    tracing::info!(count, "Autobahn cases done");
                    0
                }),
            Err(e) => Err(e),
        },
        Command::Client { url, limits } => match limits.config() {
            Ok(config) => client(rt, &url, config).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn echo<R: Runtime>(rt: R, listen: SocketAddr, limits: &LimitArgs) -> Result<i32, WsError> {
    let config = limits.config()?;
    let listener = rt.bind(listen).await?;
    let shutdown = Shutdown::new();
    on_signals(shutdown.clone())?;
    tracing::info!(addr = %R::local_addr(&listener)?, "echo server listening");
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    serve_echo(rt, listener, config, shutdown, grace).await?;
    Ok(0)
}

async fn serve<R: Runtime>(
    rt: R,
    file: Option<&std::path::Path>,
    flags: crate::server::Settings,
) -> Result<i32, WsError> {
    let settings = match file {
        Some(path) => match crate::server::Settings::from_file(path) {
            Ok(from_file) => flags.merge(from_file),
            Err(e) => return Err(WsError::Config(e.to_string())),
        },
        None => flags,
    };
    let config = crate::server::ServerConfig::from_settings(&settings)
        .map_err(|e| WsError::Config(e.to_string()))?;
    let listener = rt.bind(config.listen).await?;
    let shutdown = Shutdown::new();
    on_signals(shutdown.clone())?;
    tracing::info!(addr = %R::local_addr(&listener)?, node = %config.hub.node_id, redis = ?config.redis, "hub server listening");
    crate::server::serve(rt, listener, config, shutdown).await?;
    Ok(0)
}

/// The interactive client; see [`Command::Client`].
async fn client<R: Runtime>(rt: R, url: &str, config: WsConfig) -> Result<i32, WsError> {
    let (ws, _) = connect(rt, url, config).await?;
    let (mut reader, mut writer) = ws.split();
    let (lines_tx, lines_rx) = async_channel::bounded::<String>(64);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines_tx.send_blocking(line).is_err() {
                    break;
                }
            }
        })?;
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
        future::pending::<Result<Option<crate::CloseInfo>, WsError>>().await
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
