//! Redis chaos soak: two `serve` processes (the real binary of one
//! runtime, `ws-tokio` or `ws-smol`) share a real `redis-server` that the
//! test starts itself on a free loopback port. Clients on both nodes join
//! rooms (every room has members on both nodes), some of them publish with
//! unique ids, and every client records what it receives. Meanwhile the
//! test kills Redis (SIGKILL) and starts it again on the same port, and
//! restarts each node (SIGTERM, then a new process on the same port).
//!
//! The run is a sequence of phases, one chaos event each. In a phase the
//! publishers publish, the event happens, the test waits until both buses
//! are connected with every room subscribed, the publishers go on a
//! little, then stop; each node's first member of each room publishes a
//! marker, and the phase ends once every client has received the markers
//! of its room from both nodes (a node's bus messages arrive in the order
//! the node published them, so everything before a marker has arrived).
//! Then the test reads both nodes' `/metrics` (before a node is stopped,
//! too: a restarted node's counters start again from zero).
//!
//! Checked, all exact (a "member epoch" is one connection's membership,
//! from its join ack to its close):
//!
//! - every received message was published, once per client (no duplicate
//!   across a client's connections), in each publisher's order, with the
//!   session's `seq` going 1, 2, 3, ... without a gap;
//! - same node: every acknowledged publish reaches every member epoch on
//!   the publisher's node process that joined before it was sent and was
//!   open until the process stopped (SIGTERM closes with 1001 after what
//!   was queued) or the end;
//! - across nodes, in a phase without a node restart: every acknowledged
//!   publish reaches all of the other node's member epochs or none of them,
//!   and the number reaching none equals, per publishing node, the increase
//!   of `ws_bus_publish_dropped_total` (not handed to Redis, or not
//!   answered) plus the publishes Redis accepted while the other node was
//!   not subscribed: `2 x ws_bus_published_total -
//!   ws_bus_publish_receivers_total` (every room has subscribers on both
//!   nodes, so each accepted publish should reach two connections);
//! - across nodes, in a node restart phase: the stable node's members get
//!   every publish of the restarted node's new process, except exactly as
//!   many as it counted as dropped (its bus connects after its first
//!   clients are back); the restarted node's new members get every publish
//!   sent after its bus confirmed the subscriptions, and of the ones sent
//!   between their join and then may miss only a first run per publisher
//!   (a "head"); members of the stopped process, and the other node's
//!   members for the stopped process's publishes, may miss only a last run
//!   per publisher (a "tail": in flight when the process stopped); the
//!   latter must in fact be empty (the bus outlives the hub task);
//! - every client of a restarted node is closed with 1001, reconnects with
//!   its `session` and `last_seq`, gets `resume_failed` `unknown`, joins
//!   its room again and receives from then on;
//! - per node process and phase, every acknowledged publish is either
//!   published or dropped by the bus (`ws_bus_published_total +
//!   ws_bus_publish_dropped_total`), as is every message the hub handed to
//!   it (`ws_bus_out_total`), and nothing received was dropped
//!   (`ws_bus_received_dropped_total`).
//!
//! `chaos_light` (24 clients, one Redis kill, one node restart, both
//! runtimes, the debug binaries; a few seconds each) runs by default. The
//! full soak (300 clients, Redis killed three times, each node restarted
//! once) is `#[ignore]`d; run it with `scripts/chaos.sh` (release
//! binaries, both runtimes), which prints the figures for
//! docs/RELIABILITY.md.

// The clock paces publishers and bounds waits; the checks compare the
// order of events, never durations.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ws_async::Runtime;
use ws_tests::hub_client::{HubClient, Recv, sleep, token};
use ws_tests::redis::RedisServer;
use ws_tests::serve_process::ServeProcess;
use ws_tests::{Rt, on_runtime};

const SECRET: &str = "chaos-secret";
/// Bound on every wait of the controller and of a client.
const WAIT: Duration = Duration::from_secs(60);
/// A client's read when it has nothing else to wait for.
const IDLE_READ: Duration = Duration::from_secs(3600);
/// Between reconnection attempts to a node that is restarting.
const RECONNECT_STEP: Duration = Duration::from_millis(50);

/// One phase's chaos event.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    /// Nothing: the baseline.
    Calm,
    /// SIGKILL Redis, keep it down this long, start it on the same port.
    KillRedis(Duration),
    /// SIGTERM node 0 or 1, start it again on the same port.
    RestartNode(usize),
}

/// The shape of one run.
#[derive(Debug, Clone)]
struct Plan {
    rooms: usize,
    /// Members of each room on each node.
    members: usize,
    /// Of those, how many publish.
    publishers: usize,
    /// Between two publishes of one publisher.
    interval: Duration,
    /// Publishing before the event.
    lead: Duration,
    /// Publishing after the recovery.
    tail: Duration,
    events: Vec<Event>,
}

impl Plan {
    fn clients(&self) -> usize {
        2 * self.rooms * self.members
    }

    /// (node, room, rank in the room on that node) of client `idx`.
    fn place(&self, idx: usize) -> (usize, usize, usize) {
        let per_node = self.rooms * self.members;
        let (node, rest) = (idx / per_node, idx % per_node);
        (node, rest / self.members, rest % self.members)
    }

