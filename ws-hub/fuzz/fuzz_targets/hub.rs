//! The hub state machine on arbitrary sequences of commands, client bytes,
//! bus messages and time steps, with small limits so that every bound is
//! reached. After every step: the hub's own invariant check, no action for
//! a connection that is not open, every configured memory bound (open
//! connections, detached sessions, de-dup entries, replay buffers through
//! `check_invariants`, the adapters' outbound queues, payload sizes), and
//! no deadline in the past.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use ws_hub::{
    Action, BusMessage, BusTarget, Command, ConnId, Hub, HubConfig, Identity, OutboundConfig,
    OutboundQueue, PushOutcome, ResumeRequest, RoomName, SessionSecret, SlowConsumerPolicy, UserId,
};

const MAX_CONNECTIONS: usize = 4;
const MAX_DETACHED: usize = 3;
const MAX_MESSAGE: usize = 256;
const MAX_NAME: usize = 16;
const DEDUP_MAX: usize = 8;
const OUT_MESSAGES: usize = 6;
const OUT_BYTES: usize = 2048;

fn config(u: &mut Unstructured<'_>) -> Result<HubConfig> {
    Ok(HubConfig {
        cluster: u.arbitrary()?,
        node_id: "self".into(),
        ping_interval: Duration::from_secs(2),
        heartbeat_timeout: Duration::from_secs(5),
        idle_timeout: if u.arbitrary()? {
            Some(Duration::from_secs(30))
        } else {
            None
        },
        max_connections: MAX_CONNECTIONS,
        max_message_size: MAX_MESSAGE,
        max_rooms_per_conn: 2,
        max_name_len: MAX_NAME,
        rate_per_sec: 3,
        rate_burst: 6,
        max_violations: 4,
        violation_window: Duration::from_secs(10),
        dedup_window: Duration::from_secs(20),
        dedup_per_publisher: 4,
        dedup_max_entries: DEDUP_MAX,
        session_retention: Duration::from_secs(15),
        max_detached_sessions: MAX_DETACHED,
        replay_max_messages: 3,
        replay_max_bytes: 600,
        ack_timeout: Duration::from_secs(1),
        ack_max_backoff: Duration::from_secs(4),
        ack_max_retries: 2,
        max_unacked: 3,
        outbound: OutboundConfig {
            max_messages: OUT_MESSAGES,
            max_bytes: OUT_BYTES,
            policy: if u.arbitrary()? {
                SlowConsumerPolicy::DropOldest
            } else {
                SlowConsumerPolicy::Disconnect
            },
        },
        ..HubConfig::default()
    })
}

/// What the adapter side knows: open connections with their outbound
/// queues, and the session ids handed out (for resumes).
struct Adapter {
    queues: HashMap<u64, OutboundQueue>,
    closed: HashSet<u64>,
    sessions: Vec<String>,
    outbound: OutboundConfig,
}

impl Adapter {
    /// Applies the hub's actions as an adapter would; panics on any
    /// broken promise.
    fn absorb(&mut self, hub: &mut Hub, now: Instant) {
        let mut overflowed = Vec::new();
        while let Some(action) = hub.poll_action() {
            let conn = match &action {
                Action::Deliver { conn, .. }
                | Action::Ping { conn }
                | Action::Close { conn, .. } => conn.0,
                _ => continue,
            };
            assert!(
                self.queues.contains_key(&conn) || matches!(action, Action::Close { .. }),
                "{action:?} for a connection that is not open"
            );
            assert!(!self.closed.contains(&conn), "{action:?} after close");
            match action {
                Action::Close { .. } => {
                    self.queues.remove(&conn);
                    self.closed.insert(conn);
                }
                Action::Deliver { payload, .. } => {
                    // A payload is at most the client's message plus the
                    // envelope with bounded names and a 20-digit seq.
                    assert!(
                        payload.len() <= MAX_MESSAGE + 6 * MAX_NAME + 256,
                        "payload of {} bytes",
                        payload.len()
                    );
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload.to_vec())
                        && v["type"] == "welcome"
                        && let Some(s) = v["session"].as_str()
                        && self.sessions.len() < 16
                    {
                        self.sessions.push(s.to_owned());
                    }
                    let Some(q) = self.queues.get_mut(&conn) else {
                        continue;
                    };
                    if q.push(payload) == PushOutcome::Overflow {
                        overflowed.push(conn);
                    }
                    assert!(q.len() <= self.outbound.max_messages);
                    assert!(q.bytes() <= self.outbound.max_bytes);
                }
                _ => {}
            }
        }
        for conn in overflowed {
            if self.queues.contains_key(&conn) {
                hub.handle(now, Command::Overflowed { conn: ConnId(conn) });
                self.absorb(hub, now);
            }
        }
    }
}

