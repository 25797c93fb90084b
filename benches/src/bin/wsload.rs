//! `wsload`: an end-to-end WebSocket load tool for loopback servers.
//!
//! Subcommands: `echo` (pipelined echo throughput and latency), `connect`
//! (handshakes per second, or `--hold N` idle connections and the server's
//! resident memory per connection) and `fanout` (one publisher, N
//! subscribers, deliveries per second and latency).
//!
//! It is built not to be the bottleneck: one tokio current-thread runtime
//! per `--threads`, raw `TcpStream`s with a hand-written client handshake,
//! frames pre-encoded (and pre-masked with a fixed key) once and written
//! with vectored writes, and a streaming frame parser that counts messages
//! without copying payloads. Every subcommand prints a human-readable line
//! followed by a one-line JSON result as the last line of its output.
#![allow(clippy::disallowed_methods)] // a load tool reads the clock

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{ErrorKind, IoSlice};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};
use ws_benches::deflate::{self, Inflater, Offer};
use ws_benches::procfs::{self, CpuSample};
use ws_benches::target::Target;
use ws_benches::wire::{
    self, Event, FrameParser, MASK_KEY, OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT, RSV1,
};

/// Typical hub JSON of a given size (`--json`), shared with ws-proto's
/// deflate benchmarks so the figures compare.
#[path = "../../../ws-proto/benches/support/json.rs"]
mod json;

#[derive(Parser, Debug)]
#[command(about = "WebSocket load tool (loopback only)")]
struct Cli {
    /// Load-generator threads, each running its own current-thread runtime.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Pipelined echo: N connections, D messages in flight on each.
    Echo(EchoArgs),
    /// Handshakes per second, or `--hold N` idle connections for memory.
    Connect(ConnectArgs),
    /// One publisher, N subscribers: deliveries per second and latency.
    Fanout(FanoutArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// Server URL, e.g. ws://127.0.0.1:9001/ (must be loopback).
    #[arg(long)]
    url: String,
    /// Server process to sample CPU time (and RSS) from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections per source address; past this, connections bind to
    /// 127.0.0.2, 127.0.0.3, ... before connecting.
    #[arg(long, default_value_t = 25_000)]
    per_source: usize,
    /// How many connections to open concurrently during setup.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Offer permessage-deflate: `no-context` (no context takeover either
    /// way) or `takeover` (the server may keep its context). The run fails
    /// if the server does not accept. Sent messages are compressed once up
    /// front (each on its own); received ones are inflated and checked.
    #[arg(long, value_enum, default_value_t = Offer::Off)]
    deflate: Offer,
}

#[derive(clap::Args, Debug, Clone)]
struct EchoArgs {
    #[command(flatten)]
    common: Common,
    /// Number of connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 20)]
    size: usize,
    /// Messages kept in flight per connection.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured warm-up before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Send binary frames instead of text.
    #[arg(long)]
    binary: bool,
    /// Payload: typical hub JSON events (as in ws-proto's deflate
    /// benchmarks) instead of repeated letters, which compress far better
    /// than real traffic.
    #[arg(long)]
    json: bool,
    /// Payloads at least this large are discarded unread by the kernel
    /// (`recv` with `MSG_TRUNC`) instead of being copied; 0 = never (the
    /// default: on loopback the receive copy is not where the time goes).
    #[arg(long, default_value_t = 0)]
    skip_above: u64,
    /// Skip the handshake: talk to a plain TCP echo server, which sends the
    /// (masked) frames straight back.
    #[arg(long)]
    raw_tcp: bool,
}

#[derive(clap::Args, Debug, Clone)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Handshakes to perform (open, handshake, close).
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Upper bound on the run, seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Open-loop pacing: at most this many handshakes per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Instead of churning, open this many idle connections and report the
    /// server's resident memory per connection.
    #[arg(long)]
    hold: Option<usize>,
    /// Seconds to wait after the last connection before reading RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// With `--hold`: each connection first exchanges one text message of
    /// this many bytes of typical JSON with an echo server (compressed
    /// with `--deflate`), then idles; 0 = none. Shows what a connection
    /// keeps after it has used its compression contexts.
    #[arg(long, default_value_t = 0)]
    exchange: usize,
}

#[derive(clap::Args, Debug, Clone)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Messages per second each publisher sends.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Publisher connections, spread over the threads.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Rooms: subscriber `i` and publisher `p` are in room `i % rooms` and
    /// `p % rooms`, named by `{room}` in the templates.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured warm-up, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Pad published messages to this many bytes (at `{pad}` if the
    /// template has it, else with trailing spaces, which JSON ignores).
    #[arg(long, default_value_t = 0)]
    size: usize,
    /// Text each subscriber sends once after connecting (`{i}` = index);
    /// empty sends nothing (a plain broadcast server needs nothing).
    #[arg(long, default_value = "")]
    subscribe_msg: String,
    /// Text the publisher sends once after connecting, if any.
    #[arg(long)]
    publisher_init: Option<String>,
    /// Published text; `{ts}` = send time in ns, `{seq}` = sequence number.
    #[arg(long, default_value = r#"{"ts":{ts},"seq":{seq}}"#)]
    publish_msg: String,
    /// Marker preceding the timestamp in received text; default: the word
    /// right before `{ts}` in the publish template (e.g. `ts`).
    #[arg(long)]
    ts_marker: Option<String>,
    /// Seconds between the subscriptions and the first publish.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Seconds to keep reading after the last publish (for loss counts).
    #[arg(long, default_value_t = 1.0)]
    drain: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let nofile = ws_benches::raise_nofile_limit();
    let threads = cli.threads.max(1);
    match cli.cmd {
        Cmd::Echo(a) => echo(a, threads),
        Cmd::Connect(a) if a.hold.is_some() => hold(a, nofile),
        Cmd::Connect(a) => connect(a, threads),
        Cmd::Fanout(a) => fanout(a, threads),
    }
}

// ---------------------------------------------------------------- plumbing

