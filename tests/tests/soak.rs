//! Soak: a few hundred clients on each server runtime join rooms, publish
//! with unique ids and drop their connections at random (before a publish,
//! or between sending one and reading its ack), each time resuming with
//! `session` + `last_seq` and re-sending the unacknowledged publish. At the
//! end every client must have received every message of its rooms exactly
//! once and in order (per room and publisher), with no gap or repeat in its
//! session's `seq`.
//!
//! Bounded: every wait has a limit, and the whole test takes well under a
//! minute. Decisions (rooms, publish targets, when to drop) come from a
//! fixed-seed xorshift generator, so a run is reproducible up to thread
//! scheduling. Run with `--nocapture` to see the figures.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ws_async::Runtime;
use ws_server::server::{ServerConfig, Settings};
use ws_tests::hub_client::{HubClient, Recv, WAIT, metrics, sleep};
use ws_tests::*;

const CLIENTS: usize = 300;
const ROOMS: usize = 12;
const PUBLISHES_PER_CLIENT: u64 = 25;
/// Percent chance, before each publish, of dropping the connection.
const DROP_BEFORE_PUBLISH: u64 = 4;
/// Percent chance of dropping it right after sending a publish (so the ack
/// is lost and the publish is retried on the resumed session).
const DROP_MID_PUBLISH: u64 = 3;
/// Longest pause between two publishes of one client, milliseconds.
const MAX_PAUSE_MS: u64 = 60;
const SEED: u64 = 0x5eed_cafe_f00d_0001;
/// Bound on waiting for the last deliveries.
const SETTLE: Duration = Duration::from_secs(30);

/// xorshift64: enough randomness for choosing, no dependency.
struct XorShift(u64);

impl XorShift {
    /// A generator for `seed`, scrambled (splitmix64) so that close seeds
    /// give unrelated sequences.
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)).max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

fn room_name(r: usize) -> String {
    format!("room-{r}")
}

/// What all clients of one run share.
struct Run {
    addr: SocketAddr,
    /// Messages acknowledged per room.
    published: Vec<AtomicU64>,
    joined: AtomicUsize,
    done_publishing: AtomicUsize,
}

/// One client's outcome.
#[derive(Debug, Default)]
struct Report {
    /// Messages expected (every message of its rooms).
    expected: u64,
    /// Distinct messages received in order.
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    seq_gaps: u64,
    reconnects: u64,
    /// Reconnects because the connection ended under the client.
    lost_connections: u64,
    duplicate_acks: u64,
    problems: Vec<String>,
}

struct SoakClient<R: Runtime> {
    rt: R,
    idx: usize,
    run: Arc<Run>,
    rng: XorShift,
    rooms: Vec<usize>,
    hub: Option<HubClient<R>>,
    session: String,
    /// Highest `seq` processed.
    last_seq: u64,
    /// Next expected `n` per (room, publisher).
    next_n: HashMap<(u64, u64), u64>,
    report: Report,
}

impl<R: Runtime> SoakClient<R> {
    fn hub(&mut self) -> &mut HubClient<R> {
        self.hub.as_mut().expect("connected")
    }

    fn problem(&mut self, what: String) {
        if self.report.problems.len() < 5 {
            self.report
                .problems
                .push(format!("client {}: {what}", self.idx));
        }
    }

    /// Processes one message from the hub.
    fn handle(&mut self, v: &Value) {
        match v["type"].as_str() {
            Some("message") => {}
            Some("pong" | "ack") => return,
            _ => {
                self.problem(format!("unexpected {v}"));
                return;
            }
        }
        let seq = v["seq"].as_u64().unwrap_or(0);
        if seq <= self.last_seq {
            // The protocol says to ignore a seq already processed; after a
            // resume from `last_seq` none should come again.
            self.report.duplicates += 1;
            self.problem(format!("seq {seq} again after {}", self.last_seq));
            return;
        }
        if seq != self.last_seq + 1 {
            self.report.seq_gaps += 1;
            self.problem(format!("seq jumped from {} to {seq}", self.last_seq));
        }
        self.last_seq = seq;
        let data = &v["data"];
        let (Some(p), Some(r), Some(n)) =
            (data["p"].as_u64(), data["r"].as_u64(), data["n"].as_u64())
        else {
            self.problem(format!("bad message {v}"));
            return;
        };
        if v["room"] != room_name(r as usize).as_str() {
            self.problem(format!("room mismatch {v}"));
        }
        let next = self.next_n.entry((r, p)).or_insert(0);
        if n == *next {
            *next += 1;
            self.report.received += 1;
        } else if n < *next {
            self.report.duplicates += 1;
        } else {
            self.report.out_of_order += 1;
            *next = n + 1;
            self.report.received += 1;
        }
    }

