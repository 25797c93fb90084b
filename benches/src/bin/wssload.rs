//! `wssload`: TLS (`wss://`) load for loopback servers, the same for every
//! server under test: TLS from tokio-rustls (ring), the WebSocket from
//! tokio-tungstenite, one tokio current-thread runtime.
//!
//! Subcommands: `connect` (full TLS + WebSocket handshakes per second, and
//! the server's CPU per handshake), `echo` (messages per second and server
//! CPU per message over TLS) and `hold` (N idle TLS connections and the
//! server's resident memory per connection). Each prints a human-readable
//! line and a one-line JSON result as its last line.
//!
//! Less tuned than `wsload` (a WebSocket library in the hot path), so
//! compare servers with this tool against each other, not with `wsload`
//! figures.
#![allow(clippy::disallowed_methods)] // a load tool reads the clock

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use ws_benches::procfs::{self, CpuSample};
use ws_benches::target::Target;

#[derive(Parser, Debug)]
#[command(about = "TLS (wss://) load for loopback WebSocket servers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Handshakes (TCP, TLS, upgrade, close) per second.
    Connect {
        #[command(flatten)]
        common: Common,
        /// Handshakes in total.
        #[arg(long, default_value_t = 2000)]
        count: u64,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: u64,
    },
    /// Echo: each connection sends `--messages` messages of `--size` bytes,
    /// reads them back, and repeats until `--duration` passes.
    Echo {
        #[command(flatten)]
        common: Common,
        /// Connections.
        #[arg(long, default_value_t = 100)]
        conns: usize,
        /// Messages per round per connection.
        #[arg(long, default_value_t = 1)]
        messages: usize,
        /// Message size, bytes.
        #[arg(long, default_value_t = 20)]
        size: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// Opens `--conns` TLS WebSocket connections and reports the server's
    /// resident memory per idle connection.
    Hold {
        #[command(flatten)]
        common: Common,
        /// Connections to hold.
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
    },
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// `wss://localhost:PORT/PATH` (loopback only).
    #[arg(long)]
    url: String,
    /// CA certificate (PEM) that signed the server's certificate.
    #[arg(long)]
    ca_file: PathBuf,
    /// Server PID: report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
}

type Ws = WebSocketStream<TlsStream<TcpStream>>;

struct Client {
    target: Target,
    connector: TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
    url: String,
}

impl Client {
    fn new(common: &Common) -> anyhow::Result<Self> {
        let target = Target::parse(&common.url)?;
        anyhow::ensure!(target.tls, "wssload needs a wss:// URL");
        let config = ws_benches::tls::client_config(&common.ca_file)?;
        let name = rustls::pki_types::ServerName::try_from(target.host_name().to_owned())
            .context("server name")?;
        Ok(Self {
            url: common.url.clone(),
            connector: TlsConnector::from(config),
            name,
            target,
        })
    }

    async fn open(&self) -> anyhow::Result<Ws> {
        let tcp = TcpStream::connect(self.target.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self.connector.connect(self.name.clone(), tcp).await?;
        let (ws, _) = tokio_tungstenite::client_async(self.url.as_str(), tls).await?;
        Ok(ws)
    }
}

fn main() -> anyhow::Result<()> {
    ws_benches::raise_nofile_limit();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        match cli.cmd {
            Cmd::Connect {
                common,
                count,
                concurrency,
            } => connect(&common, count, concurrency).await,
            Cmd::Echo {
                common,
                conns,
                messages,
                size,
                duration,
            } => echo(&common, conns, messages, size, duration).await,
            Cmd::Hold { common, conns } => hold(&common, conns).await,
        }
    })
}

/// Server CPU microseconds per unit, when the server PID is known.
fn per(cpu: Option<u64>, units: u64) -> Option<f64> {
    cpu.filter(|_| units > 0)
        .map(|c| (c as f64 / units as f64 * 10.0).round() / 10.0)
}

async fn connect(common: &Common, count: u64, concurrency: u64) -> anyhow::Result<()> {
    let client = Arc::new(Client::new(common)?);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cpu = CpuSample::start(common.server_pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let (mut done, mut errors) = (0u64, 0u64);
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                let one = async {
                    let mut ws = client.open().await?;
                    ws.close(None).await?;
                    while ws.next().await.is_some() {}
                    anyhow::Ok(())
                };
                match one.await {
                    Ok(()) => done += 1,
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("handshake error: {e:#}");
                        }
                        errors += 1;
                    }
                }
            }
            (done, errors)
        }));
    }
    let (mut done, mut errors) = (0, 0);
    for t in tasks {
        let (d, e) = t.await?;
        done += d;
        errors += e;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_per = per(cpu.elapsed_us(), done);
    println!(
        "connect (TLS): {done} handshakes in {elapsed:.2} s = {:.0}/s, errors {errors}, server CPU {cpu_per:?} us/handshake",
        done as f64 / elapsed
    );
    println!(
        "{}",
        json!({"cmd": "wss-connect", "handshakes": done, "errors": errors,
            "handshakes_per_s": (done as f64 / elapsed).round(),
            "server_cpu_us_per_handshake": cpu_per})
    );
    Ok(())
}

async fn echo(
    common: &Common,
    conns: usize,
    messages: usize,
    size: usize,
    duration: f64,
) -> anyhow::Result<()> {
    let client = Client::new(common)?;
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        sockets.push(client.open().await?);
    }
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let cpu = CpuSample::start(common.server_pid);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(duration);
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let payload = payload.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut echoed = 0u64;
            while Instant::now() < deadline {
                for _ in 0..messages {
                    ws.feed(Message::Binary(payload.clone())).await?;
                }
                ws.flush().await?;
                let mut got = 0;
                while got < messages {
                    match ws.next().await.context("closed")?? {
                        Message::Binary(b) if b.len() == payload.len() => got += 1,
                        Message::Binary(_) => anyhow::bail!("echo of another size"),
                        _ => {}
                    }
                }
                echoed += messages as u64;
            }
            ws.close(None).await?;
            anyhow::Ok(echoed)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_per = per(cpu.elapsed_us(), total);
    println!(
        "echo (TLS): {conns} conns x {messages} x {size} B: {total} messages in {elapsed:.2} s = {:.0}/s, server CPU {cpu_per:?} us/message",
        total as f64 / elapsed
    );
    println!(
        "{}",
        json!({"cmd": "wss-echo", "conns": conns, "messages": messages, "size": size,
            "echoed": total, "msgs_per_s": (total as f64 / elapsed).round(),
            "server_cpu_us_per_msg": cpu_per})
    );
    Ok(())
}

async fn hold(common: &Common, conns: usize) -> anyhow::Result<()> {
    let client = Client::new(common)?;
    let rss = |pid: Option<u32>| pid.and_then(|p| procfs::rss_bytes(p).ok());
    let before = rss(common.server_pid);
    let mut held = Vec::with_capacity(conns);
    for _ in 0..conns {
        held.push(client.open().await?);
    }
    // Let the server settle (handshake buffers released, tickets sent).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss(common.server_pid);
    let per_conn = before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b) as f64 / conns as f64);
    println!(
        "hold (TLS): {conns} idle connections, server RSS {before:?} -> {after:?} B = {:?} B/conn",
        per_conn.map(f64::round)
    );
    println!(
        "{}",
        json!({"cmd": "wss-hold", "conns": conns, "rss_before": before, "rss_after": after,
            "rss_per_conn": per_conn.map(f64::round)})
    );
    Ok(())
}
