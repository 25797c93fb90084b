//! Two hub nodes joined by a real `redis-server` (started by each test on a
//! free loopback port and killed by it): node A on tokio, node B on smol,
//! the same Redis URL and HMAC secret, distinct `node_id`s, clients on both.
//!
//! Covered: room publish, direct `send` and `broadcast` across nodes;
//! de-duplication of one user's message id published on both nodes;
//! per-publisher ordering across nodes; Redis subscriptions that follow
//! room membership; Redis killed mid-test (local delivery goes on,
//! `/metrics` shows and counts it, nothing crashes) and restarted on the
//! same port (cross-node delivery resumes).
//!
//! Every wait is bounded; the tests assert behaviour, never timing. Where
//! something must *not* arrive, the test waits for a later event that the
//! server must produce after it (an application `ping` answered in order,
//! or a later message on the same ordered path).
//!
//! The `#[ignore]`d `bench_cross_node_delivery` measures the cross-node
//! delivery rate and the latency the bus adds:
//!
//! ```text
//! cargo test --release -p ws-tests --test cluster -- --ignored --nocapture
//! ```
//!
//! (`CLUSTER_BENCH_MESSAGES`, default 10,000, and `CLUSTER_BENCH_PACED`,
//! default 500, size its throughput and latency phases;
//! `CLUSTER_OUTAGE_SECS`, default 0, keeps Redis down that much longer in
//! the outage test so that the reconnection backoff reaches its cap.)

// Test harness: wall-clock deadlines and timestamps are fine here (the ban
// is for the sans-IO cores).
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ws_async::{Runtime, WebSocket, WsConfig, client_handshake};
use ws_proto::{ClientRequest, Message};
use ws_server::server::{ServerConfig, Settings};
use ws_tests::hub_client::{HubClient, Recv, WAIT, metric, sleep, token, wait_metric, within};
use ws_tests::redis::RedisServer;
use ws_tests::{Rt, TestServer, on_runtime, start_hub};

/// The HMAC secret both nodes share, so a user is the same user on both.
const SECRET: &str = "cluster-secret";
/// The channel every node subscribes to at start (users, broadcasts).
const GLOBAL: &str = "ws-hub:global";
/// Bound on waits that span a Redis reconnection (backoff reaches 5 s).
const RECONNECT_WAIT: Duration = Duration::from_secs(40);
/// Polling step of the bounded waits.
const STEP: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------

/// A node's configuration: Redis on, a shared secret, a generous rate
/// limit (the tests publish in bursts), then `tweak`.
fn node_config(redis: &str, node_id: &str, tweak: &dyn Fn(&mut Settings)) -> ServerConfig {
    let mut settings = Settings {
        redis: Some(redis.to_owned()),
        node_id: Some(node_id.to_owned()),
        auth_secret: Some(SECRET.to_owned()),
        rate_per_sec: Some(10_000),
        rate_burst: Some(10_000),
        ..Default::default()
    };
    tweak(&mut settings);
    ServerConfig::from_settings(&settings).expect("valid settings")
}

/// Redis plus node A (tokio) and node B (smol). Fields drop in order: the
/// nodes shut down before Redis is killed.
struct Cluster {
    a: TestServer,
    b: TestServer,
    redis: RedisServer,
}

impl Cluster {
    fn start() -> Self {
        Self::start_with(&|_| {})
    }

    /// Starts both nodes and waits until both buses have subscribed to the
    /// global channel (i.e. are connected).
    fn start_with(tweak: &dyn Fn(&mut Settings)) -> Self {
        let redis = RedisServer::start();
        let a = start_hub(Rt::Tokio, node_config(&redis.url(), "node-a", tweak));
        let b = start_hub(Rt::Smol, node_config(&redis.url(), "node-b", tweak));
        let cluster = Self { a, b, redis };
        wait_numsub(&cluster.redis, GLOBAL, 2, WAIT);
        cluster
    }
}

/// `ws-hub:room:<room>`.
fn room_channel(room: &str) -> String {
    format!("ws-hub:room:{room}")
}

/// How many connections Redis counts as subscribed to `channel`.
fn numsub(redis: &RedisServer, channel: &str) -> u64 {
    let reply = redis.command(&["PUBSUB", "NUMSUB", channel]);
    reply.get(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Waits (bounded) until exactly `want` nodes are subscribed to `channel`.
fn wait_numsub(redis: &RedisServer, channel: &str, want: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let n = numsub(redis, channel);
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel}: {n} subscribers after {limit:?}, expected {want}"
        );
        std::thread::sleep(STEP);
    }
}

/// Waits (bounded by `limit`) until `/metrics` `name` satisfies `pred`.
fn wait_metric_for(addr: SocketAddr, name: &str, limit: Duration, pred: impl Fn(u64) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let value = metric(addr, name);
        if pred(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} {name} stayed at {value} for {limit:?}"
        );
        std::thread::sleep(STEP);
    }
}

