//! The sans-IO hub client in virtual time: backoff schedule, watchdog,
//! terminal cases, resume, gaps and rejoin, retries with the same id, and
//! the bounded pending buffer.

use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use ws_hub::ResumeFailure;
use ws_hub::client::{
    Ack, Action, CLOSE_WATCHDOG, Client, ClientConfig, Event, Gap, GapReason, Input, OpError,
    Reply, State, SubmitError,
};

const URL: &str = "ws://127.0.0.1:1/ws";

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).expect("valid JSON")
}

/// A client with its virtual clock.
struct T {
    c: Client,
    now: Instant,
}

impl T {
    fn new(config: ClientConfig) -> Self {
        Self {
            c: Client::new(config).expect("valid config"),
            now: origin(),
        }
    }

    fn with_seed(seed: u64) -> Self {
        let mut config = ClientConfig::new(URL);
        config.seed = seed;
        Self::new(config)
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.c.poll_action()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.c.poll_event()).collect()
    }

    fn sent(&mut self) -> Vec<String> {
        self.actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Send { text } => Some(text),
                _ => None,
            })
            .collect()
    }

    fn input(&mut self, i: Input<'_>) {
        self.c.handle(self.now, i);
    }

    fn text(&mut self, s: &str) {
        self.input(Input::Text(s));
    }

    fn welcome(&mut self, session: &str) {
        self.text(&format!(
            r#"{{"type":"welcome","session":"{session}","user":"u","ping_interval_ms":30000}}"#
        ));
    }

    /// Jumps to the deadline and fires it; returns the time waited.
    fn fire(&mut self) -> Duration {
        let t = self.c.poll_timeout().expect("a deadline");
        let waited = t.saturating_duration_since(self.now);
        self.now = t;
        self.c.handle_timeout(t);
        waited
    }

    fn open_url(&mut self) -> String {
        let opens: Vec<String> = self
            .actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Open { url } => Some(url),
                _ => None,
            })
            .collect();
        assert_eq!(opens.len(), 1, "{opens:?}");
        opens.into_iter().next().unwrap_or_default()
    }

    /// connect → open → upgraded → welcome.
    fn up(&mut self, session: &str) -> String {
        if self.c.state() == State::Disconnected && self.c.poll_timeout().is_none() {
            self.c.connect(self.now);
        } else if self.c.state() == State::Disconnected {
            self.fire();
        }
        let url = self.open_url();
        self.input(Input::Connected);
        self.welcome(session);
        assert_eq!(self.c.state(), State::Connected);
        url
    }

    fn lose(&mut self) {
        self.input(Input::Closed {
            code: None,
            reason: "",
        });
        assert_eq!(self.c.state(), State::Disconnected);
    }
}

fn replies(events: &[Event]) -> Vec<Reply> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Reply(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn gaps(events: &[Event]) -> Vec<Gap> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Gap(g) => Some(*g),
            _ => None,
        })
        .collect()
}

fn states(events: &[Event]) -> Vec<(State, State, Option<u16>, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::State(s) => Some((s.from, s.to, s.code, s.reason.clone())),
            _ => None,
        })
        .collect()
}

/// Delays of the first `n` failed attempts in a row (no connection made).
fn failure_delays(seed: u64, n: usize) -> Vec<Duration> {
    let mut t = T::with_seed(seed);
    t.c.connect(t.now);
    let mut delays = Vec::new();
    for _ in 0..n {
        t.open_url();
        t.input(Input::ConnectFailed { status: None });
        assert_eq!(t.c.state(), State::Disconnected);
        delays.push(t.fire());
    }
    delays
}

#[test]
fn backoff_bounds_and_doubling_window() {
    let (min, max) = (ms(500), Duration::from_secs(20));
    for seed in 0..50 {
        for (n, d) in failure_delays(seed, 12).into_iter().enumerate() {
            let window = min * (1u32 << n);
            assert!(d >= min && d <= max, "seed {seed} attempt {n}: {d:?}");
            assert!(d <= min + window, "seed {seed} attempt {n}: {d:?}");
        }
    }
}