    fn is_publisher(&self, idx: usize) -> bool {
        self.place(idx).2 < self.publishers
    }
}

fn room_name(r: usize) -> String {
    format!("room-{r}")
}

/// What the controller and the clients share.
struct Shared {
    plan: Plan,
    addrs: [SocketAddr; 2],
    /// Process generation of each node (bumped before a restart).
    generation: [AtomicU32; 2],
    /// The current phase (changed only while nobody publishes).
    phase: AtomicU32,
}

/// From the controller to one client.
enum Cmd {
    /// Start publishing.
    Start,
    /// Stop publishing; answer once every publish sent is answered (or its
    /// connection is gone).
    Stop(mpsc::Sender<()>),
    /// Publish one more and answer its `n` once acknowledged.
    Marker(mpsc::Sender<(usize, u32)>),
    /// Answer once these (publisher, n) have been received.
    AwaitMarkers(Vec<(usize, u32)>, mpsc::Sender<()>),
    /// Close and return the log.
    Finish,
}

/// From a client to the controller.
enum Note {
    /// Connected and joined for the first time.
    Ready,
    /// Joined again after its node restarted.
    Rejoined(usize),
}

/// One publish.
#[derive(Debug, Clone)]
struct Sent {
    phase: u32,
    generation: u32,
    at: Instant,
    acked: bool,
}

/// One connection's membership.
#[derive(Debug)]
struct Epoch {
    generation: u32,
    joined: Instant,
    /// When the connection ended, and its close code.
    ended: Option<(Instant, u16)>,
    /// The `resume_failed` reason that began it (none for the first).
    resume: Option<String>,
    /// (publisher, n, seq) in arrival order.
    got: Vec<(usize, u32, u64)>,
}

#[derive(Debug)]
struct Log {
    idx: usize,
    sent: Vec<Sent>,
    epochs: Vec<Epoch>,
    problems: Vec<String>,
}

struct Client<R: Runtime> {
    rt: R,
    idx: usize,
    node: usize,
    room: String,
    shared: Arc<Shared>,
    notes: mpsc::Sender<Note>,
    hub: HubClient<R>,
    log: Log,
    /// Sent and not answered yet.
    pending: HashSet<u32>,
    stop_reply: Option<mpsc::Sender<()>>,
    marker_reply: Option<(u32, mpsc::Sender<(usize, u32)>)>,
    awaiting: Option<Awaiting>,
}

/// Markers still to receive, and whom to tell.
type Awaiting = (HashSet<(usize, u32)>, mpsc::Sender<()>);

enum Wake {
    Cmd(Option<Cmd>),
    Read(Recv),
    Tick,
}

impl<R: Runtime> Client<R> {
    fn problem(&mut self, what: String) {
        if self.log.problems.len() < 10 {
            self.log
                .problems
                .push(format!("client {}: {what}", self.idx));
        }
    }