/// Runs `f(shard)` on `threads` threads, each with its own current-thread
/// runtime and `LocalSet`, and collects the results.
fn run_shards<T, F, Fut>(threads: usize, f: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + 'static,
{
    let f = Arc::new(f);
    let handles: Vec<_> = (0..threads)
        .map(|shard| {
            let f = Arc::clone(&f);
            std::thread::Builder::new()
                .name(format!("wsload-{shard}"))
                .spawn(move || -> anyhow::Result<T> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, f(shard))
                })
                .expect("spawn thread")
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().map_err(|_| anyhow::anyhow!("shard panicked"))?)
        .collect()
}

/// Source address for the `i`-th connection: the default for the first
/// `per_source`, then 127.0.0.2, 127.0.0.3, ...
fn source_for(i: usize, per_source: usize) -> Option<IpAddr> {
    let k = i / per_source.max(1);
    if k == 0 {
        None
    } else {
        let k = u8::try_from(k + 1).unwrap_or(254);
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
    }
}

/// An open connection: the stream, any bytes that followed the handshake
/// response, and the inflater if permessage-deflate was negotiated.
type Conn = (TcpStream, Vec<u8>, Option<Inflater>);

/// Connects (optionally from `src`), sets `TCP_NODELAY` and, unless `raw`,
/// performs the opening handshake with the `offer`.
async fn open(
    target: &Target,
    src: Option<IpAddr>,
    raw: bool,
    offer: Offer,
) -> anyhow::Result<Conn> {
    let mut s = match src {
        Some(ip) => {
            let sock = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            sock.bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("bind {ip}"))?;
            sock.connect(target.addr).await?
        }
        None => TcpStream::connect(target.addr).await?,
    };
    s.set_nodelay(true)?;
    if raw {
        return Ok((s, Vec::new(), None));
    }
    let opened = wire::client_handshake(&mut s, &target.host, &target.path, offer.header()).await?;
    let inflater = offer.check_answer(opened.extensions.as_deref())?;
    Ok((s, opened.leftover, inflater))
}

/// Opens the connections of `shard` (indices `i` with `i % shards == shard`)
/// with bounded concurrency; failures are counted, not fatal.
async fn open_many(
    target: &Target,
    common: &Common,
    total: usize,
    shard: usize,
    shards: usize,
    raw: bool,
) -> (Vec<Conn>, u64) {
    let per_source = common.per_source;
    let offer = common.deflate;
    let results: Vec<_> = futures_util::stream::iter((shard..total).step_by(shards))
        .map(|i| open(target, source_for(i, per_source), raw, offer))
        .buffer_unordered(common.concurrency.max(1))
        .collect()
        .await;
    let mut ok = Vec::with_capacity(results.len());
    let mut errors = 0;
    for r in results {
        match r {
            Ok(c) => ok.push(c),
            Err(e) => {
                if errors == 0 {
                    eprintln!("connect error: {e:#}");
                }
                errors += 1;
            }
        }
    }
    (ok, errors)
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

/// Percentile of a nanosecond histogram, in microseconds.
fn pct_us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    (h.value_at_quantile(q) as f64 / 1000.0 * 10.0).round() / 10.0
}

/// Fraction of one core that `us` CPU microseconds are over `window` seconds.
fn util(us: Option<u64>, window: f64) -> Option<f64> {
    us.map(|u| round2(u as f64 / 1e6 / window.max(1e-9)))
}

fn print_util(server: Option<f64>, load: Option<f64>) {
    let f = |x: Option<f64>| x.map_or_else(|| "?".to_string(), |v| format!("{v:.2}"));
    println!(
        "  cores busy: server {}, load tool {} (a side near 1.00 per thread is the bottleneck)",
        f(server),
        f(load)
    );
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The fraction of the server's CPU time spent in the kernel (system calls,
/// loopback TCP), to two places; `None` without a server PID or CPU time.
fn kernel_share(kernel_us: Option<u64>, cpu_us: Option<u64>) -> Option<f64> {
    match (kernel_us, cpu_us) {
        (Some(k), Some(c)) if c > 0 => Some(round2(k as f64 / c as f64)),
        _ => None,
    }
}

/// Measured window shared by all shards, expressed as offsets from the
/// instant the shards were released by the start barrier.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

#[derive(Clone)]
struct Stats {
    msgs: u64,
    bytes: u64,
    errors: u64,
    /// Messages received compressed (RSV1).
    compressed: u64,
    hist: Histogram<u64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            msgs: 0,
            bytes: 0,
            errors: 0,
            compressed: 0,
            hist: new_hist(),
        }
    }

    fn merge(mut all: Vec<Self>) -> Self {
        let mut acc = all.pop().unwrap_or_else(Self::new);
        for s in all {
            acc.msgs += s.msgs;
            acc.bytes += s.bytes;
            acc.errors += s.errors;
            acc.compressed += s.compressed;
            acc.hist.add(&s.hist).expect("same bounds");
        }
        acc
    }
}

fn secs(x: f64) -> Duration {
    Duration::from_secs_f64(x.max(0.0))
}

// ---------------------------------------------------------------- echo

