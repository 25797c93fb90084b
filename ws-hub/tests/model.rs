//! Randomised model test: many connections through joins, publishes with
//! repeated ids, delivery acks, disconnects, resumes, bus traffic, garbage
//! and clock jumps. After every step the hub's own invariants must hold
//! (including every configured memory bound), and the clients' view must
//! be consistent: no action for a closed connection, per-session sequence
//! numbers in order without gaps, a resume continuing exactly after
//! `last_seq` (or an explicit failure), and no duplicate delivery inside the
//! de-dup window.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;
use serde_json::value::RawValue;
use ws_hub::{
    Action, BusMessage, BusTarget, Command, ConnId, Hub, HubConfig, Identity, ResumeRequest,
    RoomName, UserId,
};

#[derive(Debug, Clone)]
enum Msg {
    Join(u8),
    Leave(u8),
    Publish(u8, u8, bool),
    Direct(u8, u8),
    Broadcast(u8),
    Ack(u8),
    Configure(bool),
    Garbage(Vec<u8>),
    Binary,
}

#[derive(Debug, Clone)]
enum Op {
    Connect {
        slot: u8,
        user: u8,
    },
    Resume {
        slot: u8,
        session: u8,
        user_ok: bool,
        seq_mode: u8,
    },
    Send {
        slot: u8,
        msg: Msg,
    },
    Disconnect(u8),
    /// A close frame from the client (1000, 1000 keep-session, 1005,
    /// 1001), then the disconnect.
    ClientClose(u8, u8),
    Activity(u8),
    Overflow(u8),
    Advance(u16),
    Bus {
        from: u8,
        id: u8,
        room: u8,
        origin_self: bool,
    },
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        3 => (0..3u8).prop_map(Msg::Join),
        1 => (0..3u8).prop_map(Msg::Leave),
        6 => (0..3u8, 0..6u8, proptest::bool::weighted(0.05)).prop_map(|(r, i, big)| Msg::Publish(r, i, big)),
        1 => (0..3u8, 0..6u8).prop_map(|(u, i)| Msg::Direct(u, i)),
        1 => (0..6u8).prop_map(Msg::Broadcast),
        2 => (0..20u8).prop_map(Msg::Ack),
        1 => any::<bool>().prop_map(Msg::Configure),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Msg::Garbage),
        1 => Just(Msg::Binary),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..6u8, 0..3u8).prop_map(|(slot, user)| Op::Connect { slot, user }),
        2 => (0..6u8, any::<u8>(), proptest::bool::weighted(0.8), 0..4u8)
            .prop_map(|(slot, session, user_ok, seq_mode)| Op::Resume { slot, session, user_ok, seq_mode }),
        12 => (0..6u8, msg()).prop_map(|(slot, msg)| Op::Send { slot, msg }),
        2 => (0..6u8).prop_map(Op::Disconnect),
        1 => (0..6u8, 0..4u8).prop_map(|(slot, how)| Op::ClientClose(slot, how)),
        2 => (0..6u8).prop_map(Op::Activity),
        1 => (0..6u8).prop_map(Op::Overflow),
        3 => (0..200u16).prop_map(Op::Advance),
        2 => (0..3u8, 0..6u8, 0..3u8, any::<bool>())
            .prop_map(|(from, id, room, origin_self)| Op::Bus { from, id, room, origin_self }),
    ]
}

fn config() -> HubConfig {
    HubConfig {
        cluster: true,
        node_id: "self".into(),
        max_connections: 5,
        max_message_size: 200,
        max_rooms_per_conn: 2,
        rate_per_sec: 2,
        rate_burst: 5,
        max_violations: 5,
        dedup_window: Duration::from_secs(30),
        session_retention: Duration::from_secs(60),
        max_detached_sessions: 3,
        replay_max_messages: 4,
        replay_max_bytes: 2000,
        ack_timeout: Duration::from_secs(5),
        ack_max_retries: 2,
        max_unacked: 3,
        idle_timeout: Some(Duration::from_secs(400)),
        ..HubConfig::default()
    }
}

