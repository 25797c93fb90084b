//! The Redis bus (`ws_server::bus`) against a real `redis-server`
//! started by each test on a free loopback port: two bus instances ("nodes")
//! on either runtime exchange messages only while subscribed, survive Redis
//! being killed, and resume after it restarts on the same port.

// Test harness: wall-clock deadlines are fine here (the ban is for the
// sans-IO cores).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use ws_server::bus::{BusCommand, BusStats, run_redis_bus};
use ws_server::shutdown::Shutdown;
use ws_tests::redis::RedisServer;
use ws_tests::{Rt, on_runtime};

const LOBBY: &str = "ws-hub:room:lobby";
const OTHER: &str = "ws-hub:room:other";
const LATE: &str = "ws-hub:room:late";
const GLOBAL: &str = "ws-hub:global";
const LIMIT: Duration = Duration::from_secs(10);

/// One bus task on its own thread and runtime, as a node would run it.
struct Node {
    name: &'static str,
    commands: async_channel::Sender<BusCommand>,
    incoming: async_channel::Receiver<(String, Bytes)>,
    stats: Arc<BusStats>,
    shutdown: Arc<Shutdown>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    fn start(name: &'static str, rt: Rt, url: String) -> Self {
        let (commands, commands_rx) = async_channel::bounded(1024);
        let (incoming_tx, incoming) = async_channel::bounded(4096);
        let stats = BusStats::new();
        let shutdown = Shutdown::new();
        let (s, stop) = (stats.clone(), shutdown.clone());
        let thread = thread::Builder::new()
            .name(format!("bus-{name}"))
            .spawn(move || {
                on_runtime!(rt, |r| run_redis_bus(
                    r,
                    url,
                    commands_rx,
                    incoming_tx,
                    s,
                    stop
                ))
            })
            .expect("spawn node");
        Self {
            name,
            commands,
            incoming,
            stats,
            shutdown,
            thread: Some(thread),
        }
    }

    fn send(&self, command: BusCommand) {
        self.commands
            .send_blocking(command)
            .expect("bus task is running");
    }