/// Connects `user` (with a token) to the node at `addr`.
async fn connect<R: Runtime>(rt: &R, addr: SocketAddr, user: &str) -> HubClient<R> {
    let target = format!("/ws?token={}", token(SECRET, user));
    let client = HubClient::connect(rt.clone(), addr, &target)
        .await
        .unwrap_or_else(|e| panic!("connect {user} to {addr}: {e}"));
    assert_eq!(client.user(), user);
    client
}

fn is_message(v: &Value, id: &str) -> bool {
    v["type"] == "message" && v["id"] == id
}

fn assert_ack(v: &Value, what: &str) {
    assert!(
        v["type"] == "ack" && v["duplicate"] != true,
        "{what}: expected a plain ack, got {v}"
    );
}

/// Joins `room` and asserts the ack.
async fn join<R: Runtime>(client: &mut HubClient<R>, room: &str) {
    let reply = client.join(room).await;
    assert_ack(&reply, &format!("{} joins {room}", client.user()));
}

/// The `message` with `id` (others are kept); panics after [`WAIT`].
async fn expect_message<R: Runtime>(client: &mut HubClient<R>, id: &str) -> Value {
    let what = format!("message {id} for {}", client.user());
    client.expect_where(&what, |v| is_message(v, id)).await
}

/// Everything the server had sent `client` before it answered a ping
/// (plus what was kept), as `message` ids.
async fn ids_until_barrier<R: Runtime>(client: &mut HubClient<R>) -> Vec<String> {
    let seen = client.barrier().await;
    ws_tests::hub_client::message_ids(&seen)
}