    async fn open(rt: &R, shared: &Shared, node: usize, target: &str) -> Option<HubClient<R>> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(hub) = HubClient::connect(rt.clone(), shared.addrs[node], target).await {
                return Some(hub);
            }
            sleep(rt, RECONNECT_STEP).await;
        }
        None
    }

    /// Joins the room; a new epoch begins at the ack.
    async fn join(&mut self, resume: Option<String>) {
        let generation = self.shared.generation[self.node].load(Ordering::SeqCst);
        let room = self.room.clone();
        let reply = self.hub.join(&room).await;
        if reply["type"] != "ack" {
            self.problem(format!("join {room}: {reply}"));
        }
        self.log.epochs.push(Epoch {
            generation,
            joined: Instant::now(),
            ended: None,
            resume,
            got: Vec::new(),
        });
    }

    async fn run(mut self, cmds: async_channel::Receiver<Cmd>) -> Log {
        self.join(None).await;
        let _ = self.notes.send(Note::Ready);
        let interval = self.shared.plan.interval;
        let mut publishing = false;
        let mut next_tick = Instant::now();
        loop {
            let wake = {
                let (hub, rt) = (&mut self.hub, &self.rt);
                let cmd = async { Wake::Cmd(cmds.recv().await.ok()) };
                let read = async { Wake::Read(hub.recv_within(IDLE_READ).await) };
                let tick = async {
                    if publishing {
                        rt.sleep_until(next_tick).await;
                        Wake::Tick
                    } else {
                        futures_lite::future::pending().await
                    }
                };
                futures_lite::future::or(cmd, futures_lite::future::or(read, tick)).await
            };
            match wake {
                Wake::Cmd(Some(Cmd::Start)) => {
                    publishing = true;
                    // Spread the publishers over the interval.
                    let offset = interval.as_micros() as u64 * (self.idx as u64 % 97) / 97;
                    next_tick = Instant::now() + Duration::from_micros(offset);
                }
                Wake::Cmd(Some(Cmd::Stop(reply))) => {
                    publishing = false;
                    self.stop_reply = Some(reply);
                    self.check_stopped();
                }
                Wake::Cmd(Some(Cmd::Marker(reply))) => {
                    let n = self.publish().await;
                    self.marker_reply = Some((n, reply));
                }
                Wake::Cmd(Some(Cmd::AwaitMarkers(markers, reply))) => {
                    let got: HashSet<(usize, u32)> = self
                        .log
                        .epochs
                        .last()
                        .map(|e| e.got.iter().map(|&(p, n, _)| (p, n)).collect())
                        .unwrap_or_default();
                    let left: HashSet<_> =
                        markers.into_iter().filter(|m| !got.contains(m)).collect();
                    if left.is_empty() {
                        let _ = reply.send(());
                    } else {
                        self.awaiting = Some((left, reply));
                    }
                }
                Wake::Cmd(Some(Cmd::Finish) | None) => break,
                Wake::Tick => {
                    self.publish().await;
                    next_tick += interval;
                }
                Wake::Read(Recv::Msg(v)) => self.handle(&v),
                Wake::Read(Recv::Timeout) => {}
                Wake::Read(Recv::Closed) => {
                    if !self.reconnect().await {
                        break;
                    }
                }
            }
        }
        self.hub.close().await;
        self.log
    }

    /// Sends the next publish; returns its `n`.
    async fn publish(&mut self) -> u32 {
        let n = self.log.sent.len() as u32;
        let generation = self.log.epochs.last().map_or(0, |e| e.generation);
        self.log.sent.push(Sent {
            phase: self.shared.phase.load(Ordering::SeqCst),
            generation,
            at: Instant::now(),
            acked: false,
        });
        self.pending.insert(n);
        let request = json!({"type": "publish", "room": self.room, "id": format!("{}.{n}", self.idx), "data": {"n": n}});
        // A failed send shows as a closed connection on the next read.
        let _ = self.hub.send_json(&request).await;
        n
    }

    fn check_stopped(&mut self) {
        if self.pending.is_empty()
            && let Some(reply) = self.stop_reply.take()
        {
            let _ = reply.send(());
        }
    }

    fn handle(&mut self, v: &Value) {
        match v["type"].as_str() {
            Some("message") => self.received(v),
            Some("ack") if v["op"] == "publish" => {
                let Some(n) = own_n(v, self.idx) else {
                    self.problem(format!("ack of someone else's publish: {v}"));
                    return;
                };
                if v["duplicate"] == true {
                    self.problem(format!("publish acked as a duplicate: {v}"));
                }
                if let Some(sent) = self.log.sent.get_mut(n as usize) {
                    sent.acked = true;
                }
                self.pending.remove(&n);
                if self.marker_reply.as_ref().is_some_and(|(m, _)| *m == n)
                    && let Some((m, reply)) = self.marker_reply.take()
                {
                    let _ = reply.send((self.idx, m));
                }
                self.check_stopped();
            }
            Some("pong" | "presence") => {}
            _ => self.problem(format!("unexpected {v}")),
        }
    }

    fn received(&mut self, v: &Value) {
        let (Some(seq), Some((p, n))) = (v["seq"].as_u64(), parse_id(v["id"].as_str())) else {
            self.problem(format!("bad message {v}"));
            return;
        };
        if v["room"] != self.room.as_str() {
            self.problem(format!("message of another room: {v}"));
        }
        let Some(epoch) = self.log.epochs.last_mut() else {
            return;
        };
        epoch.got.push((p, n, seq));
        if let Some((left, _)) = &mut self.awaiting {
            left.remove(&(p, n));
            if left.is_empty()
                && let Some((_, reply)) = self.awaiting.take()
            {
                let _ = reply.send(());
            }
        }
    }

    /// After the node closed the connection: resume (which must fail:
    /// the node restarted), join again. False if the node never came back.
    async fn reconnect(&mut self) -> bool {
        let code = self.hub.close_info().map_or(1006, |c| c.code.0);
        if let Some(epoch) = self.log.epochs.last_mut() {
            epoch.ended = Some((Instant::now(), code));
        }
        if code != 1001 {
            self.problem(format!("connection closed with {code}, not 1001"));
        }
        // Publishes not answered are not acknowledged: they count nowhere.
        self.pending.clear();
        self.check_stopped();
        let target = format!(
            "/ws?token={}&session={}&last_seq={}",
            token(SECRET, &format!("c{}", self.idx)),
            self.hub.session(),
            self.hub.last_seq()
        );
        let Some(hub) = Self::open(&self.rt, &self.shared, self.node, &target).await else {
            self.problem("the node did not come back".to_owned());
            return false;
        };
        self.hub = hub;
        let reason = match self.hub.next().await {
            v if v["type"] == "resume_failed" => v["reason"].as_str().unwrap_or("").to_owned(),
            other => {
                self.problem(format!("resume after a restart answered {other}"));
                String::new()
            }
        };
        self.join(Some(reason)).await;
        let _ = self.notes.send(Note::Rejoined(self.idx));
        true
    }
}

/// `"<publisher>.<n>"`.
fn parse_id(id: Option<&str>) -> Option<(usize, u32)> {
    let (p, n) = id?.split_once('.')?;
    Some((p.parse().ok()?, n.parse().ok()?))
}

