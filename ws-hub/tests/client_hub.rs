//! The client core against the real sans-IO hub, in process and in virtual
//! time: connections are cut at random moments (messages in flight lost,
//! half-open sockets included), and still every acked publish reaches every
//! subscriber exactly once, in per-publisher order.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;
use ws_hub::client::{Action, Client, ClientConfig, Event, State};
use ws_hub::{
    Action as HubAction, Command, ConnId, Hub, HubConfig, Identity, ResumeRequest, SessionSecret,
};

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

const DEDUP_WINDOW: Duration = Duration::from_secs(3600);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What travels from the hub to a client.
enum Down {
    Text(String),
    Ping,
    Close(u16, String),
}

struct Peer {
    name: String,
    client: Client,
    conn: Option<ConnId>,
    up: VecDeque<String>,
    down: VecDeque<Down>,
    next_n: u64,
    acked: Vec<u64>,
    /// (publisher, n) in arrival order.
    received: Vec<(String, u64)>,
    gaps: usize,
    dup_acks: u64,
    reconnects: u64,
    nacks: Vec<String>,
}

struct World {
    hub: Hub,
    peers: Vec<Peer>,
    now: Instant,
    next_conn: u64,
    rng: Rng,
}

impl World {
    fn new(seed: u64, peers: usize) -> Self {
        let hub = Hub::with_defaults(
            HubConfig {
                idle_timeout: None,
                rate_per_sec: 100_000,
                rate_burst: 100_000,
                replay_max_messages: 100_000,
                replay_max_bytes: 64 << 20,
                max_unacked: 100_000,
                // The guarantee covers retries inside the de-dup window; the
                // whole run (checked below) stays inside it.
                dedup_window: DEDUP_WINDOW,
                ..HubConfig::default()
            },
            SessionSecret::new([7; 32]),
        )
        .expect("valid config");
        let peers = (0..peers)
            .map(|i| {
                let mut config = ClientConfig::new("ws://hub/ws");
                config.seed = seed * 100 + i as u64;
                config.delivery_acks = i % 2 == 0;
                config.backoff_max = Duration::from_secs(2);
                config.max_pending = 64;
                Peer {
                    name: format!("u{i}"),
                    client: Client::new(config).expect("valid config"),
                    conn: None,
                    up: VecDeque::new(),
                    down: VecDeque::new(),
                    next_n: 0,
                    acked: Vec::new(),
                    received: Vec::new(),
                    gaps: 0,
                    dup_acks: 0,
                    reconnects: 0,
                    nacks: Vec::new(),
                }
            })
            .collect();
        Self {
            hub,
            peers,
            now: origin(),
            next_conn: 0,
            rng: Rng(seed),
        }
    }

    fn peer_of(&self, conn: ConnId) -> Option<usize> {
        self.peers.iter().position(|p| p.conn == Some(conn))
    }