#[test]
fn backoff_jitter_spreads_over_the_window() {
    // Attempt 3 of 100 clients: the delays spread over [0.5 s, 4.5 s]
    // rather than bunching (full jitter), and differ per seed.
    let mut d: Vec<Duration> = (0..100).map(|s| failure_delays(s, 4)[3]).collect();
    d.sort();
    d.dedup();
    assert!(d.len() > 90, "{} distinct delays", d.len());
    assert!(d[0] < ms(1500), "lowest {:?}", d[0]);
    assert!(d[d.len() - 1] > ms(3500), "highest {:?}", d[d.len() - 1]);
    // Late attempts are capped at the maximum.
    let late = failure_delays(1, 30);
    assert!(late[20..].iter().all(|d| *d <= Duration::from_secs(20)));
    assert!(late[20..].iter().any(|d| *d > Duration::from_secs(10)));
}

/// Grows the backoff, connects, stays up for `up`, drops: the next delay.
fn delay_after_connection(seed: u64, up: Duration) -> Duration {
    let mut t = T::with_seed(seed);
    t.c.connect(t.now);
    for _ in 0..8 {
        t.open_url();
        t.input(Input::ConnectFailed { status: None });
        t.fire();
    }
    t.input(Input::Connected);
    t.welcome("S");
    t.now += up;
    t.input(Input::Activity);
    t.lose();
    t.fire()
}

#[test]
fn backoff_resets_after_a_stable_period_only() {
    let stable: Vec<Duration> = (0..40)
        .map(|s| delay_after_connection(s, Duration::from_secs(10)))
        .collect();
    assert!(
        stable.iter().all(|d| *d >= ms(500) && *d <= ms(1000)),
        "{stable:?}"
    );
    let flapping: Vec<Duration> = (0..40)
        .map(|s| delay_after_connection(s, Duration::from_secs(9)))
        .collect();
    assert!(
        flapping.iter().filter(|d| **d > ms(1000)).count() > 30,
        "{flapping:?}"
    );
}