/// The `n` of an ack for one of client `idx`'s publishes.
fn own_n(v: &Value, idx: usize) -> Option<u32> {
    parse_id(v["id"].as_str()).and_then(|(p, n)| (p == idx).then_some(n))
}

/// Connects every client, runs them until told to finish, and returns
/// their logs (in client order).
async fn run_clients<R: Runtime>(
    rt: R,
    shared: Arc<Shared>,
    cmds: Vec<async_channel::Receiver<Cmd>>,
    notes: mpsc::Sender<Note>,
) -> Vec<Log> {
    let (done_tx, done_rx) = async_channel::unbounded();
    for (idx, cmds) in cmds.into_iter().enumerate() {
        let (rt2, shared, notes, done) =
            (rt.clone(), shared.clone(), notes.clone(), done_tx.clone());
        rt.spawn(async move {
            let (node, room, _) = shared.plan.place(idx);
            let target = format!("/ws?token={}", token(SECRET, &format!("c{idx}")));
            let Some(hub) = Client::open(&rt2, &shared, node, &target).await else {
                panic!("client {idx} cannot connect");
            };
            let client = Client {
                rt: rt2,
                idx,
                node,
                room: room_name(room),
                shared,
                notes,
                hub,
                log: Log {
                    idx,
                    sent: Vec::new(),
                    epochs: Vec::new(),
                    problems: Vec::new(),
                },
                pending: HashSet::new(),
                stop_reply: None,
                marker_reply: None,
                awaiting: None,
            };
            let _ = done.send(client.run(cmds).await).await;
        });
    }
    drop(done_tx);
    let mut logs = Vec::new();
    while let Ok(log) = done_rx.recv().await {
        logs.push(log);
    }
    logs.sort_by_key(|l| l.idx);
    logs
}

/// What the controller saw of one phase.
#[derive(Debug, Clone)]
struct PhaseRecord {
    event: Event,
    start: Instant,
    /// Both buses connected with every room subscribed again.
    ready: Instant,
    end: Instant,
    /// `/metrics` of each node: before the phase (of the process running
    /// then), just before a restarted node was stopped, and at the end.
    before: [Metrics; 2],
    before_stop: Option<Metrics>,
    /// When the restarted node was sent SIGTERM.
    stopped_at: Option<Instant>,
    after: [Metrics; 2],
}

type Metrics = HashMap<String, u64>;

fn delta(after: &Metrics, before: &Metrics, name: &str) -> u64 {
    let (a, b) = (
        after.get(name).copied().unwrap_or(0),
        before.get(name).copied().unwrap_or(0),
    );
    assert!(a >= b, "{name} went down from {b} to {a}");
    a - b
}