    /// Drains the hub and every client until nothing is left to do.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            while let Some(a) = self.hub.poll_action() {
                busy = true;
                let (conn, down) = match a {
                    HubAction::Deliver { conn, payload } => (
                        conn,
                        Down::Text(String::from_utf8(payload.to_vec()).expect("utf-8")),
                    ),
                    HubAction::Ping { conn } => (conn, Down::Ping),
                    HubAction::Close { conn, code, reason } => {
                        (conn, Down::Close(code, reason.to_string()))
                    }
                    _ => continue,
                };
                if let Some(i) = self.peer_of(conn) {
                    self.peers[i].down.push_back(down);
                }
            }
            for i in 0..self.peers.len() {
                while let Some(a) = self.peers[i].client.poll_action() {
                    busy = true;
                    self.client_action(i, a);
                }
                while let Some(e) = self.peers[i].client.poll_event() {
                    let p = &mut self.peers[i];
                    match e {
                        Event::Message(m) => {
                            let v: serde_json::Value =
                                serde_json::from_str(m.data.get()).expect("json");
                            p.received.push((m.from, v["n"].as_u64().expect("n")));
                        }
                        Event::Reply(r) => match r.result {
                            Ok(ack) => {
                                p.dup_acks += u64::from(ack.duplicate);
                                if let Some(n) = r.id.strip_prefix(&format!("{}-", p.name)) {
                                    p.acked.push(n.parse().expect("n"));
                                }
                            }
                            Err(e) => p.nacks.push(format!("{} {e}", r.id)),
                        },
                        Event::Gap(_) => p.gaps += 1,
                        Event::State(s) if s.to == State::Connected => p.reconnects += 1,
                        _ => {}
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn client_action(&mut self, i: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Open { url } => {
                // Some attempts fail outright.
                if self.rng.below(5) == 0 {
                    self.peers[i]
                        .client
                        .handle(now, ws_hub::client::Input::ConnectFailed { status: None });
                    return;
                }
                self.next_conn += 1;
                let conn = ConnId(self.next_conn);
                let p = &mut self.peers[i];
                p.conn = Some(conn);
                p.up.clear();
                p.down.clear();
                let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
                p.client.handle(now, ws_hub::client::Input::Connected);
                let identity = Identity::user(p.name.as_str());
                self.hub.handle(
                    now,
                    Command::Connected {
                        conn,
                        identity,
                        remote_addr: None,
                        resume: ResumeRequest::from_query(query),
                    },
                );
            }
            Action::Send { text } => self.peers[i].up.push_back(text),
            Action::Close { .. } => self.cut(i, true),
            Action::NeedToken => unreachable!("no token provider"),
            _ => {}
        }
    }

    /// Tears the link down; the hub learns of it unless `half_open`.
    fn cut(&mut self, i: usize, hub_knows: bool) {
        let p = &mut self.peers[i];
        let Some(conn) = p.conn.take() else {
            return;
        };
        p.up.clear();
        p.down.clear();
        if hub_knows {
            self.hub.handle(self.now, Command::Disconnected { conn });
        }
    }

    fn step(&mut self, chaos: bool) -> bool {
        let n = self.peers.len();
        let i = self.rng.below(n as u64) as usize;
        let now = self.now;
        match self.rng.below(100) {
            0..=34 => {
                if let (Some(text), Some(conn)) = (self.peers[i].up.pop_front(), self.peers[i].conn)
                {
                    self.hub.handle(
                        now,
                        Command::Received {
                            conn,
                            data: Bytes::from(text),
                            is_text: true,
                        },
                    );
                }
            }
            35..=74 => {
                let p = &mut self.peers[i];
                match p.down.pop_front() {
                    Some(Down::Text(t)) => p.client.handle(now, ws_hub::client::Input::Text(&t)),
                    Some(Down::Ping) => {
                        p.client.handle(now, ws_hub::client::Input::Activity);
                        if let Some(conn) = p.conn {
                            self.hub.handle(now, Command::Activity { conn });
                        }
                    }
                    Some(Down::Close(code, reason)) => {
                        p.conn = None;
                        p.up.clear();
                        p.client.handle(
                            now,
                            ws_hub::client::Input::Closed {
                                code: Some(code),
                                reason: &reason,
                            },
                        );
                    }
                    None => {}
                }
            }
            75..=86 if chaos => {
                let p = &mut self.peers[i];
                if p.client.pending() < 32 {
                    p.next_n += 1;
                    let id = format!("{}-{}", p.name, p.next_n);
                    let data =
                        RawValue::from_string(format!(r#"{{"n":{}}}"#, p.next_n)).expect("json");
                    p.client
                        .publish("r", &data, Some(&id))
                        .expect("buffer has room");
                }
            }
            87..=89 if chaos => {
                if self.peers[i].conn.is_some() {
                    let half_open = self.rng.below(3) == 0;
                    self.cut(i, !half_open);
                    self.peers[i].client.handle(
                        now,
                        ws_hub::client::Input::Closed {
                            code: None,
                            reason: "",
                        },
                    );
                }
            }
            _ => self.tick(),
        }
        self.settle();
        chaos || self.busy()
    }

    fn tick(&mut self) {
        self.now += Duration::from_millis(self.rng.below(300));
        let now = self.now;
        for p in &mut self.peers {
            if p.client.poll_timeout().is_some_and(|t| t <= now) {
                p.client.handle_timeout(now);
            }
        }
        while self.hub.poll_timeout().is_some_and(|t| t <= now) {
            self.hub.handle_timeout(now);
            self.settle();
        }
    }

    fn busy(&self) -> bool {
        self.peers.iter().any(|p| {
            p.client.state() != State::Connected
                || p.client.pending() > 0
                || !p.up.is_empty()
                || !p.down.is_empty()
        })
    }
}

/// Runs one world; returns (retries acked as duplicates, duplicate
/// deliveries filtered, connections made).
fn run(seed: u64) -> (u64, u64, u64) {
    let mut w = World::new(seed, 4);
    let t0 = w.now;
    for p in &mut w.peers {
        p.client.connect(w.now);
        p.client.join("r").expect("room");
    }
    // Everyone joins before anyone publishes.
    let mut steps = 0;
    while w.busy() {
        w.step(false);
        steps += 1;
        assert!(steps < 10_000, "joins never completed");
    }
    for _ in 0..3_000 {
        w.step(true);
    }
    let mut steps = 0;
    while w.step(false) {
        steps += 1;
        assert!(steps < 100_000, "never quiesced");
    }

    assert!(w.now - t0 < DEDUP_WINDOW);
    let mut published = 0;
    for p in &w.peers {
        assert!(p.nacks.is_empty(), "{}: {:?}", p.name, p.nacks);
        assert_eq!(p.gaps, 0, "{}", p.name);
        let mut acked = p.acked.clone();
        acked.sort_unstable();
        assert_eq!(acked, (1..=p.next_n).collect::<Vec<_>>(), "{}", p.name);
        published += p.next_n;
    }
    assert!(published > 100, "only {published} publishes");
    for sub in &w.peers {
        let mut by_publisher: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (from, n) in &sub.received {
            by_publisher.entry(from).or_default().push(*n);
        }
        for publ in &w.peers {
            let got = by_publisher.remove(publ.name.as_str()).unwrap_or_default();
            assert_eq!(
                got,
                (1..=publ.next_n).collect::<Vec<_>>(),
                "seed {seed}: {} from {}",
                sub.name,
                publ.name
            );
        }
    }
    w.peers.iter().fold((0, 0, 0), |(a, b, c), p| {
        (a + p.dup_acks, b + p.client.duplicates(), c + p.reconnects)
    })
}

#[test]
fn exactly_once_in_order_across_random_drops() {
    let (mut dup_acks, mut filtered, mut connections) = (0, 0, 0);
    for seed in 1..=6 {
        let (a, b, c) = run(seed);
        dup_acks += a;
        filtered += b;
        connections += c;
    }
    // The run exercised what it claims to: retries the hub recognised,
    // redeliveries the clients dropped, many reconnects.
    assert!(
        dup_acks > 0 && filtered > 0 && connections > 100,
        "{dup_acks} {filtered} {connections}"
    );
}