#[test]
fn watchdog_replaces_a_silent_connection() {
    let mut t = T::with_seed(1);
    t.up("S");
    let start = t.now;
    // ping interval 30 s (from welcome) + grace 10 s
    assert_eq!(t.c.poll_timeout(), Some(start + Duration::from_secs(40)));
    t.now += Duration::from_secs(25);
    t.input(Input::Activity); // a server ping
    assert_eq!(t.c.poll_timeout(), Some(start + Duration::from_secs(65)));
    t.now += Duration::from_secs(30);
    t.text(r#"{"type":"pong"}"#);
    assert_eq!(t.c.poll_timeout(), Some(start + Duration::from_secs(95)));
    t.events();
    // An early timer call does nothing.
    t.c.handle_timeout(t.now);
    assert!(t.actions().is_empty());
    assert_eq!(t.fire(), Duration::from_secs(40));
    assert_eq!(
        t.actions(),
        [Action::Close {
            code: CLOSE_WATCHDOG,
            reason: "watchdog timeout"
        }]
    );
    assert_eq!(
        states(&t.events()),
        [(
            State::Connected,
            State::Disconnected,
            Some(CLOSE_WATCHDOG),
            "watchdog timeout".to_owned()
        )]
    );
    t.fire();
    assert_eq!(t.open_url(), format!("{URL}?session=S&last_seq=0"));
}

#[test]
fn connect_timeout_retries() {
    let mut t = T::with_seed(1);
    t.c.connect(t.now);
    t.open_url();
    t.input(Input::Connected); // upgraded, but no welcome
    assert_eq!(t.fire(), Duration::from_secs(10));
    assert!(matches!(t.actions()[..], [Action::Close { .. }]));
    assert_eq!(t.c.state(), State::Disconnected);
    t.fire();
    t.open_url();
}

#[test]
fn policy_close_is_terminal() {
    let mut t = T::with_seed(1);
    t.up("S");
    let id = t.c.publish("r", &raw("1"), None).expect("queued");
    t.events();
    t.input(Input::Closed {
        code: Some(1008),
        reason: "too many protocol violations",
    });
    let ev = t.events();
    assert_eq!(
        states(&ev),
        [(
            State::Connected,
            State::Closed,
            Some(1008),
            "too many protocol violations".to_owned()
        )]
    );
    assert_eq!(
        replies(&ev),
        [Reply {
            id,
            op: ws_hub::client::Op::Publish,
            result: Err(OpError::Closed)
        }]
    );
    assert_eq!(t.c.poll_timeout(), None);
    assert_eq!(t.c.publish("r", &raw("1"), None), Err(SubmitError::Closed));
    // 1001 and 1013, by contrast, reconnect.
    for code in [1001, 1011, 1013] {
        let mut t = T::with_seed(1);
        t.up("S");
        t.input(Input::Closed {
            code: Some(code),
            reason: "x",
        });
        assert_eq!(t.c.state(), State::Disconnected);
        assert!(t.c.poll_timeout().is_some());
    }
}

#[test]
fn rejected_token_without_provider_is_terminal() {
    let mut config = ClientConfig::new(URL);
    config.token = Some("a b".to_owned());
    let mut t = T::new(config);
    t.c.connect(t.now);
    assert_eq!(t.open_url(), format!("{URL}?token=a%20b"));
    t.input(Input::ConnectFailed { status: Some(401) });
    assert_eq!(t.c.state(), State::Closed);
    assert_eq!(t.c.poll_timeout(), None);
    // Other refusals are retried.
    let mut t = T::with_seed(1);
    t.c.connect(t.now);
    t.open_url();
    t.input(Input::ConnectFailed { status: Some(503) });
    assert_eq!(
        states(&t.events()).last().map(|s| s.3.clone()),
        Some("connect failed (HTTP 503)".to_owned())
    );
    t.fire();
    t.open_url();
}

#[test]
fn token_provider_is_asked_on_every_attempt_and_after_401() {
    let mut config = ClientConfig::new(URL);
    config.token_provider = true;
    let mut t = T::new(config);
    t.c.connect(t.now);
    assert_eq!(t.actions(), [Action::NeedToken]);
    assert_eq!(t.c.state(), State::Connecting);
    t.input(Input::Token(Some("a".into())));
    assert_eq!(t.open_url(), format!("{URL}?token=a"));
    // Refused: asked again; a new token is tried at once.
    t.input(Input::ConnectFailed { status: Some(401) });
    assert_eq!(t.actions(), [Action::NeedToken]);
    t.input(Input::Token(Some("b".into())));
    assert_eq!(t.open_url(), format!("{URL}?token=b"));
    t.input(Input::Connected);
    t.welcome("S");
    t.lose();
    // Every reconnect asks again.
    t.fire();
    assert_eq!(t.actions(), [Action::NeedToken]);
    t.input(Input::Token(Some("c".into())));
    assert_eq!(t.open_url(), format!("{URL}?token=c&session=S&last_seq=0"));
    // Refused, and the provider has nothing new: terminal.
    t.input(Input::ConnectFailed { status: Some(401) });
    assert_eq!(t.actions(), [Action::NeedToken]);
    t.input(Input::Token(Some("c".into())));
    assert_eq!(t.c.state(), State::Closed);
    assert_eq!(
        states(&t.events()).last().map(|s| (s.1, s.3.clone())),
        Some((State::Closed, "unauthorized (HTTP 401)".to_owned()))
    );
    // No token at all after a 401: terminal too.
    let mut config = ClientConfig::new(URL);
    config.token_provider = true;
    let mut t = T::new(config);
    t.c.connect(t.now);
    t.input(Input::Token(None));
    assert_eq!(t.open_url(), URL);
    t.input(Input::ConnectFailed { status: Some(401) });
    t.input(Input::Token(None));
    assert_eq!(t.c.state(), State::Closed);
}

fn msg(seq: u64, id: &str) -> String {
    format!(r#"{{"type":"message","seq":{seq},"room":"r","id":"{id}","from":"p","data":{seq}}}"#)
}

#[test]
fn lost_session_rejoins_and_reports_one_gap() {
    let mut t = T::with_seed(1);
    t.up("S1");
    let j = t.c.join("r").expect("queued");
    t.c.join("q").expect("queued");
    t.text(&format!(
        r#"{{"type":"ack","op":"join","room":"r","id":"{j}"}}"#
    ));
    t.text(&msg(1, "a"));
    t.text(&msg(2, "b"));
    assert_eq!(t.c.last_seq(), 2);
    t.lose();
    // Queued offline, sent after the rejoin.
    let p =
        t.c.publish("r", &raw(r#""x""#), Some("p1"))
            .expect("queued");
    t.events();
    t.actions();
    t.fire();
    assert_eq!(t.open_url(), format!("{URL}?session=S1&last_seq=2"));
    t.input(Input::Connected);
    t.welcome("S2"); // a different session: the resume failed
    let sent = t.sent();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent[0].starts_with(r#"{"type":"join","room":"r","id":"#),
        "{sent:?}"
    );
    assert!(
        sent[1].starts_with(r#"{"type":"join","room":"q","id":"#),
        "{sent:?}"
    );
    assert_eq!(
        sent[2],
        format!(r#"{{"type":"publish","room":"r","id":"{p}","data":"x"}}"#)
    );
    t.text(r#"{"type":"resume_failed","reason":"expired","session":"S2"}"#);
    let ev = t.events();
    assert_eq!(
        gaps(&ev),
        [Gap {
            reason: GapReason::ResumeFailed(ResumeFailure::Expired),
            last_seq: 2
        }]
    );
    assert_eq!(t.c.session(), Some("S2"));
    assert_eq!(t.c.last_seq(), 0);
    // Numbering restarts in the new session.
    t.text(&msg(1, "c"));
    assert!(
        t.events()
            .iter()
            .any(|e| matches!(e, Event::Message(m) if m.id == "c"))
    );
    assert_eq!(t.c.rooms().collect::<Vec<_>>(), ["r"]);
}

#[test]
fn refused_rejoin_is_reported() {
    let mut t = T::with_seed(1);
    t.up("S1");
    let j = t.c.join("r").expect("queued");
    t.text(&format!(
        r#"{{"type":"ack","op":"join","room":"r","id":"{j}"}}"#
    ));
    t.lose();
    t.fire();
    t.open_url();
    t.input(Input::Connected);
    t.welcome("S2");
    let sent = t.sent();
    let id = sent[0]
        .split(r#""id":""#)
        .nth(1)
        .unwrap_or("")
        .trim_end_matches("\"}");
    t.text(&format!(
        r#"{{"type":"nack","op":"join","room":"r","id":"{id}","reason":"forbidden"}}"#
    ));
    assert!(t.events().iter().any(|e| matches!(
        e,
        Event::RejoinFailed { room, reason } if room == "r" && reason == "forbidden"
    )));
    assert_eq!(t.c.rooms().count(), 0);
}

#[test]
fn overflow_keeps_rooms_and_reports_a_gap() {
    let mut t = T::with_seed(1);
    t.up("S1");
    let j = t.c.join("r").expect("queued");
    t.text(&format!(
        r#"{{"type":"ack","op":"join","room":"r","id":"{j}"}}"#
    ));
    t.text(&msg(1, "a"));
    t.lose();
    t.fire();
    t.open_url();
    t.input(Input::Connected);
    t.welcome("S1");
    assert!(t.sent().is_empty(), "no rejoin");
    t.text(r#"{"type":"resume_failed","reason":"overflow","session":"S1"}"#);
    t.text(&msg(9, "z"));
    let ev = t.events();
    assert_eq!(
        gaps(&ev),
        [Gap {
            reason: GapReason::ResumeFailed(ResumeFailure::Overflow),
            last_seq: 1
        }]
    );
    assert_eq!(
        gaps(&ev)[0].to_json(),
        r#"{"type":"gap","reason":"overflow","last_seq":1}"#
    );
    assert_eq!(t.c.last_seq(), 9);
    assert_eq!(t.c.rooms().collect::<Vec<_>>(), ["r"]);
    // A `dropped` notice is a gap too.
    t.text(r#"{"type":"dropped","count":4}"#);
    assert_eq!(
        gaps(&t.events()),
        [Gap {
            reason: GapReason::Dropped { count: 4 },
            last_seq: 9
        }]
    );
}

#[test]
fn duplicates_after_resume_are_ignored_and_acked() {
    let mut config = ClientConfig::new(URL);
    config.delivery_acks = true;
    let mut t = T::new(config);
    t.up("S");
    assert_eq!(t.sent(), [r#"{"type":"configure","delivery_acks":true}"#]);
    t.text(&msg(1, "a"));
    t.text(&msg(2, "b"));
    assert_eq!(
        t.sent(),
        [r#"{"type":"ack","seq":1}"#, r#"{"type":"ack","seq":2}"#]
    );
    t.lose();
    t.events();
    t.fire();
    assert_eq!(t.open_url(), format!("{URL}?session=S&last_seq=2"));
    t.input(Input::Connected);
    t.welcome("S");
    // The setting survives a resume: not configured again.
    assert!(t.sent().is_empty());
    t.text(r#"{"type":"resumed","session":"S","last_seq":2,"replayed":2}"#);
    t.text(&msg(2, "b")); // a retransmission whose ack was lost
    t.text(&msg(3, "c"));
    let ids: Vec<String> = t
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["c"]);
    assert_eq!(t.c.duplicates(), 1);
    // Both acked, so the server stops retransmitting.
    assert_eq!(
        t.sent(),
        [r#"{"type":"ack","seq":2}"#, r#"{"type":"ack","seq":3}"#]
    );
}

#[test]
fn unanswered_requests_are_retried_with_the_same_id() {
    let mut t = T::with_seed(1);
    t.up("S");
    let a = t.c.publish("r", &raw("1"), Some("mine")).expect("queued");
    let b = t.c.send("bob", &raw("2"), None).expect("queued");
    let c = t.c.broadcast(&raw("3"), None).expect("queued");
    assert_eq!(a, "mine");
    assert_ne!(b, c);
    let first = t.sent();
    assert_eq!(first.len(), 3);
    assert_eq!(
        t.c.publish("r", &raw("1"), Some("mine")),
        Err(SubmitError::DuplicateId("mine".into()))
    );
    // `c` is answered; the others are in flight when the link dies.
    t.text(&format!(r#"{{"type":"ack","op":"broadcast","id":"{c}"}}"#));
    t.lose();
    t.fire();
    t.open_url();
    t.input(Input::Connected);
    t.welcome("S");
    assert_eq!(t.sent(), first[..2]);
    t.text(r#"{"type":"ack","op":"publish","id":"mine","duplicate":true}"#);
    t.text(&format!(
        r#"{{"type":"nack","op":"send","id":"{b}","reason":"unknown_user"}}"#
    ));
    let r = replies(&t.events());
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].result, Ok(Ack { duplicate: false }));
    assert_eq!(r[1].id, "mine");
    assert_eq!(r[1].result, Ok(Ack { duplicate: true }));
    assert_eq!(
        r[2].result,
        Err(OpError::Nacked {
            reason: "unknown_user".into()
        })
    );
    assert_eq!(t.c.pending(), 0);
}

#[test]
fn generated_ids_differ_between_seeds() {
    let mut a = T::with_seed(1);
    let mut b = T::with_seed(2);
    let ia = a.c.broadcast(&raw("1"), None).expect("queued");
    let ib = b.c.broadcast(&raw("1"), None).expect("queued");
    assert_ne!(ia, ib);
}

#[test]
fn pending_buffer_is_bounded() {
    let mut config = ClientConfig::new(URL);
    config.max_pending = 3;
    let mut t = T::new(config);
    // Offline, before connecting.
    for i in 0..3 {
        t.c.publish("r", &raw("1"), Some(&format!("m{i}")))
            .expect("room");
    }
    assert_eq!(
        t.c.publish("r", &raw("1"), None),
        Err(SubmitError::BufferFull { limit: 3 })
    );
    assert_eq!(t.c.join("x"), Err(SubmitError::BufferFull { limit: 3 }));
    assert_eq!(t.c.pending(), 3);
    t.up("S");
    assert_eq!(t.sent().len(), 3);
    // Still full while in flight; an answer frees a slot.
    assert!(t.c.publish("r", &raw("1"), None).is_err());
    t.text(r#"{"type":"nack","op":"publish","id":"m0","reason":"not_member"}"#);
    assert!(t.c.publish("r", &raw("1"), None).is_ok());
    assert_eq!(
        t.c.publish("", &raw("1"), None),
        Err(SubmitError::Empty("room"))
    );
}

#[test]
fn close_is_final_and_connect_reopens() {
    let mut t = T::with_seed(1);
    t.up("S");
    t.c.publish("r", &raw("1"), None).expect("queued");
    t.events();
    t.actions();
    t.c.close();
    assert_eq!(
        t.actions(),
        [Action::Close {
            code: 1000,
            reason: "client closed"
        }]
    );
    let ev = t.events();
    assert_eq!(
        states(&ev),
        [(
            State::Connected,
            State::Closed,
            Some(1000),
            "client closed".to_owned()
        )]
    );
    assert_eq!(replies(&ev)[0].result, Err(OpError::Closed));
    assert_eq!(t.c.poll_timeout(), None);
    // Stale input from the old connection is ignored.
    t.text(&msg(1, "late"));
    assert!(t.events().is_empty());
    t.c.connect(t.now);
    assert_eq!(t.open_url(), format!("{URL}?session=S&last_seq=0"));
}

#[test]
fn session_resumed_elsewhere_is_terminal() {
    let mut t = T::with_seed(1);
    t.up("S");
    t.input(Input::Closed {
        code: Some(1000),
        reason: "session resumed elsewhere",
    });
    assert_eq!(t.c.state(), State::Closed);
    let mut t = T::with_seed(1);
    t.up("S");
    t.input(Input::Closed {
        code: Some(1000),
        reason: "bye",
    });
    assert_eq!(t.c.state(), State::Disconnected);
}

#[test]
fn invalid_configs_are_refused() {
    assert!(Client::new(ClientConfig::new("http://x")).is_err());
    let mut c = ClientConfig::new(URL);
    c.backoff_min = Duration::from_secs(30);
    assert!(Client::new(c).is_err());
    let mut c = ClientConfig::new(URL);
    c.max_pending = 0;
    assert!(Client::new(c).is_err());
}

#[test]
fn requests_over_the_server_limit_are_refused_never_resent() {
    let mut t = T::with_seed(1);
    let big = format!("\"{}\"", "x".repeat(200));
    let b =
        t.c.publish("r", &raw(&big), None)
            .expect("limit unknown yet");
    t.c.publish("r", &raw("1"), Some("small")).expect("queued");
    t.c.connect(t.now);
    t.open_url();
    t.input(Input::Connected);
    t.text(r#"{"type":"welcome","session":"S","user":"u","ping_interval_ms":30000,"max_message_size":100}"#);
    assert_eq!(
        t.sent(),
        [r#"{"type":"publish","room":"r","id":"small","data":1}"#]
    );
    assert_eq!(
        replies(&t.events()),
        [Reply {
            id: b,
            op: ws_hub::client::Op::Publish,
            result: Err(OpError::Nacked {
                reason: "too_large".into()
            })
        }]
    );
    assert!(matches!(
        t.c.publish("r", &raw(&big), None),
        Err(SubmitError::TooLarge { limit: 100, .. })
    ));
}

fn renewals(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::TokenExpiring { expires_in_ms } => Some(format!("expiring {expires_in_ms}")),
            Event::TokenRefreshed => Some("refreshed".to_owned()),
            Event::TokenRefreshFailed { reason } => Some(format!("failed {reason}")),
            _ => None,
        })
        .collect()
}

/// The id of the one `refresh` in `sent`, checking its token.
fn refresh_id(sent: &[String], token: &str) -> String {
    assert_eq!(sent.len(), 1, "{sent:?}");
    let v: serde_json::Value = serde_json::from_str(&sent[0]).expect("JSON");
    assert_eq!(
        (&v["type"], &v["token"]),
        (&"refresh".into(), &token.into())
    );
    v["id"].as_str().expect("an id").to_owned()
}

#[test]
fn token_expiring_asks_the_provider_and_refreshes() {
    let mut config = ClientConfig::new(URL);
    config.token_provider = true;
    let mut t = T::new(config);
    t.c.connect(t.now);
    assert_eq!(t.actions(), [Action::NeedToken]);
    t.input(Input::Token(Some("t1".into())));
    assert_eq!(t.open_url(), format!("{URL}?token=t1"));
    t.input(Input::Connected);
    t.welcome("S");
    t.events();
    // A token from nowhere while connected changes nothing.
    t.input(Input::Token(Some("stray".into())));
    assert!(t.actions().is_empty());

    t.text(r#"{"type":"token_expiring","expires_in_ms":60000}"#);
    assert_eq!(t.actions(), [Action::NeedToken]);
    // A second warning while the provider is asked: no second request.
    t.text(r#"{"type":"token_expiring","expires_in_ms":59000}"#);
    assert!(t.actions().is_empty());
    t.input(Input::Token(Some("t2".into())));
    let id = refresh_id(&t.sent(), "t2");
    // Only the answer to this refresh counts.
    t.text(r#"{"type":"ack","op":"refresh","id":"other"}"#);
    t.text(&format!(r#"{{"type":"ack","op":"refresh","id":"{id}"}}"#));
    assert_eq!(
        renewals(&t.events()),
        ["expiring 60000", "expiring 59000", "refreshed"]
    );

    // The provider has nothing new: nothing is sent, reported.
    t.text(r#"{"type":"token_expiring","expires_in_ms":1000}"#);
    assert_eq!(t.actions(), [Action::NeedToken]);
    t.input(Input::Token(Some("t2".into())));
    assert!(t.sent().is_empty());
    // A refused refresh is reported.
    t.text(r#"{"type":"token_expiring","expires_in_ms":900}"#);
    assert_eq!(t.actions(), [Action::NeedToken]);
    t.input(Input::Token(Some("t3".into())));
    let id = refresh_id(&t.sent(), "t3");
    t.text(&format!(
        r#"{{"type":"nack","op":"refresh","id":"{id}","reason":"forbidden"}}"#
    ));
    assert_eq!(
        renewals(&t.events()),
        [
            "expiring 1000",
            "failed no_token",
            "expiring 900",
            "failed forbidden"
        ]
    );

    // The token expires: 4001 is not terminal; the next attempt asks the
    // provider and resumes the session with the fresh token.
    t.input(Input::Closed {
        code: Some(4001),
        reason: "token expired",
    });
    assert_eq!(
        states(&t.events()),
        [(
            State::Connected,
            State::Disconnected,
            Some(4001),
            "token expired".to_owned()
        )]
    );
    t.fire();
    assert_eq!(t.actions(), [Action::NeedToken]);
    t.input(Input::Token(Some("t4".into())));
    assert_eq!(t.open_url(), format!("{URL}?token=t4&session=S&last_seq=0"));
    t.input(Input::Connected);
    t.welcome("S");
    assert_eq!(
        states(&t.events()).last().map(|s| (s.1, s.3.clone())),
        Some((State::Connected, "resumed".to_owned()))
    );
}

#[test]
fn without_a_provider_token_expiring_is_only_reported() {
    let mut config = ClientConfig::new(URL);
    config.token = Some("fixed".into());
    let mut t = T::new(config);
    t.up("S");
    t.events();
    t.text(r#"{"type":"token_expiring","expires_in_ms":5000}"#);
    assert!(t.actions().is_empty());
    assert_eq!(renewals(&t.events()), ["expiring 5000"]);
    // A renewal under way is forgotten with its connection.
    let mut config = ClientConfig::new(URL);
    config.token_provider = true;
    let mut t = T::new(config);
    t.c.connect(t.now);
    t.actions();
    t.input(Input::Token(Some("t1".into())));
    t.open_url();
    t.input(Input::Connected);
    t.welcome("S");
    t.text(r#"{"type":"token_expiring","expires_in_ms":5000}"#);
    assert_eq!(t.actions(), [Action::NeedToken]);
    t.lose();
    t.fire();
    assert_eq!(t.actions(), [Action::NeedToken]);
    t.input(Input::Token(Some("t2".into())));
    assert_eq!(t.open_url(), format!("{URL}?token=t2&session=S&last_seq=0"));
}