/// Waits (bounded) until both nodes' buses are connected and subscribed
/// to every room plus the global channel.
fn wait_buses(nodes: &[ServeProcess; 2], rooms: usize) {
    let deadline = Instant::now() + WAIT;
    for node in nodes {
        loop {
            let m = node.metrics();
            let connected = m.get("ws_bus_connected").copied() == Some(1);
            let subs = m.get("ws_bus_subscriptions").copied().unwrap_or(0);
            if connected && subs == rooms as u64 + 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: bus connected {connected}, {subs} subscriptions",
                node.addr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn recv_n<T>(rx: &mpsc::Receiver<T>, n: usize, what: &str) -> Vec<T> {
    let deadline = Instant::now() + WAIT;
    (0..n)
        .map(|i| {
            let left = deadline.saturating_duration_since(Instant::now());
            rx.recv_timeout(left)
                .unwrap_or_else(|e| panic!("{what}: {i} of {n} after {WAIT:?} ({e})"))
        })
        .collect()
}

/// Where, around a node restart, a first or last run may be missing.
#[derive(Debug, Clone, Copy)]
enum Window {
    TailIn,
    TailOut,
    Head,
}

/// The figures of one run.
#[derive(Debug, Default)]
struct Figures {
    clients: usize,
    publishes: u64,
    acked: u64,
    deliveries: u64,
    checked_same: u64,
    checked_cross: u64,
    redis_kills: u64,
    node_restarts: u64,
    dropped: u64,
    unheard: u64,
    missing: u64,
    /// Publishes of the stable node missed at the end by members of a
    /// node being stopped (sent before their 1001).
    tail_in: HashSet<(usize, u32)>,
    /// Publishes acknowledged by a node being stopped that never reached
    /// the other node.
    tail_out: HashSet<(usize, u32)>,
    /// Of those, sent before the SIGTERM.
    tail_out_before_sigterm: HashSet<(usize, u32)>,
    /// Publishes acknowledged by a node being stopped, in its last phase.
    stopped_acked: HashSet<(usize, u32)>,
    /// Publishes sent after a restarted node's members joined again but
    /// before its bus confirmed their rooms, missed by them.
    head: HashSet<(usize, u32)>,
    resume_failed: u64,
    secs: f64,
}

/// Runs `plan` against two `bin` nodes with clients on `client_rt`.
fn soak(bin: &'static str, client_rt: Rt, plan: Plan) -> Figures {
    ws_tests::serve_process::bin_dir();
    let started = Instant::now();
    let mut redis = RedisServer::start();
    let url = redis.url();
    let node = |id: &str| {
        ServeProcess::start(
            bin,
            &[
                "--threads",
                "2",
                "--redis",
                &url,
                "--node-id",
                id,
                "--auth-secret",
                SECRET,
                "--shutdown-grace-ms",
                "20000",
            ],
        )
    };
    let mut nodes = [node("node-a"), node("node-b")];
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        addrs: [nodes[0].addr(), nodes[1].addr()],
        generation: [AtomicU32::new(0), AtomicU32::new(0)],
        phase: AtomicU32::new(0),
    });
    let n = plan.clients();
    let (cmd_txs, cmd_rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| async_channel::unbounded()).unzip();
    let (notes_tx, notes) = mpsc::channel();
    let clients = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            on_runtime!(client_rt, |rt| run_clients(rt, shared, cmd_rxs, notes_tx))
        })
    };
    let ready = recv_n(&notes, n, "clients ready");
    assert!(ready.iter().all(|n| matches!(n, Note::Ready)));
    wait_buses(&nodes, plan.rooms);
    let send = |idx: usize, cmd: Cmd| {
        cmd_txs[idx]
            .try_send(cmd)
            .unwrap_or_else(|_| panic!("client {idx} is gone"));
    };
    let publishers: Vec<usize> = (0..n).filter(|&i| plan.is_publisher(i)).collect();
    let mut phases = Vec::new();
    let mut events = vec![Event::Calm];
    events.extend(plan.events.iter().copied());
    for (phase, &event) in events.iter().enumerate() {
        shared.phase.store(phase as u32, Ordering::SeqCst);
        let before = [nodes[0].metrics(), nodes[1].metrics()];
        let start = Instant::now();
        for &p in &publishers {
            send(p, Cmd::Start);
        }
        std::thread::sleep(plan.lead);
        let mut before_stop = None;
        let mut stopped_at = None;
        match event {
            Event::Calm => {}
            Event::KillRedis(down) => {
                redis.stop();
                std::thread::sleep(down);
                redis.restart();
            }
            Event::RestartNode(x) => {
                before_stop = Some(nodes[x].metrics());
                stopped_at = Some(Instant::now());
                shared.generation[x].fetch_add(1, Ordering::SeqCst);
                let status = nodes[x].terminate();
                assert!(status.success(), "{bin} node {x} exited with {status}");
                nodes[x].restart();
                let members = plan.rooms * plan.members;
                let back = recv_n(&notes, members, "clients back after a restart");
                assert!(
                    back.iter()
                        .all(|n| matches!(n, Note::Rejoined(i) if plan.place(*i).0 == x))
                );
            }
        }
        wait_buses(&nodes, plan.rooms);
        let ready = Instant::now();
        std::thread::sleep(plan.tail);
        let (tx, rx) = mpsc::channel();
        for &p in &publishers {
            send(p, Cmd::Stop(tx.clone()));
        }
        recv_n(&rx, publishers.len(), "publishers stopped");
        // Markers: the first member of each room on each node.
        let (tx, rx) = mpsc::channel();
        let markers: Vec<usize> = (0..n).filter(|&i| plan.place(i).2 == 0).collect();
        for &m in &markers {
            send(m, Cmd::Marker(tx.clone()));
        }
        let sent = recv_n(&rx, markers.len(), "markers acknowledged");
        let (tx, rx) = mpsc::channel();
        for idx in 0..n {
            let room = plan.place(idx).1;
            let mine = sent
                .iter()
                .copied()
                .filter(|&(p, _)| plan.place(p).1 == room)
                .collect();
            send(idx, Cmd::AwaitMarkers(mine, tx.clone()));
        }
        recv_n(&rx, n, "markers received");
        phases.push(PhaseRecord {
            event,
            start,
            ready,
            end: Instant::now(),
            before,
            before_stop,
            stopped_at,
            after: [nodes[0].metrics(), nodes[1].metrics()],
        });
    }
    for idx in 0..n {
        send(idx, Cmd::Finish);
    }
    let logs = clients.join().expect("client thread");
    for node in &mut nodes {
        node.terminate();
    }
    drop(redis);
    let mut figures = check(&plan, &phases, &logs);
    figures.secs = started.elapsed().as_secs_f64();
    figures
}

/// How the `expected` publishes (in order) are missing from `got`: a first
/// run and a last run (`Some((first, last))`), none received (`None`), or
/// `Err` with the first one missing between two received ones.
fn runs(expected: &[u32], got: &HashSet<u32>) -> Result<Option<(u64, u64)>, u32> {
    let first = expected.iter().position(|n| got.contains(n));
    let last = expected.iter().rposition(|n| got.contains(n));
    match (first, last) {
        (Some(f), Some(l)) => match expected[f..=l].iter().find(|n| !got.contains(n)) {
            Some(&gap) => Err(gap),
            None => Ok(Some((f as u64, (expected.len() - 1 - l) as u64))),
        },
        _ => Ok(None),
    }
}