    /// Connects, fresh or resuming the session.
    async fn connect(&mut self) {
        let target = if self.session.is_empty() {
            "/ws".to_owned()
        } else {
            format!("/ws?session={}&last_seq={}", self.session, self.last_seq)
        };
        let mut last_error = String::new();
        for _ in 0..20 {
            match HubClient::connect(self.rt.clone(), self.run.addr, &target).await {
                Ok(hub) => {
                    let resuming = !self.session.is_empty();
                    if resuming && hub.session() != self.session {
                        self.problem(format!("resume got session {}", hub.session()));
                    }
                    self.session = hub.session();
                    self.hub = Some(hub);
                    if resuming {
                        match self.hub().recv_within(WAIT).await {
                            Recv::Msg(v) if v["type"] == "resumed" => {}
                            other => self.problem(format!("resume failed: {other:?}")),
                        }
                    }
                    return;
                }
                Err(e) => {
                    last_error = e.to_string();
                    sleep(&self.rt, Duration::from_millis(50)).await;
                }
            }
        }
        panic!("client {}: cannot connect: {last_error}", self.idx);
    }

    /// Drops the connection without a close (a dead network) and resumes.
    async fn drop_and_resume(&mut self) {
        if let Some(hub) = self.hub.take() {
            hub.abort();
        }
        self.report.reconnects += 1;
        self.connect().await;
    }

    /// Processes what arrives until `deadline`; resumes if the server
    /// closes the connection.
    async fn pump_until(&mut self, deadline: Instant) {
        loop {
            let left = deadline.saturating_duration_since(self.rt.now());
            if left.is_zero() {
                return;
            }
            match self.hub().recv_within(left).await {
                Recv::Msg(v) => self.handle(&v),
                Recv::Timeout => return,
                Recv::Closed => {
                    self.report.lost_connections += 1;
                    self.drop_and_resume().await;
                }
            }
        }
    }

    /// Publishes message `n` of this client to room `r`, retrying the same
    /// id on a new connection until it is acknowledged.
    async fn publish(&mut self, r: usize, n: u64, id: &str) {
        let request = json!({"type": "publish", "room": room_name(r), "id": id,
            "data": {"p": self.idx, "r": r, "n": n}});
        'attempt: loop {
            if self.hub().send_json(&request).await.is_err() {
                self.report.lost_connections += 1;
                self.drop_and_resume().await;
                continue;
            }
            if self.rng.percent(DROP_MID_PUBLISH) {
                self.drop_and_resume().await;
                continue;
            }
            loop {
                match self.hub().recv_within(WAIT).await {
                    Recv::Msg(v)
                        if (v["type"] == "ack" || v["type"] == "nack") && v["id"] == id =>
                    {
                        if v["type"] == "nack" {
                            self.problem(format!("publish refused: {v}"));
                            return;
                        }
                        if v["duplicate"] == true {
                            self.report.duplicate_acks += 1;
                        }
                        self.run.published[r].fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Recv::Msg(v) => self.handle(&v),
                    Recv::Closed => {
                        self.report.lost_connections += 1;
                        self.drop_and_resume().await;
                        continue 'attempt;
                    }
                    Recv::Timeout => {
                        self.problem(format!("no ack for {id}"));
                        return;
                    }
                }
            }
        }
    }

    async fn run(mut self) -> Report {
        let step = Duration::from_millis(20);
        // Join, then wait for everyone, so that every message has a fixed
        // set of receivers.
        self.connect().await;
        for r in self.rooms.clone() {
            let reply = self.hub().join(&room_name(r)).await;
            if reply["type"] != "ack" {
                self.problem(format!("join refused: {reply}"));
            }
        }
        self.run.joined.fetch_add(1, Ordering::SeqCst);
        while self.run.joined.load(Ordering::SeqCst) < CLIENTS {
            let until = self.rt.now() + step;
            self.pump_until(until).await;
        }

        // Publish, dropping the connection now and then.
        let mut counters = [0u64; ROOMS];
        for k in 0..PUBLISHES_PER_CLIENT {
            let pause = Duration::from_millis(self.rng.below(MAX_PAUSE_MS));
            let until = self.rt.now() + pause;
            self.pump_until(until).await;
            if self.rng.percent(DROP_BEFORE_PUBLISH) {
                self.drop_and_resume().await;
            }
            let r = self.rooms[self.rng.below(self.rooms.len() as u64) as usize];
            let n = counters[r];
            counters[r] += 1;
            self.publish(r, n, &format!("c{}-{k}", self.idx)).await;
        }
        self.run.done_publishing.fetch_add(1, Ordering::SeqCst);
        while self.run.done_publishing.load(Ordering::SeqCst) < CLIENTS {
            let until = self.rt.now() + step;
            self.pump_until(until).await;
        }

        // Everything is acknowledged: wait for the rest to arrive, then make
        // sure nothing more (a duplicate) follows.
        self.report.expected = self
            .rooms
            .iter()
            .map(|&r| self.run.published[r].load(Ordering::SeqCst))
            .sum();
        let settle = self.rt.now() + SETTLE;
        while self.report.received < self.report.expected && self.rt.now() < settle {
            let until = (self.rt.now() + step * 5).min(settle);
            self.pump_until(until).await;
        }
        let rest = self.hub().barrier().await;
        for v in &rest {
            self.handle(v);
        }
        if let Some(hub) = self.hub.take() {
            hub.close().await;
        }
        self.report
    }
}