/// Asserts the next `n` messages of `room` read by `client` have the
/// `from` and ids in `expected` order.
async fn expect_in_order<R: Runtime>(
    client: &mut HubClient<R>,
    room: &str,
    from: &str,
    expected: &[String],
) {
    let mut got = Vec::with_capacity(expected.len());
    while got.len() < expected.len() {
        let what = format!("message {} of {from} in {room}", got.len());
        let v = client
            .expect_where(&what, |v| {
                v["type"] == "message" && v["room"] == room && v["from"] == from
            })
            .await;
        got.push(v["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        got,
        expected,
        "{} got {from}'s messages out of order",
        client.user()
    );
}

// ---------------------------------------------------------------------
// Routing across nodes
// ---------------------------------------------------------------------

#[test]
fn room_publish_reaches_members_on_both_nodes_and_no_one_else() {
    let cluster = Cluster::start();
    let (a, b, redis) = (cluster.a.addr, cluster.b.addr, &cluster.redis);
    on_runtime!(Rt::Tokio, |rt| async move {
        let mut alice = connect(&rt, a, "alice").await; // A, member
        let mut carol = connect(&rt, a, "carol").await; // A, not a member
        let mut bob = connect(&rt, b, "bob").await; // B, member
        let mut dave = connect(&rt, b, "dave").await; // B, not a member
        join(&mut alice, "lobby").await;
        join(&mut bob, "lobby").await;
        wait_numsub(redis, &room_channel("lobby"), 2, WAIT);

        // A -> A and B.
        let reply = alice.publish("lobby", "m1", json!({"text": "hi"})).await;
        assert_ack(&reply, "alice publishes m1 on A");
        let mine = expect_message(&mut alice, "m1").await;
        let theirs = expect_message(&mut bob, "m1").await;
        for v in [&mine, &theirs] {
            assert_eq!(v["room"], "lobby", "{v}");
            assert_eq!(v["from"], "alice", "{v}");
            assert_eq!(v["data"], json!({"text": "hi"}), "{v}");
        }

        // B -> B and A.
        let reply = bob.publish("lobby", "m2", json!([1, 2])).await;
        assert_ack(&reply, "bob publishes m2 on B");
        expect_message(&mut bob, "m2").await;
        let v = expect_message(&mut alice, "m2").await;
        assert_eq!((&v["from"], &v["data"]), (&json!("bob"), &json!([1, 2])));

        // Once each: nothing more before a later barrier. Both messages
        // were delivered on both nodes already (alice and bob have them),
        // so a non-member's barrier comes after their fan-out.
        for c in [&mut alice, &mut bob] {
            let ids = ids_until_barrier(c).await;
            assert!(ids.is_empty(), "{}: extra copies {ids:?}", c.user());
        }
        for c in [&mut carol, &mut dave] {
            let ids = ids_until_barrier(c).await;
            assert!(ids.is_empty(), "non-member {} got {ids:?}", c.user());
        }
    });
}

#[test]
fn direct_send_reaches_a_user_connected_only_to_the_other_node() {
    let cluster = Cluster::start();
    let (a, b) = (cluster.a.addr, cluster.b.addr);
    on_runtime!(Rt::Smol, |rt| async move {
        let mut alice = connect(&rt, a, "alice").await;
        let mut erin = connect(&rt, b, "erin").await; // only on B
        let mut bob_a = connect(&rt, a, "bob").await; // bob: on both nodes
        let mut bob_b = connect(&rt, b, "bob").await;
        let mut dave = connect(&rt, b, "dave").await; // bystander on B

        let reply = alice.send_to("erin", "d1", json!("psst")).await;
        assert_ack(&reply, "alice sends d1 to erin (on B) from A");
        let v = expect_message(&mut erin, "d1").await;
        assert_eq!(v["to"], "erin", "{v}");
        assert_eq!(v["from"], "alice", "{v}");
        assert_eq!(v["data"], "psst", "{v}");

        // Every connection of a user, on every node.
        let reply = alice.send_to("bob", "d2", json!({"n": 2})).await;
        assert_ack(&reply, "alice sends d2 to bob (on A and B)");
        expect_message(&mut bob_a, "d2").await;
        expect_message(&mut bob_b, "d2").await;

        // A user with no session anywhere: acked in a cluster (no node
        // knows every user), delivered to no one.
        let reply = alice.send_to("nobody", "d3", json!(null)).await;
        assert_ack(&reply, "send to an unknown user in a cluster");

        // Nothing else anywhere: erin, bob and dave saw d1/d2 only where
        // addressed, once.
        let ids = ids_until_barrier(&mut erin).await;
        assert!(ids.is_empty(), "erin: {ids:?}");
        for c in [&mut bob_a, &mut bob_b] {
            let ids = ids_until_barrier(c).await;
            assert!(ids.is_empty(), "bob: {ids:?}");
        }
        let ids = ids_until_barrier(&mut dave).await;
        assert!(ids.is_empty(), "dave (not addressed): {ids:?}");
        let ids = ids_until_barrier(&mut alice).await;
        assert!(ids.is_empty(), "alice (sender): {ids:?}");
    });
}

#[test]
fn broadcast_from_b_reaches_every_connection_on_both_nodes_once() {
    let cluster = Cluster::start();
    let (a, b) = (cluster.a.addr, cluster.b.addr);
    on_runtime!(Rt::Tokio, |rt| async move {
        let mut clients = vec![
            connect(&rt, b, "bob").await, // the sender
            connect(&rt, b, "dave").await,
            connect(&rt, a, "alice").await,
            connect(&rt, a, "carol").await,
        ];
        let reply = clients[0].broadcast("b1", json!({"alert": true})).await;
        assert_ack(&reply, "bob broadcasts b1 on B");
        for c in &mut clients {
            let v = expect_message(c, "b1").await;
            assert_eq!(v["broadcast"], true, "{v}");
            assert_eq!(v["from"], "bob", "{v}");
            assert_eq!(v["data"], json!({"alert": true}), "{v}");
        }
        for c in &mut clients {
            let ids = ids_until_barrier(c).await;
            assert!(ids.is_empty(), "{}: extra copies {ids:?}", c.user());
        }
    });
}

/// Connects a client without a token (an anonymous user) to `addr`.
async fn connect_anonymous<R: Runtime>(rt: &R, addr: SocketAddr) -> HubClient<R> {
    let client = HubClient::connect(rt.clone(), addr, "/ws")
        .await
        .unwrap_or_else(|e| panic!("connect anonymously to {addr}: {e}"));
    assert!(client.user().starts_with("anon-"), "{}", client.welcome());
    client
}

/// Issue 16: both nodes used to hand out `anon-1`, `anon-2`, ...: a `send`
/// to one reached a stranger on the other node, and a publish by one was
/// suppressed as a duplicate of the other's.
#[test]
fn anonymous_users_are_distinct_across_nodes() {
    let cluster = Cluster::start_with(&|s| s.allow_anonymous = Some(true));
    let (a, b, redis) = (cluster.a.addr, cluster.b.addr, &cluster.redis);
    for client_rt in [Rt::Tokio, Rt::Smol] {
        on_runtime!(client_rt, |rt| async move {
            let mut on_a = Vec::new();
            let mut on_b = Vec::new();
            for _ in 0..3 {
                on_a.push(connect_anonymous(&rt, a).await);
                on_b.push(connect_anonymous(&rt, b).await);
            }
            let mut names: Vec<String> = on_a.iter().chain(&on_b).map(HubClient::user).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), 6, "anonymous names collide: {names:?}");

            // A direct message to an anonymous user reaches only that user,
            // whichever node the sender is on.
            for (from_a, to_a, to) in [(true, true, 0), (true, false, 1), (false, true, 2)] {
                let target = if to_a {
                    on_a[to].user()
                } else {
                    on_b[to].user()
                };
                let id = format!("d-{from_a}-{to_a}-{to}");
                let sender = if from_a { &mut on_a[2] } else { &mut on_b[2] };
                assert_ack(&sender.send_to(&target, &id, json!("psst")).await, &id);
                let receiver = if to_a { &mut on_a[to] } else { &mut on_b[to] };
                let v = expect_message(receiver, &id).await;
                assert_eq!(v["to"], target.as_str(), "{v}");
                // The receiver's node has fanned it out to everyone it
                // addressed; the sender's node did so before the ack.
                for c in on_a.iter_mut().chain(on_b.iter_mut()) {
                    let ids = ids_until_barrier(c).await;
                    assert!(ids.is_empty(), "{} also got {ids:?} for {target}", c.user());
                }
            }

            // The same message id from two anonymous users on two nodes is
            // two messages: neither is a duplicate of the other.
            let room = format!("anon-room-{client_rt:?}");
            join(&mut on_a[0], &room).await;
            join(&mut on_b[0], &room).await;
            wait_numsub(redis, &room_channel(&room), 2, WAIT);
            let first = on_a[0].publish(&room, "same-id", json!("from A")).await;
            assert_ack(&first, "anonymous publish on A");
            let second = on_b[0].publish(&room, "same-id", json!("from B")).await;
            assert_ack(&second, "the same id from another anonymous user on B");
            for c in [&mut on_a[0], &mut on_b[0]] {
                let mut got = Vec::new();
                while got.len() < 2 {
                    let v = expect_message(c, "same-id").await;
                    got.push(v["data"].as_str().unwrap_or_default().to_owned());
                }
                got.sort();
                assert_eq!(got, ["from A", "from B"], "{}", c.user());
            }
            for c in on_a.into_iter().chain(on_b) {
                c.close().await;
            }
        });
    }
}

