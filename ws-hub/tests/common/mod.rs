//! Virtual-time harness shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use ws_hub::{Action, Command, ConnId, Hub, HubConfig, Identity, ResumeRequest, SessionSecret};

/// The only clock read in the tests: an arbitrary origin for virtual time.
#[allow(clippy::disallowed_methods)]
pub fn origin() -> Instant {
    Instant::now()
}

/// The session secret of every test hub.
pub fn secret() -> SessionSecret {
    SessionSecret::new([7; 32])
}

pub struct Sim {
    pub hub: Hub,
    pub t0: Instant,
    pub now: Instant,
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl Sim {
    pub fn new(config: HubConfig) -> Self {
        Self::with_hub(Hub::with_defaults(config, secret()).expect("valid config"))
    }

    pub fn with_hub(hub: Hub) -> Self {
        let t0 = origin();
        Self { hub, t0, now: t0 }
    }

    /// Seconds since the origin.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    pub fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.hub.poll_action()).collect()
    }

    pub fn cmd(&mut self, c: Command) -> Vec<String> {
        self.hub.handle(self.now, c);
        let a = self.drain();
        render_all(&a)
    }

    pub fn connect(&mut self, conn: u64, user: &str) -> Vec<String> {
        self.cmd(Command::Connected {
            conn: ConnId(conn),
            identity: Identity::user(user),
            remote_addr: None,
            resume: None,
        })
    }

    pub fn resume(&mut self, conn: u64, user: &str, session: &str, last_seq: u64) -> Vec<String> {
        self.cmd(Command::Connected {
            conn: ConnId(conn),
            identity: Identity::user(user),
            remote_addr: None,
            resume: Some(ResumeRequest {
                session: session.to_owned(),
                last_seq: Some(last_seq),
            }),
        })
    }

    pub fn send(&mut self, conn: u64, json: &str) -> Vec<String> {
        self.cmd(Command::Received {
            conn: ConnId(conn),
            data: Bytes::copy_from_slice(json.as_bytes()),
            is_text: true,
        })
    }

    pub fn send_raw(&mut self, conn: u64, json: &str) -> Vec<Action> {
        self.hub.handle(
            self.now,
            Command::Received {
                conn: ConnId(conn),
                data: Bytes::copy_from_slice(json.as_bytes()),
                is_text: true,
            },
        );
        self.drain()
    }

    pub fn disconnect(&mut self, conn: u64) -> Vec<String> {
        self.cmd(Command::Disconnected { conn: ConnId(conn) })
    }

    pub fn session(&self, conn: u64) -> String {
        self.hub
            .session_id(ConnId(conn))
            .map(|s| s.as_str().to_owned())
            .expect("connected")
    }

    /// Jumps from deadline to deadline up to `now + d`, rendering every
    /// action with its time, e.g. `"@30 ping 1"`. `on_ping` may answer.
    pub fn advance_with(
        &mut self,
        d: Duration,
        mut on_ping: impl FnMut(&mut Hub, Instant, ConnId),
    ) -> Vec<String> {
        let end = self.now + d;
        let mut log = Vec::new();
        while let Some(t) = self.hub.poll_timeout() {
            if t > end {
                break;
            }
            self.now = t;
            self.hub.handle_timeout(t);
            let actions = self.drain();
            for a in &actions {
                log.push(format!("@{} {}", (t - self.t0).as_secs(), render(a)));
                if let Action::Ping { conn } = a {
                    on_ping(&mut self.hub, t, *conn);
                }
            }
            log.extend(
                std::iter::from_fn(|| self.hub.poll_action())
                    .map(|a| format!("@{} {}", (t - self.t0).as_secs(), render(&a))),
            );
        }
        self.now = end;
        log
    }

    pub fn advance(&mut self, d: Duration) -> Vec<String> {
        self.advance_with(d, |_, _, _| {})
    }
}

pub fn render(a: &Action) -> String {
    match a {
        Action::Deliver { conn, payload } => {
            let text = String::from_utf8(payload.to_vec()).expect("utf-8");
            if text.starts_with(r#"{"type":"welcome""#) {
                format!("{} <- welcome", conn.0)
            } else {
                format!("{} <- {}", conn.0, text)
            }
        }
        Action::Ping { conn } => format!("ping {}", conn.0),
        Action::Close { conn, code, reason } => format!("close {} {code} {reason}", conn.0),
        Action::PublishBus(m) => format!("bus {}", String::from_utf8_lossy(&m.to_json())),
        Action::SubscribeBus(r) => format!("sub {r}"),
        Action::UnsubscribeBus(r) => format!("unsub {r}"),
        other => format!("{other:?}"),
    }
}

pub fn render_all(a: &[Action]) -> Vec<String> {
    a.iter().map(render).collect()
}

/// `{"type":"message",...}` as rendered for `conn`.
pub fn msg(conn: u64, seq: u64, room: &str, id: &str, from: &str, data: &str) -> String {
    format!(
        r#"{conn} <- {{"type":"message","seq":{seq},"room":"{room}","id":"{id}","from":"{from}","data":{data}}}"#
    )
}

pub fn ack(conn: u64, op: &str, id: &str) -> String {
    format!(r#"{conn} <- {{"type":"ack","op":"{op}","id":"{id}"}}"#)
}

pub fn join_ack(conn: u64, room: &str) -> String {
    format!(r#"{conn} <- {{"type":"ack","op":"join","room":"{room}"}}"#)
}

pub fn nack(conn: u64, op: &str, id: &str, reason: &str) -> String {
    format!(r#"{conn} <- {{"type":"nack","op":"{op}","id":"{id}","reason":"{reason}"}}"#)
}

pub fn publish(room: &str, id: &str, data: &str) -> String {
    format!(r#"{{"type":"publish","room":"{room}","id":"{id}","data":{data}}}"#)
}

pub fn join(room: &str) -> String {
    format!(r#"{{"type":"join","room":"{room}"}}"#)
}

/// A config without idle eviction, for tests that do not care.
pub fn quiet_config() -> HubConfig {
    HubConfig {
        idle_timeout: None,
        ..HubConfig::default()
    }
}