/// Totals of one run.
#[derive(Debug, Default)]
struct Summary {
    published: u64,
    expected: u64,
    received: u64,
    losses: u64,
    duplicates: u64,
    out_of_order: u64,
    seq_gaps: u64,
    reconnects: u64,
    lost_connections: u64,
    duplicate_acks: u64,
    problems: Vec<String>,
    duration: Duration,
}

async fn soak<R: Runtime>(rt: R, addr: SocketAddr, seed: u64) -> Summary {
    let start = rt.now();
    let run = Arc::new(Run {
        addr,
        published: (0..ROOMS).map(|_| AtomicU64::new(0)).collect(),
        joined: AtomicUsize::new(0),
        done_publishing: AtomicUsize::new(0),
    });
    let (tx, rx) = async_channel::unbounded();
    let mut seeder = XorShift::new(seed);
    for idx in 0..CLIENTS {
        let mut rng = XorShift::new(seeder.next());
        let mut rooms = vec![idx % ROOMS];
        if rng.percent(50) {
            rooms.push((idx + 1 + rng.below(ROOMS as u64 - 1) as usize) % ROOMS);
        }
        let client = SoakClient {
            rt: rt.clone(),
            idx,
            run: run.clone(),
            rng,
            rooms,
            hub: None,
            session: String::new(),
            last_seq: 0,
            next_n: HashMap::new(),
            report: Report::default(),
        };
        let tx = tx.clone();
        rt.spawn(async move {
            let _ = tx.send(client.run().await).await;
        });
    }
    drop(tx);
    let mut summary = Summary::default();
    let mut reports = 0;
    while let Ok(report) = rx.recv().await {
        reports += 1;
        summary.expected += report.expected;
        summary.received += report.received;
        summary.losses += report.expected.saturating_sub(report.received);
        summary.duplicates += report.duplicates;
        summary.out_of_order += report.out_of_order;
        summary.seq_gaps += report.seq_gaps;
        summary.reconnects += report.reconnects;
        summary.lost_connections += report.lost_connections;
        summary.duplicate_acks += report.duplicate_acks;
        summary.problems.extend(report.problems);
    }
    assert_eq!(reports, CLIENTS, "a client task failed (see its panic)");
    summary.published = run.published.iter().map(|p| p.load(Ordering::SeqCst)).sum();
    summary.duration = rt.now().duration_since(start);
    summary
}

#[test]
fn soak_clients_join_publish_and_reconnect_at_random() {
    let settings = Settings {
        // Well above what a client sends; the limit is not under test here.
        rate_per_sec: Some(10_000),
        rate_burst: Some(10_000),
        // Room for the messages a client misses while it reconnects.
        replay_max_messages: Some(1024),
        replay_max_bytes: Some(1 << 20),
        ..Settings::default()
    };
    let cfg = ServerConfig::from_settings(&settings).expect("settings");
    for (i, srv) in RUNTIMES.into_iter().enumerate() {
        let cli = RUNTIMES[(i + 1) % 2];
        let server = start_hub(srv, cfg.clone());
        let addr = server.addr;
        let seed = SEED + i as u64;
        let s = on_runtime!(cli, |rt| soak(rt, addr, seed));
        let m = metrics(addr);
        println!(
            "soak: server {srv:?}, clients {cli:?}: {CLIENTS} clients, {ROOMS} rooms, \
             {} messages published, {} deliveries expected, {} received, {:.1} s, \
             reconnects {} ({} closed under the client; resumes {}, duplicate acks {}), losses {}, duplicates {}, \
             out of order {}, seq gaps {}, slow-consumer disconnects {}",
            s.published,
            s.expected,
            s.received,
            s.duration.as_secs_f64(),
            s.reconnects,
            s.lost_connections,
            m["ws_resumes_total"],
            s.duplicate_acks,
            s.losses,
            s.duplicates,
            s.out_of_order,
            s.seq_gaps,
            m["ws_slow_consumer_disconnects_total"],
        );
        assert!(s.problems.is_empty(), "{srv:?}: {:#?}", s.problems);
        assert_eq!(s.published, CLIENTS as u64 * PUBLISHES_PER_CLIENT);
        assert_eq!(s.losses, 0, "{srv:?}");
        assert_eq!(s.duplicates, 0, "{srv:?}");
        assert_eq!(s.out_of_order, 0, "{srv:?}");
        assert_eq!(s.seq_gaps, 0, "{srv:?}");
        assert_eq!(s.received, s.expected, "{srv:?}");
        assert!(s.reconnects > 0, "the run exercised resume");
        assert_eq!(m["ws_resume_failures_total"], 0, "{srv:?}");
    }
}