// ---------------------------------------------------------------------
// De-duplication and ordering across nodes
// ---------------------------------------------------------------------

#[test]
fn one_users_message_id_published_on_both_nodes_is_delivered_once() {
    let cluster = Cluster::start();
    let (a, b, redis) = (cluster.a.addr, cluster.b.addr, &cluster.redis);
    on_runtime!(Rt::Smol, |rt| async move {
        // alice is connected to both nodes (same token identity).
        let mut alice_a = connect(&rt, a, "alice").await;
        let mut alice_b = connect(&rt, b, "alice").await;
        let mut bob = connect(&rt, a, "bob").await;
        let mut dave = connect(&rt, b, "dave").await;
        for c in [&mut alice_a, &mut alice_b, &mut bob, &mut dave] {
            join(c, "dup").await;
        }
        wait_numsub(redis, &room_channel("dup"), 2, WAIT);

        // 1. A retry on B after the original went through on A.
        let reply = alice_a.publish("dup", "x1", json!("first")).await;
        assert_ack(&reply, "x1 on A");
        for c in [&mut alice_a, &mut alice_b, &mut bob, &mut dave] {
            let v = expect_message(c, "x1").await;
            assert_eq!(v["data"], "first", "{v}");
        }
        let reply = alice_b.publish("dup", "x1", json!("retry")).await;
        assert_eq!(
            reply["duplicate"], true,
            "a retry on B of an id accepted on A: {reply}"
        );
        for c in [&mut alice_a, &mut alice_b, &mut bob, &mut dave] {
            let ids = ids_until_barrier(c).await;
            assert!(ids.is_empty(), "{} after the retry: {ids:?}", c.user());
        }

        // 2. Both nodes at once (each may accept it before it hears of the
        // other): still once per member. Markers published afterwards on
        // each node follow any bus copy of x2 from that node, so once both
        // markers are in, every copy that will ever arrive has.
        alice_a
            .request(json!({"type": "publish", "room": "dup", "id": "x2", "data": "a"}))
            .await;
        alice_b
            .request(json!({"type": "publish", "room": "dup", "id": "x2", "data": "b"}))
            .await;
        let reply_a = alice_a.reply("publish", "id", "x2").await;
        let reply_b = alice_b.reply("publish", "id", "x2").await;
        assert_eq!(reply_a["type"], "ack", "{reply_a}");
        assert_eq!(reply_b["type"], "ack", "{reply_b}");
        assert_ack(&alice_a.publish("dup", "mark-a", json!(0)).await, "mark-a");
        assert_ack(&alice_b.publish("dup", "mark-b", json!(0)).await, "mark-b");
        for c in [&mut alice_a, &mut alice_b, &mut bob, &mut dave] {
            expect_message(c, "mark-a").await;
            expect_message(c, "mark-b").await;
            let mut ids = ids_until_barrier(c).await;
            ids.retain(|id| id == "x2");
            assert_eq!(ids, ["x2"], "{}: x2 must arrive exactly once", c.user());
        }
    });
}

#[test]
fn one_publishers_messages_keep_their_order_across_nodes() {
    const N: usize = 200;
    let cluster = Cluster::start();
    let (a, b, redis) = (cluster.a.addr, cluster.b.addr, &cluster.redis);
    on_runtime!(Rt::Tokio, |rt| async move {
        let mut alice = connect(&rt, a, "alice").await; // publishes on A
        let mut erin = connect(&rt, b, "erin").await; // publishes on B
        let mut bob = connect(&rt, b, "bob").await; // reads on B
        let mut carol = connect(&rt, a, "carol").await; // reads on A
        for c in [&mut alice, &mut erin, &mut bob, &mut carol] {
            join(c, "ord").await;
        }
        wait_numsub(redis, &room_channel("ord"), 2, WAIT);

        // Both publishers pipeline N publishes without waiting for acks,
        // interleaved, so the streams mix on both nodes and on the bus.
        let ids_a: Vec<String> = (0..N).map(|i| format!("a-{i}")).collect();
        let ids_b: Vec<String> = (0..N).map(|i| format!("b-{i}")).collect();
        for i in 0..N {
            alice
                .request(json!({"type": "publish", "room": "ord", "id": ids_a[i], "data": i}))
                .await;
            erin.request(json!({"type": "publish", "room": "ord", "id": ids_b[i], "data": i}))
                .await;
        }
        for (c, ids) in [(&mut alice, &ids_a), (&mut erin, &ids_b)] {
            for id in ids {
                let reply = c.reply("publish", "id", id).await;
                assert_ack(&reply, id);
            }
        }
        for reader in [&mut bob, &mut carol] {
            expect_in_order(reader, "ord", "alice", &ids_a).await;
        }
        for reader in [&mut bob, &mut carol] {
            expect_in_order(reader, "ord", "erin", &ids_b).await;
        }
        // And `seq` has no gaps for a reader that got both streams.
        for reader in [&mut bob, &mut carol] {
            let extra = ids_until_barrier(reader).await;
            assert!(extra.is_empty(), "{}: extra {extra:?}", reader.user());
            assert_eq!(reader.last_seq(), 2 * N as u64, "{}", reader.user());
        }
    });
}