/// Every check of the module docs; panics with the problems found.
fn check(plan: &Plan, phases: &[PhaseRecord], logs: &[Log]) -> Figures {
    let mut problems: Vec<String> = logs.iter().flat_map(|l| l.problems.clone()).collect();
    let mut f = Figures {
        clients: logs.len(),
        ..Figures::default()
    };
    let phase_of_restart = |x: usize| phases.iter().position(|p| p.event == Event::RestartNode(x));
    // Per client: no duplicate, per-publisher order, seq without gaps;
    // each epoch's received set.
    let mut got: Vec<Vec<HashSet<(usize, u32)>>> = Vec::new();
    for log in logs {
        let mut all = HashSet::new();
        let mut sets = Vec::new();
        for (k, epoch) in log.epochs.iter().enumerate() {
            let mut last_n: HashMap<usize, u32> = HashMap::new();
            let mut set = HashSet::new();
            for (i, &(p, n, seq)) in epoch.got.iter().enumerate() {
                f.deliveries += 1;
                if seq != i as u64 + 1 {
                    problems.push(format!(
                        "client {} epoch {k}: seq {seq} at {}",
                        log.idx,
                        i + 1
                    ));
                }
                if !all.insert((p, n)) {
                    problems.push(format!("client {}: {p}.{n} twice", log.idx));
                }
                if last_n.insert(p, n).is_some_and(|before| before >= n) {
                    problems.push(format!("client {}: {p}.{n} out of order", log.idx));
                }
                if logs.get(p).is_none_or(|l| l.sent.len() <= n as usize) {
                    problems.push(format!("client {}: {p}.{n} was never sent", log.idx));
                }
                set.insert((p, n));
            }
            sets.push(set);
        }
        // Clients of a restarted node: closed 1001, resume_failed unknown,
        // joined again and received since.
        let (node, _, _) = plan.place(log.idx);
        let restarts = usize::from(phase_of_restart(node).is_some());
        if log.epochs.len() != 1 + restarts {
            problems.push(format!(
                "client {}: {} connections",
                log.idx,
                log.epochs.len()
            ));
        }
        for epoch in &log.epochs[1..] {
            f.resume_failed += 1;
            if epoch.resume.as_deref() != Some("unknown") {
                problems.push(format!(
                    "client {}: resume answered {:?}",
                    log.idx, epoch.resume
                ));
            }
            if epoch.got.is_empty() {
                problems.push(format!("client {}: nothing received after resync", log.idx));
            }
        }
        got.push(sets);
    }

    // Expected deliveries, per publish.
    let mut missing = vec![[0u64; 2]; phases.len()];
    let mut acked_by = vec![[[0u64; 2]; 2]; phases.len()]; // [phase][node][new process?]
    for (p, log) in logs.iter().enumerate() {
        let (node, room, _) = plan.place(p);
        for (n, sent) in log.sent.iter().enumerate() {
            f.publishes += 1;
            if !sent.acked {
                continue;
            }
            f.acked += 1;
            let n = n as u32;
            let phase = sent.phase as usize;
            let record = &phases[phase];
            let restarted_here = match record.event {
                Event::RestartNode(x) => Some(x),
                _ => None,
            };
            let new_process = restarted_here == Some(node)
                && sent.generation > 0
                && phase_of_restart(node) == Some(phase);
            acked_by[phase][node][usize::from(new_process)] += 1;
            let mut reached = 0;
            let mut counted = 0;
            for (c, clog) in logs.iter().enumerate() {
                let (cnode, croom, _) = plan.place(c);
                if croom != room {
                    continue;
                }
                for (k, epoch) in clog.epochs.iter().enumerate() {
                    let has = got[c][k].contains(&(p, n));
                    if cnode == node {
                        // Same node: same process, joined before the send.
                        if epoch.generation == sent.generation && epoch.joined < sent.at {
                            f.checked_same += 1;
                            if !has {
                                problems.push(format!("same node: {p}.{n} (phase {phase}) missing at client {c} epoch {k}"));
                            }
                        }
                        continue;
                    }
                    if restarted_here.is_none() {
                        // Across nodes, no restart: all or none of the
                        // member epochs that span the phase.
                        if epoch.joined < record.start
                            && epoch.ended.is_none_or(|(t, _)| t > record.end)
                        {
                            counted += 1;
                            reached += u64::from(has);
                        }
                        continue;
                    }
                    let x = restarted_here.unwrap_or(0);
                    if cnode == x {
                        // Receiver on the restarted node.
                        // Its stopped process's members: tails, below.
                        // Its new members: everything sent after the bus
                        // confirmed the subscriptions (before: heads).
                        if k > 0 && epoch.joined < sent.at && sent.at > record.ready {
                            f.checked_cross += 1;
                            if !has {
                                problems.push(format!(
                                    "cross node after resubscription: {p}.{n} missing at client {c}"
                                ));
                            }
                        }
                    } else {
                        // Receiver on the stable node, publisher restarted.
                        if new_process
                            && epoch.joined < record.start
                            && epoch.ended.is_none_or(|(t, _)| t > record.end)
                        {
                            counted += 1;
                            reached += u64::from(has);
                        }
                    }
                }
            }
            if counted > 0 {
                f.checked_cross += counted;
                if reached == 0 {
                    missing[phase][node] += 1;
                } else if reached != counted {
                    problems.push(format!("cross node: {p}.{n} (phase {phase}) reached {reached} of {counted} member epochs"));
                }
            }
        }
    }

    // Heads and tails around restarts: per (publisher, receiving epoch),
    // only a first or last run of what it could have received is missing.
    for (x, phase) in (0..2).filter_map(|x| phase_of_restart(x).map(|ph| (x, ph))) {
        for (c, clog) in logs.iter().enumerate() {
            let (cnode, croom, _) = plan.place(c);
            for (k, epoch) in clog.epochs.iter().enumerate() {
                for (p, plog) in logs.iter().enumerate() {
                    let (pnode, proom, _) = plan.place(p);
                    if proom != croom || pnode == cnode {
                        continue;
                    }
                    // Publishes of this phase this epoch could have got:
                    // receiver restarted (old epoch: tail; new epoch: head
                    // up to `ready`), or publisher's old process (tail).
                    // (Each node restarts once: its first process is
                    // generation 0, its first connection epoch 0.)
                    let ready = phases[phase].ready;
                    // (after, until, whether a tail): what was sent in
                    // between could have reached this epoch.
                    let record = &phases[phase];
                    let ended = epoch.ended.map(|(t, _)| t);
                    let spans = epoch.joined < record.start && ended.is_none_or(|t| t > record.end);
                    let (after, until, kind) = if cnode == x
                        && ended.is_some_and(|t| t > record.start && t < record.end)
                    {
                        (Some(epoch.joined), ended, Window::TailIn)
                    } else if cnode == x && epoch.joined > record.start {
                        (Some(epoch.joined), Some(ready), Window::Head)
                    } else if pnode == x && spans {
                        (None, None, Window::TailOut)
                    } else {
                        continue;
                    };
                    let pick = |s: &Sent| {
                        after.is_none_or(|t| s.at > t)
                            && until.is_none_or(|t| s.at <= t)
                            && (pnode != x || cnode == x || s.generation == 0)
                    };
                    let expected: Vec<u32> = plog
                        .sent
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.acked && s.phase as usize == phase && pick(s))
                        .map(|(n, _)| n as u32)
                        .collect();
                    if expected.is_empty() {
                        continue;
                    }
                    let have: HashSet<u32> = got[c][k]
                        .iter()
                        .filter(|(q, _)| *q == p)
                        .map(|&(_, n)| n)
                        .collect();
                    let lost = match (runs(&expected, &have), kind) {
                        (Err(gap), _) => {
                            problems.push(format!("restart phase {phase}: {p}.{gap} missing at client {c} epoch {k} between received ones"));
                            &expected[..0]
                        }
                        (Ok(None), _) => &expected[..],
                        (Ok(Some((0, tail))), Window::TailIn | Window::TailOut) => {
                            &expected[expected.len() - tail as usize..]
                        }
                        (Ok(Some((head, 0))), Window::Head) => &expected[..head as usize],
                        (Ok(Some((head, tail))), _) => {
                            problems.push(format!("restart phase {phase} ({kind:?}): client {c} epoch {k} missed the first {head} and the last {tail} of {p}'s publishes"));
                            &expected[..0]
                        }
                    };
                    let set = match kind {
                        Window::TailIn => &mut f.tail_in,
                        Window::TailOut => &mut f.tail_out,
                        Window::Head => &mut f.head,
                    };
                    set.extend(lost.iter().map(|&n| (p, n)));
                    if matches!(kind, Window::TailOut) {
                        f.stopped_acked.extend(expected.iter().map(|&n| (p, n)));
                        let sigterm = record.stopped_at.unwrap_or(record.end);
                        f.tail_out_before_sigterm.extend(
                            lost.iter()
                                .filter(|&&n| plog.sent[n as usize].at < sigterm)
                                .map(|&n| (p, n)),
                        );
                    }
                }
            }
        }
    }

    // A stopping node keeps its bus until its hub task has ended, so every
    // publish it acknowledged reaches the other node's stable members.
    if !f.tail_out.is_empty() {
        problems.push(format!(
            "{} publishes acknowledged by a stopping node never reached the other node: {:?}",
            f.tail_out.len(),
            f.tail_out.iter().take(5).collect::<Vec<_>>()
        ));
    }

    // Counters, per phase and node process.
    for (phase, record) in phases.iter().enumerate() {
        for node in 0..2 {
            let restarted = record.event == Event::RestartNode(node);
            let before = if restarted {
                Metrics::new()
            } else {
                record.before[node].clone()
            };
            let after = &record.after[node];
            let published = delta(after, &before, "ws_bus_published_total");
            let dropped = delta(after, &before, "ws_bus_publish_dropped_total");
            let receivers = delta(after, &before, "ws_bus_publish_receivers_total");
            let bus_out = delta(after, &before, "ws_bus_out_total");
            let received_dropped = delta(after, &before, "ws_bus_received_dropped_total");
            let acked = acked_by[phase][node][usize::from(restarted)];
            let what = format!("phase {phase} ({:?}) node {node}", record.event);
            if received_dropped != 0 {
                problems.push(format!(
                    "{what}: {received_dropped} received messages dropped"
                ));
            }
            if published + dropped != acked || bus_out != acked {
                problems.push(format!("{what}: {acked} acknowledged, hub handed {bus_out} to the bus, {published} published + {dropped} dropped"));
            }
            if let Some(stopped) = &record.before_stop
                && restarted
                && delta(
                    stopped,
                    &record.before[node],
                    "ws_bus_publish_dropped_total",
                ) != 0
            {
                problems.push(format!("{what}: drops while Redis was up"));
            }
            let unheard = match record.event {
                Event::RestartNode(_) => 0,
                _ => (2 * published).checked_sub(receivers).unwrap_or_else(|| {
                    problems.push(format!(
                        "{what}: {receivers} receivers for {published} publishes"
                    ));
                    0
                }),
            };
            let lost = missing[phase][node];
            f.dropped += dropped;
            f.unheard += unheard;
            f.missing += lost;
            if lost != dropped + unheard {
                problems.push(format!("{what}: {lost} publishes missing on the other node, counted {dropped} dropped + {unheard} unheard"));
            }
            println!(
                "PHASE {what}: acked {acked}, published {published}, dropped {dropped}, unheard {unheard}, missing {lost}, ready after {:.2} s, took {:.2} s",
                (record.ready - record.start).as_secs_f64(),
                (record.end - record.start).as_secs_f64()
            );
        }
        match record.event {
            Event::KillRedis(_) => f.redis_kills += 1,
            Event::RestartNode(_) => f.node_restarts += 1,
            Event::Calm => {}
        }
    }
    if !problems.is_empty() {
        // Up to five of each kind (the text before the first colon).
        let mut shown: HashMap<&str, usize> = HashMap::new();
        let sample: Vec<&str> = problems
            .iter()
            .filter(|p| {
                let kind = shown.entry(p.split(':').next().unwrap_or("")).or_default();
                *kind += 1;
                *kind <= 5
            })
            .map(String::as_str)
            .take(60)
            .collect();
        panic!(
            "{} problems, for example:\n{}",
            problems.len(),
            sample.join("\n")
        );
    }
    f
}