/// A client message: mostly well-formed requests with fuzzed fields, some
/// raw bytes.
fn client_message(u: &mut Unstructured<'_>) -> Result<(Vec<u8>, bool)> {
    let room = format!("r{}", u.int_in_range(0..=2u8)?);
    let id = format!("i{}", u.int_in_range(0..=9u8)?);
    let text = match u.int_in_range(0..=10u8)? {
        0 => format!(r#"{{"type":"join","room":"{room}"}}"#),
        1 => format!(r#"{{"type":"leave","room":"{room}"}}"#),
        2 | 3 => {
            let data = "x".repeat(usize::from(u.arbitrary::<u8>()?));
            format!(r#"{{"type":"publish","room":"{room}","id":"{id}","data":"{data}"}}"#)
        }
        4 => format!(
            r#"{{"type":"send","user":"u{}","id":"{id}","data":1}}"#,
            u.int_in_range(0..=3u8)?
        ),
        5 => format!(r#"{{"type":"broadcast","id":"{id}","data":[1]}}"#),
        6 => format!(r#"{{"type":"ack","seq":{}}}"#, u.arbitrary::<u16>()?),
        7 => format!(
            r#"{{"type":"configure","delivery_acks":{}}}"#,
            u.arbitrary::<bool>()?
        ),
        8 => r#"{"type":"ping","id":"p"}"#.to_owned(),
        _ => {
            let raw: &[u8] = u.arbitrary()?;
            return Ok((raw.to_vec(), u.arbitrary()?));
        }
    };
    Ok((text.into_bytes(), true))
}

fn step(
    u: &mut Unstructured<'_>,
    hub: &mut Hub,
    ad: &mut Adapter,
    now: &mut Instant,
    next: &mut u64,
) -> Result<()> {
    match u.int_in_range(0..=9u8)? {
        0 | 1 => {
            // A new connection, possibly resuming (a known session id or
            // fuzzed query text).
            *next += 1;
            let conn = 100 + *next;
            let user = format!("u{}", u.int_in_range(0..=3u8)?);
            let resume = match u.int_in_range(0..=3u8)? {
                0 if !ad.sessions.is_empty() => {
                    let s = u.choose(&ad.sessions)?.clone();
                    Some(ResumeRequest {
                        session: s,
                        last_seq: u.arbitrary::<Option<u8>>()?.map(u64::from),
                    })
                }
                1 => ResumeRequest::from_query(&String::from_utf8_lossy(u.arbitrary::<&[u8]>()?)),
                _ => None,
            };
            ad.queues.insert(conn, OutboundQueue::new(ad.outbound));
            hub.handle(
                *now,
                Command::Connected {
                    conn: ConnId(conn),
                    identity: Identity::user(user),
                    remote_addr: None,
                    resume,
                },
            );
        }
        2..=4 => {
            let conn = pick(u, ad)?;
            let (data, is_text) = client_message(u)?;
            hub.handle(
                *now,
                Command::Received {
                    conn: ConnId(conn),
                    data: Bytes::from(data),
                    is_text,
                },
            );
        }
        5 => {
            let conn = ConnId(pick(u, ad)?);
            if u.arbitrary()? {
                let code = u.arbitrary()?;
                let reason = if u.arbitrary()? {
                    ws_hub::KEEP_SESSION.to_owned()
                } else {
                    let n = u.int_in_range(0..=8)?;
                    String::from_utf8_lossy(u.bytes(n)?).into_owned()
                };
                hub.handle(*now, Command::ClientClosed { conn, code, reason });
            }
            ad.queues.remove(&conn.0);
            hub.handle(*now, Command::Disconnected { conn });
        }
        6 => {
            let conn = ConnId(pick(u, ad)?);
            hub.handle(*now, Command::Activity { conn });
        }
        7 => {
            // Time passes; every deadline on the way fires in order.
            let end = *now + Duration::from_millis(u64::from(u.arbitrary::<u16>()?) * 2);
            let mut fired = 0;
            while let Some(t) = hub.poll_timeout() {
                if t > end {
                    break;
                }
                assert!(t >= *now, "deadline in the past");
                *now = t;
                hub.handle_timeout(*now);
                ad.absorb(hub, *now);
                hub.check_invariants().unwrap();
                fired += 1;
                assert!(fired < 10_000, "timer storm");
            }
            *now = end;
        }
        8 => {
            // A bus message: fuzzed JSON through the decoder, or a
            // well-formed one.
            let msg = if u.arbitrary()? {
                BusMessage::from_json(u.arbitrary()?).ok()
            } else {
                Some(BusMessage {
                    origin: if u.arbitrary()? { "self" } else { "other" }.into(),
                    target: match u.int_in_range(0..=2u8)? {
                        0 => {
                            BusTarget::Room(RoomName::new(format!("r{}", u.int_in_range(0..=2u8)?)))
                        }
                        1 => BusTarget::User(UserId::new(format!("u{}", u.int_in_range(0..=3u8)?))),
                        _ => BusTarget::Broadcast,
                    },
                    from: UserId::new("u9"),
                    id: format!("b{}", u.int_in_range(0..=9u8)?),
                    data: RawValue::from_string("7".into()).unwrap(),
                })
            };
            if let Some(msg) = msg {
                hub.handle(*now, Command::Bus(msg));
            }
        }
        _ => {
            let conn = ConnId(pick(u, ad)?);
            hub.handle(*now, Command::Overflowed { conn });
            ad.queues.remove(&conn.0);
        }
    }
    Ok(())
}

/// An open connection most of the time, sometimes an unknown one.
fn pick(u: &mut Unstructured<'_>, ad: &Adapter) -> Result<u64> {
    let mut open: Vec<u64> = ad.queues.keys().copied().collect();
    open.sort_unstable();
    if open.is_empty() || u.ratio(1, 8)? {
        return Ok(u64::from(u.arbitrary::<u8>()?));
    }
    Ok(*u.choose(&open)?)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(config) = config(&mut u) else { return };
    let outbound = config.outbound;
    // A fixed, non-zero secret: the fuzzer needs repeatable runs.
    let mut hub = Hub::with_defaults(config, SessionSecret::new([7; 32])).unwrap();
    let mut ad = Adapter {
        queues: HashMap::new(),
        closed: HashSet::new(),
        sessions: Vec::new(),
        outbound,
    };
    // Any base instant will do; the hub only compares instants.
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let mut next = 0;
    while !u.is_empty() {
        if step(&mut u, &mut hub, &mut ad, &mut now, &mut next).is_err() {
            break;
        }
        ad.absorb(&mut hub, now);
        hub.check_invariants().unwrap();
        if let Some(t) = hub.poll_timeout() {
            assert!(t >= now, "deadline in the past");
        }
        let m = hub.metrics();
        assert!(m.connections as usize <= MAX_CONNECTIONS);
        assert!(m.detached_sessions as usize <= MAX_DETACHED);
        assert!(m.sessions <= m.connections + m.detached_sessions);
        assert!(m.dedup_entries as usize <= DEDUP_MAX);
    }
    hub.handle(now, Command::Shutdown);
    ad.absorb(&mut hub, now);
    assert!(
        ad.queues.is_empty(),
        "shutdown left {:?} open",
        ad.queues.keys()
    );
    assert_eq!(hub.metrics().connections, 0);
});