// ---------------------------------------------------------------------
// Subscriptions follow membership
// ---------------------------------------------------------------------

#[test]
fn a_node_follows_a_rooms_channel_only_while_it_has_members() {
    let cluster = Cluster::start();
    let (a, b, redis) = (cluster.a.addr, cluster.b.addr, &cluster.redis);
    let channel = room_channel("sub");
    on_runtime!(Rt::Smol, |rt| async move {
        let mut alice = connect(&rt, a, "alice").await;
        let mut bob = connect(&rt, b, "bob").await;
        let mut dave = connect(&rt, b, "dave").await;
        assert_eq!(numsub(redis, &channel), 0, "nobody joined yet");
        wait_metric(b, "ws_bus_subscriptions", |n| n == 1); // global only

        join(&mut alice, "sub").await;
        wait_numsub(redis, &channel, 1, WAIT);
        join(&mut bob, "sub").await;
        join(&mut dave, "sub").await;
        wait_numsub(redis, &channel, 2, WAIT);
        wait_metric(b, "ws_bus_subscriptions", |n| n == 2);

        // One of two members on B leaves: B still follows the room.
        assert_ack(&dave.leave("sub").await, "dave leaves");
        assert_ack(&alice.publish("sub", "s1", json!(1)).await, "s1");
        expect_message(&mut bob, "s1").await;
        assert_eq!(numsub(redis, &channel), 2);

        // The last member on B leaves: B unsubscribes.
        assert_ack(&bob.leave("sub").await, "bob leaves");
        wait_numsub(redis, &channel, 1, WAIT);
        wait_metric(b, "ws_bus_subscriptions", |n| n == 1);

        // A room message from A no longer reaches B at all. A direct
        // message published by A afterwards travels the same ordered path
        // (A's PUBLISH connection, then Redis to B's subscriber): had the
        // room message reached B, B would have counted it first.
        let received = metric(b, "ws_bus_received_total");
        assert_ack(&alice.publish("sub", "s2", json!(2)).await, "s2");
        assert_ack(&alice.send_to("bob", "after", json!(0)).await, "after");
        expect_message(&mut bob, "after").await;
        wait_metric(b, "ws_bus_received_total", |n| n > received);
        assert_eq!(
            metric(b, "ws_bus_received_total"),
            received + 1,
            "B received the room message after its last member left"
        );
        let ids = ids_until_barrier(&mut bob).await;
        assert!(ids.is_empty(), "bob after leaving: {ids:?}");
        let ids = ids_until_barrier(&mut dave).await;
        assert!(ids.is_empty(), "dave after leaving: {ids:?}");

        // Joining again subscribes again, and delivery works again.
        join(&mut bob, "sub").await;
        wait_numsub(redis, &channel, 2, WAIT);
        assert_ack(&alice.publish("sub", "s3", json!(3)).await, "s3");
        expect_message(&mut bob, "s3").await;

        // The last member anywhere leaves: nobody follows the room.
        assert_ack(&bob.leave("sub").await, "bob leaves again");
        assert_ack(&alice.leave("sub").await, "alice leaves");
        wait_numsub(redis, &channel, 0, WAIT);
        wait_metric(a, "ws_bus_subscriptions", |n| n == 1);
    });
}

// ---------------------------------------------------------------------
// Redis going away and coming back
// ---------------------------------------------------------------------

/// Publishes probes from `from` (a member of `room`) until `to` receives
/// one, within [`RECONNECT_WAIT`]; returns the probe ids sent and the ids
/// of every message `to` read meanwhile.
async fn probe_until_delivered<R: Runtime>(
    rt: &R,
    from: &mut HubClient<R>,
    to: &mut HubClient<R>,
    room: &str,
    prefix: &str,
) -> (Vec<String>, Vec<String>) {
    let deadline = rt.now() + RECONNECT_WAIT;
    let mut sent = Vec::new();
    let mut seen = Vec::new();
    loop {
        let id = format!("{prefix}-{}", sent.len());
        let reply = from.publish(room, &id, json!("probe")).await;
        assert_ack(&reply, &id);
        sent.push(id);
        let wait_until = rt.now() + Duration::from_millis(250);
        loop {
            let left = wait_until.saturating_duration_since(rt.now());
            match to.recv_within(left).await {
                Recv::Msg(v) if v["type"] == "message" => {
                    let id = v["id"].as_str().unwrap_or_default().to_owned();
                    let done = id.starts_with(prefix);
                    seen.push(id);
                    if done {
                        return (sent, seen);
                    }
                }
                Recv::Msg(_) => {}
                Recv::Timeout => break,
                Recv::Closed => panic!("{} was disconnected while probing", to.user()),
            }
        }
        assert!(
            rt.now() < deadline,
            "no cross-node delivery {prefix} within {RECONNECT_WAIT:?}"
        );
    }
}