fn echo(a: EchoArgs, threads: usize) -> anyhow::Result<()> {
    let target = Target::parse_plain(&a.common.url)?;
    let opcode = if a.binary { OP_BINARY } else { OP_TEXT };
    let payload: Vec<u8> = if a.json {
        json::typical_json(a.size.max(2)).into_bytes()
    } else {
        (0..a.size).map(|i| b'a' + (i % 26) as u8).collect()
    };
    let deflate = a.common.deflate != Offer::Off;
    if deflate && a.raw_tcp {
        bail!("--deflate needs a WebSocket server, not --raw-tcp");
    }
    let frame = message_frame(opcode, &payload, a.common.deflate);
    let frame_len = frame.len();
    let frame: Arc<[u8]> = frame.into();
    let payload_len = payload.len() as u64;
    let depth = a.depth.max(1);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let (warmup, duration) = (secs(a.warmup), secs(a.duration));

    let shard_barrier = Arc::clone(&barrier);
    let pid = a.common.server_pid;
    let main_thread = std::thread::spawn(move || {
        barrier.wait();
        let t0 = Instant::now();
        std::thread::sleep(warmup);
        let cpu = CpuSample::start(pid);
        let me = CpuSample::start(Some(std::process::id()));
        std::thread::sleep((t0 + warmup + duration).saturating_duration_since(Instant::now()));
        (cpu.elapsed_split_us(), me.elapsed_us())
    });

    let args = a.clone();
    let shards = run_shards(threads, move |shard| {
        let target = target.clone();
        let frame = Rc::<[u8]>::from(&*frame);
        let barrier = Arc::clone(&shard_barrier);
        let a = args.clone();
        async move {
            let (conns, conn_errors) =
                open_many(&target, &a.common, a.connections, shard, threads, a.raw_tcp).await;
            barrier.wait();
            let t0 = Instant::now();
            let win = Window {
                start: t0 + warmup,
                end: t0 + warmup + duration,
            };
            let stats = Rc::new(RefCell::new(Stats::new()));
            stats.borrow_mut().errors = conn_errors;
            let spec = Rc::new(EchoSpec {
                frame,
                payload_len,
                depth,
                skip_above: a.skip_above,
                win,
            });
            for (s, left, inflater) in conns {
                let (spec, stats) = (Rc::clone(&spec), Rc::clone(&stats));
                tokio::task::spawn_local(async move {
                    let r = echo_conn(s, left, inflater, &spec, &stats).await;
                    if let Err(e) = r {
                        let mut st = stats.borrow_mut();
                        if st.errors == 0 {
                            eprintln!("connection error: {e:#}");
                        }
                        st.errors += 1;
                    }
                });
            }
            tokio::time::sleep_until(win.end.into()).await;
            let s = stats.borrow().clone();
            Ok(s)
        }
    })?;
    let (split, load_us) = main_thread.join().expect("timer thread");
    let (cpu_us, kernel_us) = (split.map(|s| s.0), split.map(|s| s.1));
    let st = Stats::merge(shards);
    let secs_f = duration.as_secs_f64();
    let msgs_s = st.msgs as f64 / secs_f;
    let mb_s = st.bytes as f64 / secs_f / 1e6;
    let cpu_per_msg = cpu_us
        .filter(|_| st.msgs > 0)
        .map(|c| c as f64 / st.msgs as f64);
    println!(
        "echo {} conns x {} B depth {}: {:.0} msgs/s, {:.2} MB/s, p50 {} us, p99 {} us, p99.9 {} us, errors {}{}",
        a.connections,
        a.size,
        depth,
        msgs_s,
        mb_s,
        pct_us(&st.hist, 0.5),
        pct_us(&st.hist, 0.99),
        pct_us(&st.hist, 0.999),
        st.errors,
        cpu_per_msg.map_or(String::new(), |c| format!(", server CPU {c:.2} us/msg")),
    );
    print_util(util(cpu_us, secs_f), util(load_us, secs_f));
    println!(
        "{}",
        json!({
            "cmd": "echo",
            "connections": a.connections,
            "size": a.size,
            "depth": depth,
            "duration_s": secs_f,
            "msgs": st.msgs,
            "msgs_per_s": msgs_s.round(),
            "mb_per_s": round2(mb_s),
            "p50_us": pct_us(&st.hist, 0.5),
            "p99_us": pct_us(&st.hist, 0.99),
            "p999_us": pct_us(&st.hist, 0.999),
            "errors": st.errors,
            "server_cpu_us": cpu_us,
            "server_cpu_util": util(cpu_us, secs_f),
            "load_cpu_util": util(load_us, secs_f),
            "server_cpu_us_per_msg": cpu_per_msg.map(round2),
            "server_kernel_share": kernel_share(kernel_us, cpu_us),
            "deflate": format!("{:?}", a.common.deflate),
            "sent_frame_bytes": frame_len,
            "compressed_received": st.compressed,
        })
    );
    Ok(())
}

/// Most payload bytes discarded by one `recv(MSG_TRUNC)`.
const DISCARD_MAX: usize = 4 << 20;

/// Number of frames handed to one vectored write.
const MAX_IOV: usize = 64;

/// What every echo connection of a shard does.
struct EchoSpec {
    /// The pre-encoded, pre-masked frame.
    frame: Rc<[u8]>,
    payload_len: u64,
    depth: usize,
    skip_above: u64,
    win: Window,
}