#[derive(Debug)]
enum Expect {
    Exact(u64),
    AtLeast(u64),
}

#[derive(Debug)]
struct ClientConn {
    user: String,
    session: Option<String>,
    requested: Option<u64>,
    expect: Expect,
    acks: bool,
    max_seen: u64,
}

/// `(from, id)` -> (first delivery time, seq) for one session.
type SeenIds = HashMap<(String, String), (Instant, u64)>;

#[derive(Default)]
struct Clients {
    open: HashMap<u64, ClientConn>,
    closed: HashSet<u64>,
    slots: HashMap<u8, u64>,
    /// Per session: user, highest seq seen, and (from, id) -> (first time, seq).
    sessions: Vec<String>,
    session_user: HashMap<String, String>,
    last_seen: HashMap<String, u64>,
    seen_ids: HashMap<String, SeenIds>,
    /// Sessions that ever enabled delivery acks (the setting survives resume).
    session_acks: HashSet<String>,
}

fn check_actions(c: &mut Clients, now: Instant, actions: Vec<Action>) -> Result<(), TestCaseError> {
    for a in actions {
        let conn = match &a {
            Action::Deliver { conn, .. } | Action::Ping { conn } | Action::Close { conn, .. } => {
                conn.0
            }
            _ => continue,
        };
        prop_assert!(!c.closed.contains(&conn), "action for closed {conn}: {a:?}");
        if let Action::Close { .. } = a {
            c.closed.insert(conn);
            c.open.remove(&conn);
            continue;
        }
        let Action::Deliver { payload, .. } = a else {
            continue;
        };
        let v: Value = serde_json::from_slice(&payload.to_vec())
            .map_err(|e| TestCaseError::fail(format!("bad json {e}")))?;
        let Some(cc) = c.open.get_mut(&conn) else {
            // Refused connection (never opened): only a close may follow.
            return Err(TestCaseError::fail(format!(
                "deliver to unopened {conn}: {v}"
            )));
        };
        match v["type"].as_str().unwrap_or("") {
            "welcome" => {
                let sid = v["session"].as_str().unwrap_or("").to_owned();
                if !c.session_user.contains_key(&sid) {
                    c.session_user.insert(sid.clone(), cc.user.clone());
                    c.sessions.push(sid.clone());
                    cc.expect = Expect::Exact(1);
                    cc.max_seen = 0;
                } else {
                    prop_assert!(cc.requested.is_some());
                    cc.acks |= c.session_acks.contains(&sid);
                }
                cc.session = Some(sid);
            }
            "resumed" => {
                let last = v["last_seq"].as_u64().unwrap_or(u64::MAX);
                prop_assert_eq!(Some(last), cc.requested);
                cc.expect = Expect::Exact(last + 1);
            }
            "resume_failed" if v["reason"] == "overflow" => {
                cc.expect = Expect::AtLeast(cc.requested.unwrap_or(0) + 1);
            }
            "message" => {
                let seq = v["seq"].as_u64().unwrap_or(0);
                let sid = cc.session.clone().unwrap_or_default();
                if cc.acks && seq <= cc.max_seen {
                    continue; // retransmission
                }
                match cc.expect {
                    Expect::Exact(n) => prop_assert_eq!(seq, n, "gap or reorder on {}", conn),
                    Expect::AtLeast(n) => prop_assert!(seq >= n),
                }
                cc.expect = Expect::Exact(seq + 1);
                cc.max_seen = cc.max_seen.max(seq);
                let last = c.last_seen.entry(sid.clone()).or_default();
                *last = (*last).max(seq);
                let key = (
                    v["from"].as_str().unwrap_or("").to_owned(),
                    v["id"].as_str().unwrap_or("").to_owned(),
                );
                let ids = c.seen_ids.entry(sid).or_default();
                if let Some(&(t, s)) = ids.get(&key) {
                    if s != seq {
                        prop_assert!(
                            now - t >= Duration::from_secs(30),
                            "duplicate delivery of {key:?} within the window"
                        );
                        ids.insert(key, (now, seq));
                    }
                } else {
                    ids.insert(key, (now, seq));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut hub = Hub::with_defaults(config(), common::secret())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let t0 = common::origin();
    let mut now = t0;
    let mut c = Clients::default();
    let mut next_conn = 0u64;
    let users = ["u0", "u1", "u2"];
    for op in ops {
        let slot_conn = |c: &Clients, slot: u8| c.slots.get(&slot).copied().unwrap_or(999);
        match op {
            Op::Connect { slot, user } => {
                next_conn += 1;
                let user = users[usize::from(user) % 3];
                c.slots.insert(slot, next_conn);
                c.open.insert(
                    next_conn,
                    ClientConn {
                        user: user.into(),
                        session: None,
                        requested: None,
                        expect: Expect::Exact(1),
                        acks: false,
                        max_seen: 0,
                    },
                );
                hub.handle(
                    now,
                    Command::Connected {
                        conn: ConnId(next_conn),
                        identity: Identity::user(user),
                        remote_addr: None,
                        resume: None,
                    },
                );
            }
            Op::Resume {
                slot,
                session,
                user_ok,
                seq_mode,
            } => {
                if c.sessions.is_empty() {
                    continue;
                }
                let sid = c.sessions[usize::from(session) % c.sessions.len()].clone();
                let owner = c.session_user.get(&sid).cloned().unwrap_or_default();
                let user = if user_ok {
                    owner
                } else {
                    "intruder".to_owned()
                };
                let seen = c.last_seen.get(&sid).copied().unwrap_or(0);
                let last_seq = match seq_mode {
                    0 | 1 => seen,
                    2 => seen.saturating_sub(1),
                    _ => seen + 50,
                };
                next_conn += 1;
                c.slots.insert(slot, next_conn);
                c.open.insert(
                    next_conn,
                    ClientConn {
                        user: user.clone(),
                        session: None,
                        requested: Some(last_seq),
                        expect: Expect::Exact(1),
                        acks: false,
                        max_seen: last_seq,
                    },
                );
                hub.handle(
                    now,
                    Command::Connected {
                        conn: ConnId(next_conn),
                        identity: Identity::user(user),
                        remote_addr: None,
                        resume: Some(ResumeRequest {
                            session: sid,
                            last_seq: Some(last_seq),
                        }),
                    },
                );
            }
            Op::Send { slot, msg } => {
                let conn = slot_conn(&c, slot);
                let (data, is_text) = match msg {
                    Msg::Join(r) => (
                        format!(r#"{{"type":"join","room":"r{r}"}}"#).into_bytes(),
                        true,
                    ),
                    Msg::Leave(r) => (
                        format!(r#"{{"type":"leave","room":"r{r}"}}"#).into_bytes(),
                        true,
                    ),
                    Msg::Publish(r, i, big) => {
                        let data = if big { "x".repeat(300) } else { i.to_string() };
                        (
                            format!(
                                r#"{{"type":"publish","room":"r{r}","id":"i{i}","data":"{data}"}}"#
                            )
                            .into_bytes(),
                            true,
                        )
                    }
                    Msg::Direct(u, i) => (
                        format!(r#"{{"type":"send","user":"u{u}","id":"d{i}","data":1}}"#)
                            .into_bytes(),
                        true,
                    ),
                    Msg::Broadcast(i) => (
                        format!(r#"{{"type":"broadcast","id":"b{i}","data":1}}"#).into_bytes(),
                        true,
                    ),
                    Msg::Ack(s) => (format!(r#"{{"type":"ack","seq":{s}}}"#).into_bytes(), true),
                    Msg::Configure(on) => {
                        if on && let Some(cc) = c.open.get_mut(&conn) {
                            cc.acks = true;
                            if let Some(sid) = &cc.session {
                                c.session_acks.insert(sid.clone());
                            }
                        }
                        (
                            format!(r#"{{"type":"configure","delivery_acks":{on}}}"#).into_bytes(),
                            true,
                        )
                    }
                    Msg::Garbage(g) => (g, true),
                    Msg::Binary => (vec![1, 2, 3], false),
                };
                hub.handle(
                    now,
                    Command::Received {
                        conn: ConnId(conn),
                        data: Bytes::from(data),
                        is_text,
                    },
                );
            }
            Op::Disconnect(slot) => {
                let conn = slot_conn(&c, slot);
                if c.open.remove(&conn).is_some() {
                    c.closed.insert(conn);
                }
                hub.handle(now, Command::Disconnected { conn: ConnId(conn) });
            }
            Op::ClientClose(slot, how) => {
                let conn = slot_conn(&c, slot);
                if c.open.remove(&conn).is_some() {
                    c.closed.insert(conn);
                }
                let (code, reason) = [
                    (1000, "bye"),
                    (1000, ws_hub::KEEP_SESSION),
                    (1005, ""),
                    (1001, ""),
                ][usize::from(how)];
                let conn = ConnId(conn);
                let reason = reason.to_owned();
                hub.handle(now, Command::ClientClosed { conn, code, reason });
                hub.handle(now, Command::Disconnected { conn });
            }
            Op::Activity(slot) => hub.handle(
                now,
                Command::Activity {
                    conn: ConnId(slot_conn(&c, slot)),
                },
            ),
            Op::Overflow(slot) => hub.handle(
                now,
                Command::Overflowed {
                    conn: ConnId(slot_conn(&c, slot)),
                },
            ),
            Op::Advance(secs) => {
                let end = now + Duration::from_secs(u64::from(secs));
                while let Some(t) = hub.poll_timeout() {
                    if t > end {
                        break;
                    }
                    prop_assert!(t >= now, "deadline in the past");
                    now = t;
                    hub.handle_timeout(now);
                    let actions: Vec<_> = std::iter::from_fn(|| hub.poll_action()).collect();
                    check_actions(&mut c, now, actions)?;
                    hub.check_invariants().map_err(TestCaseError::fail)?;
                }
                now = end;
            }
            Op::Bus {
                from,
                id,
                room,
                origin_self,
            } => {
                hub.handle(
                    now,
                    Command::Bus(BusMessage {
                        origin: if origin_self {
                            "self".into()
                        } else {
                            "other".into()
                        },
                        target: BusTarget::Room(RoomName::new(format!("r{room}"))),
                        from: UserId::new(users[usize::from(from) % 3]),
                        id: format!("i{id}"),
                        data: RawValue::from_string("7".into())
                            .map_err(|e| TestCaseError::fail(e.to_string()))?,
                    }),
                );
            }
        }
        let actions: Vec<_> = std::iter::from_fn(|| hub.poll_action()).collect();
        check_actions(&mut c, now, actions)?;
        hub.check_invariants().map_err(TestCaseError::fail)?;
        let m = hub.metrics();
        prop_assert!(m.connections <= 5 && m.detached_sessions <= 3);
    }
    // Graceful shutdown closes everything that is open.
    hub.handle(now, Command::Shutdown);
    let actions: Vec<_> = std::iter::from_fn(|| hub.poll_action()).collect();
    let closes = actions
        .iter()
        .filter(|a| matches!(a, Action::Close { .. }))
        .count();
    prop_assert_eq!(closes, c.open.len());
    check_actions(&mut c, now, actions)?;
    prop_assert!(c.open.is_empty());
    prop_assert_eq!(hub.metrics().connections, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_keep_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