#[test]
fn redis_outage_keeps_local_delivery_and_cross_node_delivery_resumes() {
    let mut cluster = Cluster::start();
    let (a, b) = (cluster.a.addr, cluster.b.addr);
    let redis = &mut cluster.redis;
    let channel = room_channel("r");
    on_runtime!(Rt::Tokio, |rt| async move {
        let mut alice = connect(&rt, a, "alice").await;
        let mut carol = connect(&rt, a, "carol").await;
        let mut bob = connect(&rt, b, "bob").await;
        let mut dave = connect(&rt, b, "dave").await;
        for c in [&mut alice, &mut carol, &mut bob, &mut dave] {
            join(c, "r").await;
        }
        wait_numsub(redis, &channel, 2, WAIT);
        assert_ack(&alice.publish("r", "before", json!(0)).await, "before");
        for c in [&mut alice, &mut carol, &mut bob, &mut dave] {
            expect_message(c, "before").await;
        }
        for node in [a, b] {
            assert_eq!(metric(node, "ws_bus_connected"), 1);
            assert_eq!(metric(node, "ws_bus_reconnects_total"), 0);
        }
        let errors = [a, b].map(|n| metric(n, "ws_bus_errors_total"));
        let dropped_a = metric(a, "ws_bus_publish_dropped_total");

        // Kill Redis: both nodes notice, say so and count it.
        redis.stop();
        for (node, errors) in [a, b].into_iter().zip(errors) {
            wait_metric(node, "ws_bus_connected", |v| v == 0);
            wait_metric(node, "ws_bus_errors_total", |v| v > errors);
            assert_eq!(metric(node, "ws_bus_subscriptions"), 0);
        }

        // Local delivery goes on within each node; cross-node is dropped
        // (and counted on the publishing node).
        assert_ack(&alice.publish("r", "down-a", json!(1)).await, "down-a");
        for c in [&mut alice, &mut carol] {
            expect_message(c, "down-a").await;
        }
        assert_ack(&bob.publish("r", "down-b", json!(2)).await, "down-b");
        for c in [&mut bob, &mut dave] {
            expect_message(c, "down-b").await;
        }
        wait_metric(a, "ws_bus_publish_dropped_total", |v| v > dropped_a);
        // Both nodes still serve: new connections, HTTP, the hub.
        let mut late = connect(&rt, b, "late").await;
        assert!(late.barrier().await.is_empty());
        // Membership changes while down are kept for the reconnection:
        // a room both nodes first join now.
        join(&mut late, "r2").await;
        join(&mut alice, "r2").await;
        for node in [a, b] {
            let health = ws_tests::hub_client::http_get(node, "/healthz");
            assert_eq!(health.status, 200, "{node}: {health:?}");
        }

        // A longer outage (CLUSTER_OUTAGE_SECS) lets the backoff reach
        // its cap before Redis comes back.
        let outage = Duration::from_secs(env_usize("CLUSTER_OUTAGE_SECS", 0) as u64);
        sleep(&rt, outage).await;
        // Restart Redis on the same port: both buses reconnect,
        // resubscribe, and cross-node delivery resumes both ways.
        redis.restart();
        for node in [a, b] {
            wait_metric_for(node, "ws_bus_connected", RECONNECT_WAIT, |v| v == 1);
            wait_metric_for(node, "ws_bus_reconnects_total", RECONNECT_WAIT, |v| v >= 1);
        }
        wait_numsub(redis, GLOBAL, 2, WAIT);
        wait_numsub(redis, &channel, 2, WAIT);
        wait_numsub(redis, &room_channel("r2"), 2, WAIT);
        let (sent_ab, mut bob_ids) =
            probe_until_delivered(&rt, &mut alice, &mut bob, "r", "probe-ab").await;
        let (_, mut carol_ids) =
            probe_until_delivered(&rt, &mut dave, &mut carol, "r", "probe-ba").await;
        assert_ack(&alice.send_to("late", "hello-late", json!(0)).await, "dm");
        expect_message(&mut late, "hello-late").await;
        assert_ack(&alice.publish("r2", "in-r2", json!(0)).await, "in-r2");
        expect_message(&mut late, "in-r2").await;

        // What was published while Redis was down never crossed over
        // (pub/sub keeps nothing): down-a would have reached bob before
        // any of alice's probes, down-b carol before dave's.
        bob_ids.extend(ids_until_barrier(&mut bob).await);
        assert!(
            !bob_ids.iter().any(|i| i == "down-a"),
            "bob got a message published while Redis was down: {bob_ids:?}"
        );
        carol_ids.extend(ids_until_barrier(&mut carol).await);
        assert!(
            !carol_ids.iter().any(|i| i == "down-b"),
            "carol got a message published while Redis was down: {carol_ids:?}"
        );
        // Local delivery stayed exactly-once throughout: alice got each of
        // her probes once.
        let alice_ids = ids_until_barrier(&mut alice).await;
        for id in &sent_ab {
            let n = alice_ids.iter().filter(|i| *i == id).count();
            assert_eq!(n, 1, "alice got her {id} {n} times: {alice_ids:?}");
        }
        for node in [a, b] {
            assert_eq!(metric(node, "ws_bus_connected"), 1);
        }
    });
}