async fn echo_conn(
    s: TcpStream,
    leftover: Vec<u8>,
    mut inflater: Option<Inflater>,
    spec: &EchoSpec,
    stats: &RefCell<Stats>,
) -> anyhow::Result<()> {
    let EchoSpec {
        ref frame,
        payload_len,
        depth,
        skip_above,
        win,
    } = *spec;
    let flen = frame.len();
    // Compressed echoes are inflated, so their payloads are captured.
    let mut parser = FrameParser::new(inflater.is_some());
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(depth);
    let now = Instant::now();
    inflight.extend(std::iter::repeat_n(now, depth));
    let mut to_send = depth; // whole frames not yet fully written
    let mut off = 0usize; // bytes of the first of them already written
    let mut ctl_out: Vec<u8> = Vec::new();
    let mut closed = false;
    let mut iov = [IoSlice::new(frame); MAX_IOV];

    // Large payloads are discarded in the kernel (`recv(MSG_TRUNC)`), so
    // the tool does not pay for copying what it would throw away: read just
    // a frame header, then skip the payload.
    let large = skip_above > 0 && payload_len >= skip_above;
    let mut discard: Vec<u8> = Vec::new();

    let mut on_bytes = |parser: &mut FrameParser,
                        input: &[u8],
                        skip: u64,
                        now: Instant,
                        to_send: &mut usize,
                        ctl_out: &mut Vec<u8>,
                        closed: &mut bool|
     -> anyhow::Result<()> {
        let mut st = stats.borrow_mut();
        let st = &mut *st;
        let mut bad = 0u64;
        let mut handle = |ev: Event<'_>| match ev {
            Event::Data {
                len,
                compressed,
                payload,
                ..
            } => {
                let len = match inflater.as_mut() {
                    Some(inf) if compressed => {
                        st.compressed += 1;
                        inf.inflate(payload).map_or(u64::MAX, |p| p.len() as u64)
                    }
                    _ => len,
                };
                if len != payload_len {
                    bad += 1;
                }
                let sent = inflight.pop_front().unwrap_or(now);
                if win.contains(now) {
                    st.msgs += 1;
                    st.bytes += len;
                    st.hist
                        .saturating_record(now.duration_since(sent).as_nanos() as u64);
                }
                inflight.push_back(now);
                *to_send += 1;
            }
            Event::Ping(p) => wire::encode_frame(ctl_out, OP_PONG, p, Some(MASK_KEY)),
            Event::Pong => {}
            Event::Close(_) => *closed = true,
        };
        if skip > 0 {
            parser.skip(skip, &mut handle);
        } else {
            parser.feed(input, &mut handle)?;
        }
        st.errors += bad;
        Ok(())
    };
    on_bytes(
        &mut parser,
        &leftover,
        0,
        now,
        &mut to_send,
        &mut ctl_out,
        &mut closed,
    )?;

    loop {
        if closed {
            bail!("server closed the connection");
        }
        // Write as much as the socket takes.
        let mut blocked = false;
        while !ctl_out.is_empty() || to_send > 0 {
            if !ctl_out.is_empty() {
                match s.try_write(&ctl_out) {
                    Ok(n) => {
                        ctl_out.drain(..n);
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        blocked = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let n = to_send.min(MAX_IOV);
            iov[0] = IoSlice::new(&frame[off..]);
            let r = if n == 1 {
                s.try_write(&frame[off..])
            } else {
                s.try_write_vectored(&iov[..n])
            };
            iov[0] = IoSlice::new(frame);
            match r {
                Ok(w) => {
                    let total = off + w;
                    to_send -= total / flen;
                    off = total % flen;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let interest = if blocked {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let ready = s.ready(interest).await?;
        if ready.is_readable() {
            let skippable = if large { parser.skippable() } else { 0 };
            let r = if skippable > 0 {
                if discard.capacity() == 0 {
                    discard.reserve(DISCARD_MAX);
                }
                let want = (skippable as usize).min(discard.capacity());
                let buf = &mut discard.spare_capacity_mut()[..want];
                s.try_io(Interest::READABLE, || {
                    SockRef::from(&s).recv_with_flags(buf, libc::MSG_TRUNC)
                })
                .map(|n| (n, n as u64))
            } else {
                // With large frames, read little more than a header so the
                // payload can be skipped.
                let limit = if large { 14 } else { rbuf.len() };
                s.try_read(&mut rbuf[..limit]).map(|n| (n, 0))
            };
            match r {
                Ok((0, _)) => bail!("server closed the connection (EOF)"),
                Ok((n, skip)) => on_bytes(
                    &mut parser,
                    &rbuf[..if skip > 0 { 0 } else { n }],
                    skip,
                    Instant::now(),
                    &mut to_send,
                    &mut ctl_out,
                    &mut closed,
                )?,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

// ---------------------------------------------------------------- connect

fn close_frame() -> Vec<u8> {
    let mut f = Vec::new();
    wire::encode_frame(&mut f, OP_CLOSE, &1000u16.to_be_bytes(), Some(MASK_KEY));
    f
}

/// One handshake: open, handshake, send close, wait for the server's close
/// frame (or EOF). Returns the time to the handshake response.
async fn one_handshake(target: &Target, close: &[u8]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let (mut s, left, _) = open(target, None, false, Offer::Off).await?;
    let hs = t.elapsed();
    s.write_all(close).await?;
    let mut parser = FrameParser::new(false);
    let mut got_close = false;
    parser.feed(&left, |e| got_close |= matches!(e, Event::Close(_)))?;
    let mut buf = [0u8; 512];
    let deadline = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(deadline);
    while !got_close {
        tokio::select! {
            r = s.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    break;
                }
                parser.feed(&buf[..n], |e| got_close |= matches!(e, Event::Close(_)))?;
            }
            () = &mut deadline => bail!("no close reply within 2 s"),
        }
    }
    Ok(hs)
}

fn connect(a: ConnectArgs, threads: usize) -> anyhow::Result<()> {
    let target = Target::parse_plain(&a.common.url)?;
    let count = a.count;
    let claimed = Arc::new(AtomicU64::new(0));
    let cpu = CpuSample::start(a.common.server_pid);
    let me = CpuSample::start(Some(std::process::id()));
    let t0 = Instant::now();
    let deadline = t0 + secs(a.duration);
    let workers = a.common.concurrency.max(1);
    let rate = a.rate;
    let shards = run_shards(threads, move |shard| {
        let target = Rc::new(target.clone());
        let claimed = Arc::clone(&claimed);
        let my_workers = (shard..workers).step_by(threads).count();
        async move {
            let close: Rc<[u8]> = close_frame().into();
            let stats = Rc::new(RefCell::new(Stats::new()));
            let last = Rc::new(RefCell::new(t0));
            let mut tasks = Vec::new();
            for _ in 0..my_workers {
                let (target, claimed, close, stats, last) = (
                    Rc::clone(&target),
                    Arc::clone(&claimed),
                    Rc::clone(&close),
                    Rc::clone(&stats),
                    Rc::clone(&last),
                );
                tasks.push(tokio::task::spawn_local(async move {
                    loop {
                        let idx = claimed.fetch_add(1, Ordering::Relaxed);
                        if idx >= count || Instant::now() >= deadline {
                            break;
                        }
                        if let Some(r) = rate {
                            let at = t0 + Duration::from_secs_f64(idx as f64 / r);
                            tokio::time::sleep_until(at.into()).await;
                        }
                        let r = one_handshake(&target, &close).await;
                        let mut st = stats.borrow_mut();
                        match r {
                            Ok(hs) => {
                                st.msgs += 1;
                                st.hist.saturating_record(hs.as_nanos() as u64);
                                *last.borrow_mut() = Instant::now();
                            }
                            Err(e) => {
                                if st.errors == 0 {
                                    eprintln!("handshake error: {e:#}");
                                }
                                st.errors += 1;
                            }
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            let s = stats.borrow().clone();
            let last = *last.borrow();
            Ok((s, last))
        }
    })?;
    let split = cpu.elapsed_split_us();
    let (cpu_us, kernel_us) = (split.map(|s| s.0), split.map(|s| s.1));
    let load_us = me.elapsed_us();
    let wall = t0.elapsed().as_secs_f64();
    let end = shards.iter().map(|(_, l)| *l).max().unwrap_or(t0);
    let st = Stats::merge(shards.into_iter().map(|(s, _)| s).collect());
    let elapsed = end.duration_since(t0).as_secs_f64().max(1e-9);
    let hs_s = st.msgs as f64 / elapsed;
    let cpu_per = cpu_us
        .filter(|_| st.msgs > 0)
        .map(|c| c as f64 / st.msgs as f64);
    println!(
        "connect: {} handshakes in {:.2} s = {:.0}/s, handshake p50 {} us, p99 {} us, errors {}{}",
        st.msgs,
        elapsed,
        hs_s,
        pct_us(&st.hist, 0.5),
        pct_us(&st.hist, 0.99),
        st.errors,
        cpu_per.map_or(String::new(), |c| format!(
            ", server CPU {c:.1} us/handshake"
        )),
    );
    println!(
        "{}",
        json!({
            "cmd": "connect",
            "handshakes": st.msgs,
            "elapsed_s": round2(elapsed),
            "handshakes_per_s": hs_s.round(),
            "p50_us": pct_us(&st.hist, 0.5),
            "p99_us": pct_us(&st.hist, 0.99),
            "errors": st.errors,
            "concurrency": workers,
            "server_cpu_us": cpu_us,
            "server_cpu_util": util(cpu_us, wall),
            "load_cpu_util": util(load_us, wall),
            "server_cpu_us_per_handshake": cpu_per.map(round2),
            "server_kernel_share": kernel_share(kernel_us, cpu_us),
        })
    );
    Ok(())
}

fn hold(a: ConnectArgs, nofile: u64) -> anyhow::Result<()> {
    let target = Target::parse_plain(&a.common.url)?;
    let n = a.hold.unwrap_or(0);
    if n as u64 + 32 > nofile {
        bail!("--hold {n} needs more file descriptors than RLIMIT_NOFILE allows ({nofile})");
    }
    let pid = a.common.server_pid;
    let rss = |p: Option<u32>| p.and_then(|p| procfs::rss_bytes(p).ok());
    let before = rss(pid);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let t0 = Instant::now();
    let (mut conns, mut errors) = rt.block_on(open_many(&target, &a.common, n, 0, 1, false));
    let open_s = t0.elapsed().as_secs_f64();
    if a.exchange > 0 {
        let text = json::typical_json(a.exchange.max(2));
        let frame = message_frame(OP_TEXT, text.as_bytes(), a.common.deflate);
        for (s, left, inflater) in &mut conns {
            let r = rt.block_on(exchange_one(s, left, inflater.as_mut(), &frame, a.exchange));
            if let Err(e) = r {
                if errors == 0 {
                    eprintln!("exchange: {e:#}");
                }
                errors += 1;
            }
        }
    }
    // Let the server settle (the reactor keeps running), then check the
    // connections are still up: none closed by the server.
    let alive = rt.block_on(async {
        tokio::time::sleep(secs(a.settle)).await;
        let mut alive = 0u64;
        let mut probe = [0u8; 1];
        for (s, ..) in &conns {
            match s.try_read(&mut probe) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => alive += 1,
                _ => {}
            }
        }
        alive
    });
    let after = rss(pid);
    let held = conns.len() as u64;
    let per_conn = match (before, after) {
        (Some(b), Some(af)) if held > 0 => Some((af as f64 - b as f64) / held as f64),
        _ => None,
    };
    println!(
        "hold: {held} idle connections ({alive} alive, {errors} failed) opened in {open_s:.2} s; server RSS {} -> {} KiB{}",
        before.map_or(0, |b| b / 1024),
        after.map_or(0, |b| b / 1024),
        per_conn.map_or(String::new(), |p| format!(", {p:.0} bytes/conn")),
    );
    println!(
        "{}",
        json!({
            "cmd": "hold",
            "connections": held,
            "alive": alive,
            "errors": errors,
            "open_s": round2(open_s),
            "rss_before": before,
            "rss_after": after,
            "bytes_per_conn": per_conn.map(f64::round),
            "deflate": format!("{:?}", a.common.deflate),
            "exchange": a.exchange,
        })
    );
    drop(conns);
    Ok(())
}

/// A masked frame carrying `payload`, compressed (RSV1) unless `offer`
/// is [`Offer::Off`].
fn message_frame(opcode: u8, payload: &[u8], offer: Offer) -> Vec<u8> {
    let mut f = Vec::new();
    if offer == Offer::Off {
        wire::encode_frame(&mut f, opcode, payload, Some(MASK_KEY));
    } else {
        let packed = deflate::compress_message(payload);
        wire::encode_frame(&mut f, opcode, &packed, Some(MASK_KEY));
        f[0] |= RSV1;
    }
    f
}

/// Sends `frame` and reads until its echo (of `len` plain bytes) is back.
async fn exchange_one(
    s: &mut TcpStream,
    left: &[u8],
    mut inflater: Option<&mut Inflater>,
    frame: &[u8],
    len: usize,
) -> anyhow::Result<()> {
    s.write_all(frame).await?;
    let mut parser = FrameParser::new(true);
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = None;
    let mut input = left.to_vec();
    loop {
        let mut err = None;
        parser.feed(&input, |ev| {
            if let Event::Data {
                compressed,
                payload,
                len,
                ..
            } = ev
            {
                got = Some(match inflater.as_mut() {
                    Some(inf) if compressed => match inf.inflate(payload) {
                        Ok(p) => p.len() as u64,
                        Err(e) => {
                            err = Some(e);
                            0
                        }
                    },
                    _ => len,
                });
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        match got {
            Some(n) if n == len as u64 => return Ok(()),
            Some(n) => bail!("echo of {n} bytes, expected {len}"),
            None => {}
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            bail!("server closed the connection (EOF)");
        }
        input.clear();
        input.extend_from_slice(&buf[..n]);
    }
}

// ---------------------------------------------------------------- fanout

/// The word right before `{ts}` in `template` (letters, digits, `_`),
/// skipping quotes, colons and the like (`"ts":{ts}` gives `ts`).
fn derive_marker(template: &str) -> Option<String> {
    let before = &template[..template.find("{ts}")?];
    let trimmed = before.trim_end_matches(['"', ':', ' ', '=', '\\']);
    let start = trimmed
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |j| j + 1);
    let w = &trimmed[start..];
    (!w.is_empty()).then(|| w.to_string())
}

/// Finds `marker` followed (after quotes, colons, spaces, backslashes) by
/// digits; returns the number.
fn find_ts(payload: &[u8], marker: &[u8]) -> Option<u64> {
    let mut from = 0;
    while from + marker.len() <= payload.len() {
        let pos = payload[from..]
            .windows(marker.len())
            .position(|w| w == marker)?;
        let at = from + pos;
        let word_start =
            at == 0 || !(payload[at - 1].is_ascii_alphanumeric() || payload[at - 1] == b'_');
        if !word_start {
            from = at + 1;
            continue;
        }
        let mut i = at + marker.len();
        while i < payload.len() && matches!(payload[i], b'"' | b'\\' | b':' | b' ' | b'=') {
            i += 1;
        }
        let digits_start = i;
        let mut v: u64 = 0;
        while i < payload.len() && payload[i].is_ascii_digit() {
            v = v
                .wrapping_mul(10)
                .wrapping_add(u64::from(payload[i] - b'0'));
            i += 1;
        }
        if i > digits_start {
            return Some(v);
        }
        from += pos + 1;
    }
    None
}

/// How many of `subscribers` are in `room` of `rooms` (subscriber `i` is in
/// room `i % rooms`).
fn members(subscribers: usize, rooms: usize, room: usize) -> usize {
    subscribers / rooms + usize::from(room < subscribers % rooms)
}

fn fill(template: &str, i: u64, ts: u64, seq: u64, size: usize) -> String {
    let mut s = template
        .replace("{i}", &i.to_string())
        .replace("{ts}", &ts.to_string())
        .replace("{seq}", &seq.to_string());
    let has_pad = s.contains("{pad}");
    let base_len = s.len() - if has_pad { 5 } else { 0 };
    let pad = size.saturating_sub(base_len);
    if has_pad {
        s = s.replace("{pad}", &pad_words(pad, seq));
    } else {
        s.push_str(&" ".repeat(pad));
    }
    s
}

/// `len` bytes of words (chat-like text, varying with `seed`), so a padded
/// message compresses like real text rather than like a run of one byte.
fn pad_words(len: usize, seed: u64) -> String {
    const WORDS: [&str; 16] = [
        "hello", "world", "room", "update", "price", "latency", "ok", "join", "leave", "typing",
        "message", "ack", "order", "filled", "quote", "status",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut s = String::with_capacity(len + 8);
    while s.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        s.push_str(WORDS[(state % 16) as usize]);
        s.push(' ');
    }
    s.truncate(len);
    s
}

#[derive(Clone)]
struct FanStats {
    in_window: u64,
    total: u64,
    unparsed: u64,
    /// Deliveries received compressed (RSV1).
    compressed: u64,
    errors: u64,
    published: u64,
    /// Deliveries the publishes of this shard should make.
    expected: u64,
    hist: Histogram<u64>,
    /// How late the publisher sent each message after it was due (ns): a
    /// starved or saturated load tool shows here, not in the server.
    publish_lag: Histogram<u64>,
}

/// `template` with `{room}` set to `room`.
fn in_room(template: &str, room: usize) -> String {
    template.replace("{room}", &room.to_string())
}

fn fanout(a: FanoutArgs, threads: usize) -> anyhow::Result<()> {
    let target = Target::parse_plain(&a.common.url)?;
    let marker = match a.ts_marker.clone() {
        Some(m) => m,
        None => derive_marker(&a.publish_msg)
            .context("cannot derive a timestamp marker from --publish-msg; pass --ts-marker")?,
    };
    let base = Instant::now();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let (settle, warmup, duration, drain) = (
        secs(a.settle),
        secs(a.warmup),
        secs(a.duration),
        secs(a.drain),
    );
    let shard_barrier = Arc::clone(&barrier);
    let pid = a.common.server_pid;
    let timer = std::thread::spawn(move || -> [Option<u64>; 4] {
        barrier.wait();
        let t0 = Instant::now();
        std::thread::sleep(settle + warmup);
        let cpu = CpuSample::start(pid);
        let me = CpuSample::start(Some(std::process::id()));
        std::thread::sleep(
            (t0 + settle + warmup + duration).saturating_duration_since(Instant::now()),
        );
        [
            cpu.elapsed_us(),
            me.elapsed_us(),
            cpu.elapsed_wait_us(),
            me.elapsed_wait_us(),
        ]
    });
    let rooms = a.rooms.max(1);
    let args = a.clone();
    let shards = run_shards(threads, move |shard| {
        let a = args.clone();
        let target = target.clone();
        let marker = marker.clone();
        let barrier = Arc::clone(&shard_barrier);
        async move {
            let stats = Rc::new(RefCell::new(FanStats {
                in_window: 0,
                total: 0,
                unparsed: 0,
                compressed: 0,
                errors: 0,
                published: 0,
                expected: 0,
                hist: new_hist(),
                publish_lag: new_hist(),
            }));
            // Subscribers: connect and subscribe.
            let (subs, errs) =
                open_many(&target, &a.common, a.subscribers, shard, threads, false).await;
            stats.borrow_mut().errors += errs;
            let mut ready = Vec::with_capacity(subs.len());
            for (i, (mut s, left, inflater)) in subs.into_iter().enumerate() {
                if !a.subscribe_msg.is_empty() {
                    let idx = i * threads + shard;
                    let mut f = Vec::new();
                    let template = in_room(&a.subscribe_msg, idx % rooms);
                    let text = fill(&template, idx as u64, 0, 0, 0);
                    wire::encode_frame(&mut f, OP_TEXT, text.as_bytes(), Some(MASK_KEY));
                    if s.write_all(&f).await.is_err() {
                        stats.borrow_mut().errors += 1;
                        continue;
                    }
                }
                ready.push((s, left, inflater));
            }
            // Publisher `p` lives on shard `p % threads` and connects before
            // the barrier.
            let mut publishers = Vec::new();
            for p in (shard..a.publishers).step_by(threads) {
                let init = a.publisher_init.as_deref().map(|t| in_room(t, p % rooms));
                match open_publisher(&target, init.as_deref(), a.common.deflate).await {
                    Ok(s) => publishers.push((p % rooms, s)),
                    Err(e) => {
                        eprintln!("publisher: {e:#}");
                        stats.borrow_mut().errors += 1;
                    }
                }
            }
            barrier.wait();
            let t0 = Instant::now();
            let pub_start = t0 + settle;
            let win = Window {
                start: pub_start + warmup,
                end: pub_start + warmup + duration,
            };
            let marker: Rc<[u8]> = marker.as_bytes().into();
            for (s, left, inflater) in ready {
                let (stats, marker) = (Rc::clone(&stats), Rc::clone(&marker));
                tokio::task::spawn_local(async move {
                    let r = subscriber(s, left, inflater, base, win, &marker, &stats).await;
                    if let Err(e) = r {
                        let mut st = stats.borrow_mut();
                        if st.errors == 0 {
                            eprintln!("subscriber error: {e:#}");
                        }
                        st.errors += 1;
                    }
                });
            }
            let closed = Arc::new(AtomicU64::new(0));
            let mut running = Vec::new();
            for (room, s) in publishers {
                let mut a = a.clone();
                a.publish_msg = in_room(&a.publish_msg, room);
                let receivers = members(a.subscribers, rooms, room) as u64;
                let stats = Rc::clone(&stats);
                let closed = Arc::clone(&closed);
                running.push(tokio::task::spawn_local(async move {
                    let (published, lag) = publish(s, &a, base, pub_start, win.end, closed).await?;
                    let mut st = stats.borrow_mut();
                    st.published += published;
                    st.expected += published * receivers;
                    st.publish_lag.add(&lag).expect("same bounds");
                    anyhow::Ok(())
                }));
            }
            for r in running {
                r.await??;
            }
            tokio::time::sleep_until((win.end + drain).into()).await;
            let code = closed.load(Ordering::Relaxed);
            if code != 0 {
                eprintln!("publisher: the server closed the connection (code {code})");
                stats.borrow_mut().errors += 1;
            }
            let s = stats.borrow().clone();
            Ok(s)
        }
    })?;
    let [cpu_us, load_us, cpu_wait_us, load_wait_us] = timer.join().expect("timer thread");
    let mut st = shards[0].clone();
    for s in &shards[1..] {
        st.in_window += s.in_window;
        st.total += s.total;
        st.unparsed += s.unparsed;
        st.compressed += s.compressed;
        st.errors += s.errors;
        st.published += s.published;
        st.expected += s.expected;
        st.hist.add(&s.hist).expect("same bounds");
        st.publish_lag.add(&s.publish_lag).expect("same bounds");
    }
    let d = duration.as_secs_f64();
    let per_s = st.in_window as f64 / d;
    let expected = st.expected;
    let cpu_per = cpu_us
        .filter(|_| st.in_window > 0)
        .map(|c| c as f64 / st.in_window as f64);
    println!(
        "fanout {} subs @ {} msg/s: {:.0} deliveries/s, p50 {} us, p99 {} us, p99.9 {} us, delivered {}/{} expected, unparsed {}, errors {}{}",
        a.subscribers,
        a.rate,
        per_s,
        pct_us(&st.hist, 0.5),
        pct_us(&st.hist, 0.99),
        pct_us(&st.hist, 0.999),
        st.total,
        expected,
        st.unparsed,
        st.errors,
        cpu_per.map_or(String::new(), |c| format!(
            ", server CPU {c:.2} us/delivery"
        )),
    );
    println!(
        "{}",
        json!({
            "cmd": "fanout",
            "subscribers": a.subscribers,
            "rate": a.rate,
            "publishers": a.publishers,
            "rooms": a.rooms,
            "duration_s": d,
            "published": st.published,
            "deliveries_in_window": st.in_window,
            "deliveries_per_s": per_s.round(),
            "delivered_total": st.total,
            "expected_total": expected,
            "unparsed": st.unparsed,
            "compressed_received": st.compressed,
            "deflate": format!("{:?}", a.common.deflate),
            "p50_us": pct_us(&st.hist, 0.5),
            "p99_us": pct_us(&st.hist, 0.99),
            "p999_us": pct_us(&st.hist, 0.999),
            "publish_lag_p99_us": pct_us(&st.publish_lag, 0.99),
            "publish_lag_max_us": pct_us(&st.publish_lag, 1.0),
            "errors": st.errors,
            "server_cpu_us": cpu_us,
            "server_cpu_util": util(cpu_us, d),
            "load_cpu_util": util(load_us, d),
            // Runnable but not running (CPU taken by other processes).
            "server_runq_wait": util(cpu_wait_us, d),
            "load_runq_wait": util(load_wait_us, d),
            "server_cpu_us_per_delivery": cpu_per.map(|c| (c * 1000.0).round() / 1000.0),
        })
    );
    Ok(())
}

async fn subscriber(
    mut s: TcpStream,
    left: Vec<u8>,
    mut inflater: Option<Inflater>,
    base: Instant,
    win: Window,
    marker: &[u8],
    stats: &RefCell<FanStats>,
) -> anyhow::Result<()> {
    let mut parser = FrameParser::new(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut ctl_out = Vec::new();
    let mut closed = false;
    let mut held = left;
    loop {
        let data: &[u8] = if held.is_empty() {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                bail!("server closed the subscription (EOF)");
            }
            &buf[..n]
        } else {
            &held
        };
        {
            let now = Instant::now();
            let now_ns = now.duration_since(base).as_nanos() as u64;
            let mut st = stats.borrow_mut();
            let st = &mut *st;
            parser.feed(data, |ev| match ev {
                Event::Data {
                    payload,
                    compressed,
                    ..
                } => {
                    st.total += 1;
                    let plain = match inflater.as_mut() {
                        Some(inf) if compressed => {
                            st.compressed += 1;
                            inf.inflate(payload).ok()
                        }
                        _ => Some(payload),
                    };
                    match plain.and_then(|p| find_ts(p, marker)) {
                        Some(ts) => {
                            if win.contains(now) {
                                st.in_window += 1;
                                st.hist.saturating_record(now_ns.saturating_sub(ts));
                            }
                        }
                        None => st.unparsed += 1,
                    }
                }
                Event::Ping(p) => wire::encode_frame(&mut ctl_out, OP_PONG, p, Some(MASK_KEY)),
                Event::Pong => {}
                Event::Close(_) => closed = true,
            })?;
        }
        if !ctl_out.is_empty() {
            s.write_all(&ctl_out).await?;
            ctl_out.clear();
        }
        held.clear();
        if closed {
            bail!("server closed the subscription");
        }
    }
}

/// The publisher negotiates what the subscribers do (its own copies come
/// compressed too) and publishes plain frames.
async fn open_publisher(
    target: &Target,
    init: Option<&str>,
    offer: Offer,
) -> anyhow::Result<TcpStream> {
    let (mut s, _left, _) = open(target, None, false, offer).await?;
    if let Some(init) = init {
        let mut f = Vec::new();
        let text = fill(init, 0, 0, 0, 0);
        wire::encode_frame(&mut f, OP_TEXT, text.as_bytes(), Some(MASK_KEY));
        s.write_all(&f).await?;
    }
    Ok(s)
}

async fn publish(
    s: TcpStream,
    a: &FanoutArgs,
    base: Instant,
    start: Instant,
    end: Instant,
    closed: Arc<AtomicU64>,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    // Drain whatever the server sends the publisher (acks, its own copies:
    // twice a subscriber's traffic) on a thread of its own, so that it
    // keeps up even when the subscribers' thread falls behind; otherwise
    // the server rightly cuts the publisher off as a slow consumer and the
    // figures measure the load tool. A close from the server is recorded
    // in `closed` (the close code), or the publishes written after it
    // would silently count as lost.
    let std = s.into_std()?;
    let reader = std.try_clone()?;
    let mut wr = TcpStream::from_std(std)?;
    std::thread::Builder::new()
        .name("wsload-publisher-drain".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(mut rd) = TcpStream::from_std(reader) else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                let mut parser = FrameParser::new(true);
                while let Ok(n) = rd.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut code = None;
                    let parsed = parser.feed(&buf[..n], |ev| {
                        if let Event::Close(p) = ev {
                            code = Some(p.get(..2).map_or(1, |c| u16::from_be_bytes([c[0], c[1]])));
                        }
                    });
                    if let Some(code) = code {
                        closed.store(u64::from(code), Ordering::Relaxed);
                    }
                    if parsed.is_err() || code.is_some() {
                        break;
                    }
                }
            });
        })?;
    tokio::time::sleep_until(start.into()).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut lag = new_hist();
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = (now.duration_since(start).as_secs_f64() * a.rate) as u64;
        out.clear();
        while seq < due {
            let sent = Instant::now();
            let due_at = start + Duration::from_secs_f64(seq as f64 / a.rate);
            lag.saturating_record(sent.saturating_duration_since(due_at).as_nanos() as u64);
            let ts = sent.duration_since(base).as_nanos() as u64;
            let text = fill(&a.publish_msg, 0, ts, seq, a.size);
            wire::encode_frame(&mut out, OP_TEXT, text.as_bytes(), Some(MASK_KEY));
            seq += 1;
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
        }
    }
    Ok((seq, lag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_and_ts() {
        assert_eq!(derive_marker(r#"{"ts":{ts}}"#).as_deref(), Some("ts"));
        assert_eq!(derive_marker("t={ts}").as_deref(), Some("t"));
        assert_eq!(find_ts(br#"{"results":1,"ts":123}"#, b"ts"), Some(123));
        assert_eq!(find_ts(br#"{"data":"{\"ts\":42}"}"#, b"ts"), Some(42));
        assert_eq!(find_ts(b"nothing", b"ts"), None);
    }

    #[test]
    fn rooms_share_the_subscribers() {
        assert_eq!(members(10, 1, 0), 10);
        assert_eq!(
            (0..3).map(|r| members(10, 3, r)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(in_room(r#"{"room":"r{room}"}"#, 7), r#"{"room":"r7"}"#);
    }

    #[test]
    fn fill_pads() {
        let s = fill(r#"{"ts":{ts},"p":"{pad}"}"#, 0, 5, 1, 40);
        assert_eq!(s.len(), 40);
        assert!(s.starts_with(r#"{"ts":5,"p":""#));
        assert!(
            s[13..38]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b' ')
        );
        assert_eq!(fill("{seq}", 0, 0, 7, 4), "7   ");
    }
}
