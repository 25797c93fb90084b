//! An in-test TCP proxy that cuts connections at random moments, mid-frame
//! included, for chaos tests of reconnecting clients.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A small deterministic PRNG (SplitMix64) for the proxy's choices.
#[derive(Debug)]
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
        self.next() % n.max(1)
    }
}

/// Both sockets of one proxied connection, and whether it is still up.
struct Link {
    client: TcpStream,
    server: TcpStream,
    up: Arc<AtomicBool>,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    chaos: AtomicBool,
    stop: AtomicBool,
    cuts: AtomicU64,
    accepted: AtomicU64,
    /// Both sockets of every proxied connection, for cutting.
    live: Mutex<Vec<Link>>,
    rng: Mutex<Rng>,
}

impl Shared {
    fn chance(&self, one_in: u64) -> bool {
        self.rng
            .lock()
            .map(|mut r| r.below(one_in) == 0)
            .unwrap_or(false)
    }
}

/// A loopback proxy to an upstream server that, while chaos is on, cuts
/// connections: a background thread cuts a random one every
/// `0..2×interval`, and a forwarding thread sometimes forwards only a
/// random prefix of a chunk before cutting (a cut mid-frame).
pub struct CuttingProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl CuttingProxy {
    /// Starts the proxy (chaos off).
    pub fn start(upstream: SocketAddr, seed: u64, interval: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            chaos: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            cuts: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
            rng: Mutex::new(Rng(seed)),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        let killer = {
            let shared = shared.clone();
            std::thread::spawn(move || kill_loop(&shared, interval))
        };
        Self {
            addr,
            shared,
            threads: vec![acceptor, killer],
        }
    }

    /// `ws://<proxy>/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Turns cutting on or off.
    pub fn set_chaos(&self, on: bool) {
        self.shared.chaos.store(on, Ordering::SeqCst);
    }

    /// Sends new connections to another upstream (a restarted server).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        if let Ok(mut u) = self.shared.upstream.lock() {
            *u = upstream;
        }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Cuts every live connection now.
    pub fn cut_all(&self) {
        let live = self.shared.live.lock().map(|mut l| std::mem::take(&mut *l));
        for link in live.unwrap_or_default() {
            cut(&self.shared, &link);
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn cut(shared: &Shared, link: &Link) {
    if link.up.swap(false, Ordering::SeqCst) {
        shared.cuts.fetch_add(1, Ordering::SeqCst);
    }
    let _ = link.client.shutdown(Shutdown::Both);
    let _ = link.server.shutdown(Shutdown::Both);
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => continue,
        };
        let upstream = match shared.upstream.lock() {
            Ok(u) => *u,
            Err(_) => return,
        };
        let Ok(server) = TcpStream::connect(upstream) else {
            continue; // the client sees a reset and retries
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let clones = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones else {
            continue;
        };
        let up = Arc::new(AtomicBool::new(true));
        let link = |client, server| Link {
            client,
            server,
            up: up.clone(),
        };
        let (l1, l2) = (link(client, s1), link(c1, server));
        if let Ok(mut live) = shared.live.lock() {
            live.retain(|l| l.up.load(Ordering::SeqCst));
            live.push(link(c2, s2));
        }
        let (sh1, sh2) = (shared.clone(), shared.clone());
        std::thread::spawn(move || pump(l1, false, &sh1));
        std::thread::spawn(move || pump(l2, true, &sh2));
    }
}

/// Copies one direction of `link` (server → client when `down`) until
/// either side ends; while chaos is on, now and then forwards part of a
/// chunk and cuts.
fn pump(link: Link, down: bool, shared: &Shared) {
    let (mut from, mut to) = match (link.client.try_clone(), link.server.try_clone()) {
        (Ok(c), Ok(s)) if down => (s, c),
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if shared.chaos.load(Ordering::SeqCst) && shared.chance(40) {
            let keep = shared
                .rng
                .lock()
                .map(|mut r| r.below(n as u64) as usize)
                .unwrap_or(0);
            let _ = to.write_all(&buf[..keep]);
            cut(shared, &link);
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    link.up.store(false, Ordering::SeqCst);
    let _ = link.client.shutdown(Shutdown::Both);
    let _ = link.server.shutdown(Shutdown::Both);
}

fn kill_loop(shared: &Shared, interval: Duration) {
    let step = Duration::from_millis(5);
    let mut wait = Duration::ZERO;
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(step);
        wait = wait.saturating_sub(step);
        if !wait.is_zero() || !shared.chaos.load(Ordering::SeqCst) {
            continue;
        }
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        wait = Duration::from_millis(shared.rng.lock().map(|mut r| r.below(2 * ms)).unwrap_or(ms));
        let victim = shared.live.lock().ok().and_then(|mut live| {
            live.retain(|l| l.up.load(Ordering::SeqCst));
            if live.is_empty() {
                return None;
            }
            let i = shared
                .rng
                .lock()
                .map(|mut r| r.below(live.len() as u64) as usize)
                .unwrap_or(0);
            Some(live.swap_remove(i))
        });
        if let Some(link) = victim {
            cut(shared, &link);
        }
    }
}