// ---------------------------------------------------------------------
// Benchmark: cross-node delivery rate and the latency the bus adds
// ---------------------------------------------------------------------

/// The clock the messages' send timestamps are read against.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
fn now_us() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// What one subscriber measured.
#[derive(Debug, Default)]
struct SubReport {
    /// Messages received of the throughput phase.
    bulk: usize,
    /// When the last one arrived (µs since epoch).
    bulk_last_us: u64,
    /// Added latency of each paced message, µs.
    latencies: Vec<u64>,
    /// Messages expected but not received.
    missing: usize,
}

/// One benchmark configuration.
#[derive(Debug, Clone, Copy)]
struct BenchCase {
    subscribers: usize,
    cross_node: bool,
    bulk: usize,
    paced: usize,
}

/// One row of the results.
#[derive(Debug)]
struct BenchResult {
    case: BenchCase,
    msgs_per_sec: f64,
    deliveries_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    missing: usize,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A bare hub connection for the benchmark's subscribers: it reads
/// messages without parsing their JSON (the client must not be the
/// bottleneck), finding the send timestamp by a substring search.
async fn raw_subscriber<R: Runtime>(
    rt: &R,
    addr: SocketAddr,
    user: &str,
    room: &str,
) -> WebSocket<R::Stream, R> {
    let target = format!("/ws?token={}", token(SECRET, user));
    let attempt = async {
        let io = rt.connect(&addr.to_string()).await?;
        let mut key = [0x5au8; 16];
        key[..user.len().min(16)].copy_from_slice(&user.as_bytes()[..user.len().min(16)]);
        let request = ClientRequest::new(addr.to_string(), &target, key);
        client_handshake(rt.clone(), io, request, WsConfig::default()).await
    };
    let (mut ws, _) = within(rt, WAIT, attempt)
        .await
        .expect("connect in time")
        .expect("connect");
    let join = json!({"type": "join", "room": room}).to_string();
    ws.send(Message::text(join)).await.expect("send join");
    loop {
        match within(rt, WAIT, ws.recv()).await {
            Some(Ok(Some(Message::Text(t)))) if t.as_str().contains(r#""op":"join""#) => {
                assert!(t.as_str().starts_with(r#"{"type":"ack""#), "{}", t.as_str());
                return ws;
            }
            Some(Ok(Some(_))) => {}
            other => panic!("{user}: no join ack: {other:?}"),
        }
    }
}

/// The number after `"t":` in a message (the send timestamp).
fn sent_at(text: &str) -> Option<u64> {
    let rest = &text[text.find(r#""t":"#)? + 4..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Subscribers on B (one thread, one smol `LocalExecutor`, one task per
/// connection) until each has every message or a wait runs out.
fn run_subscribers(
    addr: SocketAddr,
    case: BenchCase,
    room: String,
    ready: mpsc::Sender<()>,
) -> Vec<SubReport> {
    let executor = smol::LocalExecutor::new();
    let rt = runtime_smol::SmolRuntime::default();
    smol::block_on(executor.run(async {
        let mut clients = Vec::with_capacity(case.subscribers);
        for i in 0..case.subscribers {
            clients.push(raw_subscriber(&rt, addr, &format!("sub-{i}"), &room).await);
        }
        let _ = ready.send(());
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut ws| {
                let rt = rt.clone();
                executor.spawn(async move {
                    let mut report = SubReport::default();
                    let total = case.bulk + case.paced;
                    let mut got = 0;
                    while got < total {
                        match within(&rt, WAIT, ws.recv()).await {
                            Some(Ok(Some(Message::Text(t))))
                                if t.as_str().starts_with(r#"{"type":"message""#) =>
                            {
                                let at = now_us();
                                let text = t.as_str();
                                got += 1;
                                let sent = sent_at(text).unwrap_or(at);
                                if text.contains(r#""paced":true"#) {
                                    report.latencies.push(at.saturating_sub(sent));
                                } else {
                                    report.bulk += 1;
                                    report.bulk_last_us = at;
                                }
                            }
                            Some(Ok(Some(_))) => {}
                            _ => break,
                        }
                    }
                    report.missing = total - got;
                    report
                })
            })
            .collect();
        let mut reports = Vec::with_capacity(tasks.len());
        for t in tasks {
            reports.push(t.await);
        }
        reports
    }))
}

fn run_bench_case(cluster: &Cluster, case: BenchCase, n: usize) -> BenchResult {
    let room = format!("bench-{n}");
    let publisher_node = if case.cross_node {
        cluster.a.addr
    } else {
        cluster.b.addr
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let sub_addr = cluster.b.addr;
    let sub_room = room.clone();
    let subscribers =
        std::thread::spawn(move || run_subscribers(sub_addr, case, sub_room, ready_tx));
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("subscribers connected");

    let redis = &cluster.redis;
    let start_us = on_runtime!(Rt::Tokio, |rt| async {
        let mut publisher = connect(&rt, publisher_node, "publisher").await;
        join(&mut publisher, &room).await;
        wait_numsub(
            redis,
            &room_channel(&room),
            1 + u64::from(case.cross_node),
            WAIT,
        );
        // Latency first, on an idle system: one message at a time, each
        // acked before the next and paced, so nothing queues behind it.
        for k in 0..case.paced {
            let id = format!("{room}-paced-{k}");
            let data = json!({"t": now_us(), "paced": true});
            let reply = publisher.publish(&room, &id, data).await;
            assert_ack(&reply, &id);
            let _ = publisher.take_pending();
            sleep(&rt, Duration::from_millis(2)).await;
        }
        // Throughput: pipelined publishes in windows (the publisher reads
        // its acks and its own copies at each window's end).
        const WINDOW: usize = 256;
        let start = now_us();
        let mut i = 0;
        while i < case.bulk {
            let end = (i + WINDOW).min(case.bulk);
            for k in i..end {
                let id = format!("{room}-bulk-{k}");
                let data = json!({"t": now_us(), "k": k});
                publisher
                    .request(json!({"type": "publish", "room": room, "id": id, "data": data}))
                    .await;
            }
            publisher.barrier().await;
            i = end;
        }
        publisher.close().await;
        start
    });
    let reports = subscribers.join().expect("subscriber thread");

    let missing: usize = reports.iter().map(|r| r.missing).sum();
    let delivered: usize = reports.iter().map(|r| r.bulk).sum();
    let last = reports.iter().map(|r| r.bulk_last_us).max().unwrap_or(0);
    let secs = (last.saturating_sub(start_us)).max(1) as f64 / 1e6;
    let mut latencies: Vec<u64> = reports.into_iter().flat_map(|r| r.latencies).collect();
    latencies.sort_unstable();
    BenchResult {
        case,
        msgs_per_sec: case.bulk as f64 / secs,
        deliveries_per_sec: delivered as f64 / secs,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        missing,
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "benchmark: cargo test --release -p ws-tests --test cluster -- --ignored --nocapture"]
fn bench_cross_node_delivery() {
    let bulk = env_usize("CLUSTER_BENCH_MESSAGES", 10_000);
    let paced = env_usize("CLUSTER_BENCH_PACED", 500);
    let cluster = Cluster::start_with(&|s| {
        s.rate_per_sec = Some(1_000_000);
        s.rate_burst = Some(1_000_000);
        s.outbound_max_messages = Some(1_000_000);
        s.outbound_max_bytes = Some(1 << 30);
        s.dedup_per_publisher = Some(100_000);
    });
    let _ = epoch();
    let mut results = Vec::new();
    for subscribers in [10, 100] {
        for cross_node in [false, true] {
            let case = BenchCase {
                subscribers,
                cross_node,
                bulk,
                paced,
            };
            let result = run_bench_case(&cluster, case, results.len());
            println!("{result:?}");
            results.push(result);
        }
    }
    println!();
    println!(
        "publisher -> {bulk} msgs to N subscribers on node B (smol); publisher on B (local) or A (tokio, via Redis)"
    );
    println!(
        "{:>5} {:>7} {:>12} {:>14} {:>9} {:>9} {:>8}",
        "subs", "path", "msgs/s", "deliveries/s", "p50 µs", "p99 µs", "missing"
    );
    for r in &results {
        println!(
            "{:>5} {:>7} {:>12.0} {:>14.0} {:>9} {:>9} {:>8}",
            r.case.subscribers,
            if r.case.cross_node { "A->B" } else { "B->B" },
            r.msgs_per_sec,
            r.deliveries_per_sec,
            r.p50_us,
            r.p99_us,
            r.missing
        );
    }
    for pair in results.chunks(2) {
        if let [local, cross] = pair {
            println!(
                "{} subscribers: bus adds p50 {} µs, p99 {} µs; cross-node rate {:.0}% of local",
                local.case.subscribers,
                cross.p50_us as i64 - local.p50_us as i64,
                cross.p99_us as i64 - local.p99_us as i64,
                100.0 * cross.msgs_per_sec / local.msgs_per_sec.max(1.0)
            );
        }
    }
    for node in [cluster.a.addr, cluster.b.addr] {
        for name in [
            "ws_bus_published_total",
            "ws_bus_received_total",
            "ws_bus_received_dropped_total",
            "ws_bus_publish_dropped_total",
            "ws_slow_consumer_disconnects_total",
        ] {
            if let Some(v) = ws_tests::hub_client::metrics(node).get(name) {
                println!("{node} {name} {v}");
            }
        }
    }
    assert!(results.iter().all(|r| r.missing == 0), "messages were lost");
}