fn full_plan() -> Plan {
    Plan {
        rooms: 10,
        members: 15,
        publishers: 5,
        interval: Duration::from_millis(250),
        lead: Duration::from_secs(1),
        tail: Duration::from_secs(1),
        events: vec![
            Event::KillRedis(Duration::from_millis(500)),
            Event::RestartNode(0),
            Event::KillRedis(Duration::from_millis(1500)),
            Event::RestartNode(1),
            Event::KillRedis(Duration::from_secs(3)),
        ],
    }
}

fn light_plan() -> Plan {
    Plan {
        rooms: 3,
        members: 4,
        publishers: 2,
        interval: Duration::from_millis(50),
        lead: Duration::from_millis(500),
        tail: Duration::from_millis(300),
        events: vec![
            Event::KillRedis(Duration::from_millis(300)),
            Event::RestartNode(0),
        ],
    }
}

fn report(bin: &str, plan: &Plan, f: &Figures) {
    println!(
        "FIGURE chaos {bin}: {} clients, {} rooms, {:.1} s; publishes {} (acked {}), deliveries {}, checked same-node {} cross-node {}; redis kills {}, node restarts {}; cross-node missing {} = dropped {} + unheard {}; around restarts missed: at the stopped node's members {}, from the stopped node {} of {} it acknowledged in its last phase ({} sent before its SIGTERM), at the restarted node's members before resubscription {}; resume_failed {}",
        f.clients,
        plan.rooms,
        f.secs,
        f.publishes,
        f.acked,
        f.deliveries,
        f.checked_same,
        f.checked_cross,
        f.redis_kills,
        f.node_restarts,
        f.missing,
        f.dropped,
        f.unheard,
        f.tail_in.len(),
        f.tail_out.len(),
        f.stopped_acked.len(),
        f.tail_out_before_sigterm.len(),
        f.head.len(),
        f.resume_failed
    );
}

/// Clients run on the other runtime than the server.
fn client_rt(bin: &str) -> Rt {
    if bin == "ws-tokio" {
        Rt::Smol
    } else {
        Rt::Tokio
    }
}

#[test]
fn chaos_light() {
    for bin in ws_tests::serve_process::BINARIES {
        let plan = light_plan();
        let f = soak(bin, client_rt(bin), plan.clone());
        report(bin, &plan, &f);
    }
}

#[test]
#[ignore = "a minute per runtime; run with scripts/chaos.sh"]
fn chaos_soak_tokio() {
    let plan = full_plan();
    let f = soak("ws-tokio", client_rt("ws-tokio"), plan.clone());
    report("ws-tokio", &plan, &f);
}

#[test]
#[ignore = "a minute per runtime; run with scripts/chaos.sh"]
fn chaos_soak_smol() {
    let plan = full_plan();
    let f = soak("ws-smol", client_rt("ws-smol"), plan.clone());
    report("ws-smol", &plan, &f);
}