    fn publish(&self, channel: &str, payload: &str) {
        self.send(BusCommand::Publish {
            channel: channel.to_owned(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        });
    }

    fn subscribe(&self, channel: &str) {
        self.send(BusCommand::Subscribe(channel.to_owned()));
    }

    fn unsubscribe(&self, channel: &str) {
        self.send(BusCommand::Unsubscribe(channel.to_owned()));
    }

    /// The next received message, waiting at most `limit`.
    fn recv(&self, limit: Duration) -> Option<(String, String)> {
        let message = async_io::block_on(future::or(
            async { self.incoming.recv().await.ok() },
            async {
                async_io::Timer::after(limit).await;
                None
            },
        ));
        message.map(|(c, p)| (c, String::from_utf8_lossy(&p).into_owned()))
    }

    /// Asserts the next messages are exactly `expected`, in order.
    fn expect(&self, expected: &[(&str, &str)]) {
        for (channel, payload) in expected {
            let got = self.recv(LIMIT);
            assert_eq!(
                got.as_ref().map(|(c, p)| (c.as_str(), p.as_str())),
                Some((*channel, *payload)),
                "node {}",
                self.name
            );
        }
    }

    fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the task and waits for its thread (bounded by the test
    /// timeouts: shutdown is immediate).
    fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            t.join().expect("bus thread did not panic");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn numsub(redis: &RedisServer, channel: &str) -> String {
    let reply = redis.command(&["PUBSUB", "NUMSUB", channel]);
    reply.get(1).cloned().unwrap_or_default()
}

/// The whole scenario, node A on `a_rt` and node B on `b_rt`.
fn two_nodes(a_rt: Rt, b_rt: Rt) {
    let mut redis = RedisServer::start();
    let mut a = Node::start("A", a_rt, redis.url());
    let mut b = Node::start("B", b_rt, redis.url());
    wait_until("both nodes connected", LIMIT, || {
        a.stats.connected() && b.stats.connected()
    });

    // Published before A follows the room: never delivered to A.
    b.publish(LOBBY, "early");
    wait_until("early publish", LIMIT, || b.stats.published() == 1);
    a.subscribe(LOBBY);
    a.subscribe(LOBBY); // idempotent
    a.subscribe(GLOBAL);
    b.subscribe(GLOBAL);
    wait_until("subscriptions", LIMIT, || {
        a.stats.subscriptions() == 2 && b.stats.subscriptions() == 1
    });
    assert_eq!(numsub(&redis, LOBBY), "1");
    assert_eq!(numsub(&redis, GLOBAL), "2");

    // B -> A on the room, in order; a room A does not follow is not
    // delivered; the marker on the global channel comes last.
    let room: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for m in &room {
        b.publish(LOBBY, m);
    }
    b.publish(OTHER, "elsewhere");
    b.publish(GLOBAL, "marker-b1");
    let mut expected: Vec<(&str, &str)> = room.iter().map(|m| (LOBBY, m.as_str())).collect();
    expected.push((GLOBAL, "marker-b1"));
    a.expect(&expected);
    // B follows only the global channel (and sees its own publishes there,
    // which the hub ignores by origin).
    b.expect(&[(GLOBAL, "marker-b1")]);
    a.publish(GLOBAL, "from-a");
    b.expect(&[(GLOBAL, "from-a")]);
    a.expect(&[(GLOBAL, "from-a")]);

    // Unsubscribing stops delivery: B's room message would come before its
    // marker, and does not.
    a.unsubscribe(LOBBY);
    a.unsubscribe(LOBBY); // idempotent
    wait_until("unsubscribed", LIMIT, || a.stats.subscriptions() == 1);
    assert_eq!(numsub(&redis, LOBBY), "0");
    b.publish(LOBBY, "after-unsubscribe");
    b.publish(GLOBAL, "marker-b2");
    a.expect(&[(GLOBAL, "marker-b2")]);
    b.expect(&[(GLOBAL, "marker-b2")]);
    assert_eq!(a.stats.publish_dropped() + b.stats.publish_dropped(), 0);
    // Receivers, as Redis counted them: "early", "elsewhere" and
    // "after-unsubscribe" none, each room message one (A), each global
    // message two (A and B).
    wait_until("receivers counted", LIMIT, || {
        b.stats.publish_receivers() == 100 + 2 + 2 && a.stats.publish_receivers() == 2
    });
    let errors_before = (a.stats.errors(), b.stats.errors());

    // Redis goes away: both notice, publishes are dropped and counted,
    // subscription changes are remembered, nothing panics or blocks.
    redis.stop();
    wait_until("both nodes disconnected", LIMIT, || {
        !a.stats.connected() && !b.stats.connected()
    });
    assert_eq!(a.stats.subscriptions(), 0);
    for i in 0..10 {
        a.publish(GLOBAL, &format!("lost-{i}"));
    }
    a.subscribe(LATE);
    wait_until("dropped publishes counted", LIMIT, || {
        a.stats.publish_dropped() == 10
    });
    let mut out = String::new();
    a.stats.render_prometheus(&mut out);
    assert!(out.contains("ws_bus_connected 0\n"), "{out}");
    assert!(out.contains("ws_bus_publish_dropped_total 10\n"), "{out}");
    assert!(a.stats.errors() > errors_before.0);
    assert!(b.stats.errors() > errors_before.1);
    thread::sleep(Duration::from_millis(300)); // a few failed attempts
    assert!(a.is_running() && b.is_running());

    // Redis is back on the same port: both reconnect, resubscribe (including
    // the channel followed while down) and delivery resumes.
    redis.restart();
    wait_until("both nodes reconnected", LIMIT, || {
        a.stats.connected() && b.stats.connected()
    });
    assert_eq!(a.stats.reconnects(), 1);
    assert_eq!(b.stats.reconnects(), 1);
    assert_eq!(a.stats.subscriptions(), 2);
    assert_eq!(numsub(&redis, LATE), "1");
    assert_eq!(numsub(&redis, GLOBAL), "2");
    assert_eq!(numsub(&redis, LOBBY), "0");
    b.publish(LATE, "resumed-1");
    b.publish(GLOBAL, "resumed-2");
    a.expect(&[(LATE, "resumed-1"), (GLOBAL, "resumed-2")]);
    b.expect(&[(GLOBAL, "resumed-2")]);
    a.publish(GLOBAL, "resumed-3");
    b.expect(&[(GLOBAL, "resumed-3")]);
    a.expect(&[(GLOBAL, "resumed-3")]);

    // Nothing else arrived (no "early", "elsewhere", "after-unsubscribe" or
    // "lost-*"), nothing was dropped for want of room.
    assert_eq!(a.recv(Duration::from_millis(100)), None);
    assert_eq!(b.recv(Duration::from_millis(1)), None);
    assert_eq!(a.stats.received_dropped() + b.stats.received_dropped(), 0);
    assert_eq!(a.stats.publish_dropped(), 10);
    assert_eq!(b.stats.publish_dropped(), 0);
    a.stop();
    b.stop();
}

#[test]
fn two_tokio_nodes_exchange_and_survive_a_redis_restart() {
    two_nodes(Rt::Tokio, Rt::Tokio);
}

#[test]
fn two_smol_nodes_exchange_and_survive_a_redis_restart() {
    two_nodes(Rt::Smol, Rt::Smol);
}

#[test]
fn a_tokio_and_a_smol_node_exchange_and_survive_a_redis_restart() {
    two_nodes(Rt::Tokio, Rt::Smol);
}

/// Redis unreachable from the start, or a bad URL: commands are still
/// consumed (publishes dropped and counted, well past the channel's
/// capacity), and shutdown ends the task promptly.
#[test]
fn an_unreachable_redis_never_blocks_the_node() {
    // A port nobody listens on: a server started and stopped.
    let mut redis = RedisServer::start();
    redis.stop();
    for rt in ws_tests::RUNTIMES {
        for url in [redis.url(), "not a url".to_owned()] {
            let mut node = Node::start("alone", rt, url.clone());
            node.subscribe(LOBBY);
            for i in 0..3000 {
                node.publish(LOBBY, &format!("m{i}"));
            }
            wait_until("publishes dropped", LIMIT, || {
                node.stats.publish_dropped() == 3000
            });
            assert!(!node.stats.connected());
            // A refused connection is an error at once; a bad URL too.
            wait_until("an error counted", Duration::from_secs(1), || {
                node.stats.errors() >= 1
            });
            let started = Instant::now();
            node.stop();
            assert!(started.elapsed() < Duration::from_secs(2), "{rt:?} {url}");
        }
    }
}

/// Redis killed while a node publishes flat out: every publish is either
/// accepted or counted as dropped, none vanishes, and the node recovers.
#[test]
fn every_publish_is_accounted_for_across_a_kill() {
    for rt in ws_tests::RUNTIMES {
        let mut redis = RedisServer::start();
        let node = Node::start("busy", rt, redis.url());
        wait_until("connected", LIMIT, || node.stats.connected());
        let total = 20_000u64;
        let publisher = {
            let commands = node.commands.clone();
            thread::spawn(move || {
                for i in 0..total {
                    let command = BusCommand::Publish {
                        channel: LOBBY.to_owned(),
                        payload: Bytes::from(format!("m{i}")),
                    };
                    commands
                        .send_blocking(command)
                        .expect("bus task is running");
                }
            })
        };
        wait_until("some published", LIMIT, || node.stats.published() > 0);
        redis.stop();
        publisher.join().expect("publisher");
        wait_until("all accounted for", LIMIT, || {
            node.stats.published() + node.stats.publish_dropped() == total
        });
        assert!(node.stats.publish_dropped() > 0, "{rt:?}");
        redis.restart();
        wait_until("reconnected", LIMIT, || node.stats.connected());
        node.publish(LOBBY, "again");
        wait_until("published again", LIMIT, || {
            node.stats.published() + node.stats.publish_dropped() == total + 1
        });
        assert!(node.is_running());
    }
}

/// A Redis with a password: the right one (alone, or with the user name)
/// connects, a wrong one never does and is counted as errors.
#[test]
fn a_password_protected_redis_needs_the_right_password() {
    let redis = RedisServer::start();
    redis.command(&["CONFIG", "SET", "requirepass", "s3cr:t"]);
    let port = redis.port();
    for rt in ws_tests::RUNTIMES {
        for url in [
            format!("redis://:s3cr%3At@127.0.0.1:{port}"),
            format!("redis://default:s3cr%3At@127.0.0.1:{port}/0"),
        ] {
            let node = Node::start("auth", rt, url);
            wait_until("connected", LIMIT, || node.stats.connected());
            node.subscribe(LOBBY);
            wait_until("subscribed", LIMIT, || node.stats.subscriptions() == 1);
            node.publish(LOBBY, "to myself");
            node.expect(&[(LOBBY, "to myself")]);
        }
        let node = Node::start("wrong", rt, format!("redis://:nope@127.0.0.1:{port}"));
        wait_until("failed attempts", LIMIT, || node.stats.errors() >= 2);
        assert!(!node.stats.connected());
    }
}

/// A server that answers PING and nothing else, and on request sends every
/// connection a push announcing a 100 GB payload.
struct FakeRedis {
    addr: std::net::SocketAddr,
    conns: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRedis {
    fn start() -> Self {
        use std::io::{Read as _, Write as _};
        use ws_server::bus::resp::{Decoder, Value};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut served = Vec::new();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut tcp, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                tcp.set_nonblocking(false).expect("blocking");
                c.lock().unwrap().push(tcp.try_clone().expect("clone"));
                served.push(thread::spawn(move || {
                    let mut decoder = Decoder::default();
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = tcp.read(&mut buf) {
                        decoder.feed(&buf[..n]);
                        while let Ok(Some(Value::Array(Some(args)))) = decoder.next_value() {
                            if args.first().and_then(Value::as_bytes).map(|b| &b[..])
                                == Some(b"PING")
                            {
                                let _ = tcp.write_all(b"+PONG\r\n");
                            }
                        }
                    }
                }));
            }
            for conn in c.lock().unwrap().drain(..) {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
            for t in served {
                let _ = t.join();
            }
        });
        Self {
            addr,
            conns,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn send_huge_push(&self) {
        use std::io::Write as _;
        for conn in self.conns.lock().unwrap().iter_mut() {
            let _ = conn.write_all(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$100000000000\r\n");
        }
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server that never confirms a SUBSCRIBE, or announces a payload far
/// past the decoder's limits: the bus drops the connection (counting an
/// error) instead of waiting forever or buffering, and reconnects.
#[test]
fn a_misbehaving_server_is_dropped_not_waited_for_or_buffered() {
    for rt in ws_tests::RUNTIMES {
        let fake = FakeRedis::start();
        let mut node = Node::start("fake", rt, fake.url());
        wait_until("connected", LIMIT, || node.stats.connected());
        assert_eq!(node.stats.errors(), 0);

        // Never confirmed: given up after the response timeout.
        node.subscribe(LOBBY);
        wait_until("unconfirmed SUBSCRIBE given up", LIMIT, || {
            node.stats.errors() >= 1
        });
        // Reconnects once nothing needs confirming.
        node.unsubscribe(LOBBY);
        wait_until("reconnected", LIMIT, || {
            node.stats.connected() && node.stats.reconnects() >= 1
        });

        let errors = node.stats.errors();
        fake.send_huge_push();
        wait_until("oversized push refused", LIMIT, || {
            node.stats.errors() > errors
        });
        assert_eq!(node.stats.received(), 0);
        assert!(node.is_running());
        node.stop();
    }
}

/// The request/response client: a hash written, given a lifetime and read
/// back; an error reply is a typed error and leaves the connection usable.
#[test]
fn the_request_client_writes_and_reads_a_hash() {
    use ws_server::bus::resp::Value;
    use ws_server::bus::url::RedisUrl;
    use ws_server::bus::{ConnError, RedisClient};
    let redis = RedisServer::start();
    let url = RedisUrl::parse(&redis.url()).expect("url");
    for rt in ws_tests::RUNTIMES {
        let key = format!("presence:{rt:?}");
        on_runtime!(rt, |r| async {
            let mut client = RedisClient::connect(r, &url).await.expect("connect");
            let n = client
                .command(["HSET", &key, "alice", "1", "bob", "2"])
                .await;
            assert_eq!(n.expect("HSET"), Value::Integer(2));
            let n = client.command(["EXPIRE", &key, "60"]).await;
            assert_eq!(n.expect("EXPIRE"), Value::Integer(1));
            let all = client.command(["HGETALL", &key]).await.expect("HGETALL");
            let Value::Array(Some(items)) = all else {
                panic!("HGETALL: {all:?}")
            };
            let mut pairs: Vec<(Bytes, Bytes)> = items
                .chunks(2)
                .map(|kv| {
                    (
                        kv[0].as_bytes().unwrap().clone(),
                        kv[1].as_bytes().unwrap().clone(),
                    )
                })
                .collect();
            pairs.sort();
            assert_eq!(
                pairs,
                [
                    (Bytes::from("alice"), Bytes::from("1")),
                    (Bytes::from("bob"), Bytes::from("2"))
                ]
            );
            let wrong = client.command(["LPUSH", &key, "x"]).await;
            assert!(
                matches!(&wrong, Err(ConnError::Server(e)) if e.starts_with("WRONGTYPE")),
                "{wrong:?}"
            );
            let ttl = client.command(["TTL", &key]).await.expect("TTL");
            assert!(matches!(ttl, Value::Integer(1..=60)), "{ttl:?}");
        });
    }
}

/// The bus task can be handed to `Runtime::spawn` (which needs `Send`).
#[test]
fn the_bus_future_is_send() {
    fn check<R: ws_async::Runtime>(rt: R) {
        fn is_send<T: Send>(_: &T) {}
        let (_commands, commands_rx) = async_channel::bounded(1);
        let (incoming_tx, _incoming) = async_channel::bounded(1);
        let bus = run_redis_bus(
            rt,
            "redis://127.0.0.1:1".to_owned(),
            commands_rx,
            incoming_tx,
            BusStats::new(),
            Shutdown::new(),
        );
        is_send(&bus);
    }
    check(runtime_tokio::TokioRuntime);
    check(runtime_smol::SmolRuntime::default());
}

/// Rough cost of the bus: round trips (publish on B, received on A) one at
/// a time, and the rate of a one-way stream. Run with
/// `cargo test --release -p ws-tests --test redis_bus -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn bus_latency_and_rate() {
    for (a_rt, b_rt) in [
        (Rt::Tokio, Rt::Tokio),
        (Rt::Smol, Rt::Smol),
        (Rt::Tokio, Rt::Smol),
    ] {
        let redis = RedisServer::start();
        let a = Node::start("A", a_rt, redis.url());
        let b = Node::start("B", b_rt, redis.url());
        a.subscribe(LOBBY);
        wait_until("ready", LIMIT, || {
            a.stats.subscriptions() == 1 && b.stats.connected()
        });
        let payload = "x".repeat(100);

        let mut samples = Vec::new();
        for i in 0..2000 {
            let start = Instant::now();
            b.publish(LOBBY, &payload);
            assert!(a.recv(LIMIT).is_some(), "round trip {i}");
            samples.push(start.elapsed());
        }
        samples.sort();
        let pct = |p: usize| samples[samples.len() * p / 100];

        let n = 200_000u64;
        let publisher = {
            let commands = b.commands.clone();
            let payload = Bytes::from(payload.clone());
            thread::spawn(move || {
                for _ in 0..n {
                    let command = BusCommand::Publish {
                        channel: LOBBY.to_owned(),
                        payload: payload.clone(),
                    };
                    if commands.send_blocking(command).is_err() {
                        break;
                    }
                }
            })
        };
        let start = Instant::now();
        let mut received = 0u64;
        while received + a.stats.received_dropped() < n && a.recv(LIMIT).is_some() {
            received += 1;
        }
        let elapsed = start.elapsed();
        publisher.join().expect("publisher");
        println!(
            "{a_rt:?} <- {b_rt:?}: round trip p50 {:?} p99 {:?} max {:?}; \
             stream {} msg/s ({received} received, {} dropped by A, {:?})",
            pct(50),
            pct(99),
            samples[samples.len() - 1],
            (received as f64 / elapsed.as_secs_f64()) as u64,
            a.stats.received_dropped(),
            elapsed,
        );
    }
}
