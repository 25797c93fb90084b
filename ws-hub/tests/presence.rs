//! Presence in virtual time: `presence`, `presence_stats`, the bound on
//! listed users, the authoriser, and `join` / `leave` events (first
//! session in, last session out; no churn on resume or heartbeats).

mod common;

use common::*;
use ws_hub::{
    Action, Authoriser, Command, ConnId, Hub, HubConfig, PresenceQuery, RoomName, UserId,
};

fn presence(room: &str, id: &str) -> String {
    format!(r#"{{"type":"presence","room":"{room}","id":"{id}"}}"#)
}

fn stats(room: &str) -> String {
    format!(r#"{{"type":"presence_stats","room":"{room}"}}"#)
}

fn events_config() -> HubConfig {
    HubConfig {
        presence_events: true,
        ..quiet_config()
    }
}

#[test]
fn presence_lists_users_with_their_sessions() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    s.connect(2, "alice");
    s.connect(3, "bob");
    s.connect(4, "carol");
    for c in 1..=3 {
        s.send(c, &join("r"));
    }
    assert_eq!(
        s.send(4, &presence("r", "q1")),
        [
            r#"4 <- {"type":"presence","room":"r","id":"q1","user_count":2,"connection_count":3,"users":[{"user":"alice","connections":2},{"user":"bob","connections":1}]}"#
        ]
    );
    assert_eq!(
        s.send(4, &stats("r")),
        [r#"4 <- {"type":"presence_stats","room":"r","user_count":2,"connection_count":3}"#]
    );
    // A room nobody is in: zero, not an error.
    assert_eq!(
        s.send(4, &presence("empty", "q2")),
        [
            r#"4 <- {"type":"presence","room":"empty","id":"q2","user_count":0,"connection_count":0,"users":[]}"#
        ]
    );
    assert_eq!(
        s.send(4, r#"{"type":"presence","id":"q3"}"#),
        [nack(4, "presence", "q3", "bad_request")]
    );
    assert_eq!(
        s.send(4, r#"{"type":"presence_stats","room":""}"#),
        [r#"4 <- {"type":"nack","op":"presence_stats","reason":"bad_request"}"#]
    );
    // The getters adapters use agree.
    let p = s.hub.presence("r");
    assert_eq!(p.connections, 3);
    assert_eq!(
        p.users,
        [(UserId::new("alice"), 2), (UserId::new("bob"), 1)]
    );
    assert_eq!(s.hub.online_users(), 3);
    assert_eq!(s.hub.metrics().users, 3);
    s.hub.check_invariants().unwrap();
}

#[test]
fn presence_above_the_bound_answers_counts_only() {
    let mut s = Sim::new(HubConfig {
        presence_max_users: 2,
        ..quiet_config()
    });
    for (c, u) in [(1, "a"), (2, "b"), (3, "c")] {
        s.connect(c, u);
        s.send(c, &join("r"));
    }
    assert_eq!(
        s.send(1, &presence("r", "q")),
        [
            r#"1 <- {"type":"presence","room":"r","id":"q","user_count":3,"connection_count":3,"truncated":true}"#
        ]
    );
    s.send(3, r#"{"type":"leave","room":"r"}"#);
    let listed = s.send(1, &presence("r", "q"));
    assert!(listed[0].contains(r#""users":[{"user":"a""#), "{listed:?}");
}

#[test]
fn presence_goes_through_the_authoriser() {
    struct Private;
    impl Authoriser for Private {
        fn may_join(&self, user: &UserId, room: &RoomName) -> bool {
            room.as_str() != "private" || user.as_str() == "alice"
        }
    }
    let hub = Hub::new(quiet_config(), secret(), ws_hub::AllowAnonymous, Private).unwrap();
    let mut s = Sim::with_hub(hub);
    s.connect(1, "alice");
    s.connect(2, "mallory");
    s.send(1, &join("private"));
    assert_eq!(
        s.send(2, &presence("private", "q")),
        [r#"2 <- {"type":"nack","op":"presence","id":"q","room":"private","reason":"forbidden"}"#]
    );
    assert_eq!(
        s.send(2, &stats("private")),
        [r#"2 <- {"type":"nack","op":"presence_stats","room":"private","reason":"forbidden"}"#]
    );
    assert_eq!(s.hub.metrics().nacks.forbidden, 2);
    assert!(s.send(1, &stats("private"))[0].contains(r#""user_count":1"#));
}

fn event(conn: u64, kind: &str, room: &str, user: &str) -> String {
    format!(r#"{conn} <- {{"type":"{kind}","room":"{room}","user":"{user}"}}"#)
}

#[test]
fn join_and_leave_events_for_first_and_last_session_only() {
    let mut s = Sim::new(events_config());
    s.connect(1, "alice");
    s.connect(2, "bob");
    s.connect(3, "bob");
    assert_eq!(s.send(1, &join("r")), [join_ack(1, "r")]);
    // Bob's first session: everyone else in the room hears it, bob's own
    // joining session does not.
    assert_eq!(
        s.send(2, &join("r")),
        [join_ack(2, "r"), event(1, "join", "r", "bob")]
    );
    // His second session: bob was already present, no event.
    assert_eq!(s.send(3, &join("r")), [join_ack(3, "r")]);
    // One of two sessions leaving: still present, no event.
    assert_eq!(
        s.send(3, r#"{"type":"leave","room":"r"}"#),
        [r#"3 <- {"type":"ack","op":"leave","room":"r"}"#]
    );
    // The last one leaving: alice hears it.
    assert_eq!(
        s.send(2, r#"{"type":"leave","room":"r"}"#),
        [
            r#"2 <- {"type":"ack","op":"leave","room":"r"}"#.to_owned(),
            event(1, "leave", "r", "bob"),
        ]
    );
    s.hub.check_invariants().unwrap();
}

#[test]
fn a_detached_session_stays_present_until_it_is_discarded() {
    let mut s = Sim::new(events_config());
    s.connect(1, "alice");
    s.connect(2, "bob");
    s.send(1, &join("r"));
    s.send(2, &join("r"));
    let sid = s.session(2);
    // A dropped connection: bob's session is detached, kept for resume,
    // and still present. No leave.
    assert_eq!(s.disconnect(2), Vec::<String>::new());
    assert!(s.send(1, &stats("r"))[0].contains(r#""user_count":2,"connection_count":2"#));
    // Heartbeats go on; resuming within the retention time: no join either.
    let log = s.advance_with(secs(60), |hub, t, conn| {
        hub.handle(t, Command::Activity { conn });
    });
    assert!(
        log.iter()
            .all(|l| !l.contains("join") && !l.contains("leave")),
        "{log:?}"
    );
    let resumed = s.resume(3, "bob", &sid, 0);
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    assert!(resumed[1].contains("resumed"), "{resumed:?}");
    // Dropped again and never resumed: bob leaves when the retention time
    // is over and the session is discarded.
    s.disconnect(3);
    let log = s.advance_with(secs(121), |hub, t, conn| {
        hub.handle(t, Command::Activity { conn });
    });
    let events: Vec<&String> = log.iter().filter(|l| l.contains("leave")).collect();
    assert_eq!(events, [&format!("@180 {}", event(1, "leave", "r", "bob"))]);
    assert!(s.send(1, &stats("r"))[0].contains(r#""user_count":1"#));
    // A clean close (1000) discards the session at once: leave at once.
    s.connect(4, "carol");
    s.send(4, &join("r"));
    s.cmd(Command::ClientClosed {
        conn: ConnId(4),
        code: 1000,
        reason: String::new(),
    });
    assert_eq!(s.disconnect(4), [event(1, "leave", "r", "carol")]);
    s.hub.check_invariants().unwrap();
}

#[test]
fn no_events_when_off() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    s.connect(2, "bob");
    s.send(1, &join("r"));
    assert_eq!(s.send(2, &join("r")), [join_ack(2, "r")]);
    assert_eq!(
        s.send(2, r#"{"type":"leave","room":"r"}"#),
        [r#"2 <- {"type":"ack","op":"leave","room":"r"}"#]
    );
}

#[test]
fn in_a_cluster_presence_adds_the_other_nodes_parts_fed_back_by_the_adapter() {
    let mut s = Sim::new(HubConfig {
        cluster: true,
        presence_max_users: 2,
        ..quiet_config()
    });
    s.connect(1, "alice");
    s.connect(2, "carol");
    s.send(1, &join("r"));
    // The hub asks the adapter instead of answering from its own part.
    s.hub.handle(
        s.now,
        Command::Received {
            conn: ConnId(2),
            data: presence("r", "q1").into(),
            is_text: true,
        },
    );
    let query = match s.drain().as_slice() {
        [Action::QueryPresence(q)] => q.clone(),
        other => panic!("{:?}", render_all(other)),
    };
    assert_eq!(
        query,
        PresenceQuery {
            conn: ConnId(2),
            room: RoomName::new("r"),
            id: Some("q1".into()),
            stats: false,
        }
    );
    // Another node has alice twice and bob once: counts add up.
    let others = vec![(UserId::new("alice"), 2), (UserId::new("bob"), 1)];
    assert_eq!(
        s.cmd(Command::ClusterPresence {
            query: query.clone(),
            others: Some(others.clone()),
        }),
        [
            r#"2 <- {"type":"presence","room":"r","id":"q1","user_count":2,"connection_count":4,"users":[{"user":"alice","connections":3},{"user":"bob","connections":1}]}"#
        ]
    );
    // The bound applies to the merged list.
    let mut three = others.clone();
    three.push((UserId::new("dave"), 1));
    assert_eq!(
        s.cmd(Command::ClusterPresence {
            query,
            others: Some(three),
        }),
        [
            r#"2 <- {"type":"presence","room":"r","id":"q1","user_count":3,"connection_count":5,"truncated":true}"#
        ]
    );
    // presence_stats, and a read that failed.
    s.hub.handle(
        s.now,
        Command::Received {
            conn: ConnId(2),
            data: stats("r").into(),
            is_text: true,
        },
    );
    let query = match s.drain().as_slice() {
        [Action::QueryPresence(q)] => q.clone(),
        other => panic!("{:?}", render_all(other)),
    };
    assert!(query.stats && query.id.is_none());
    assert_eq!(
        s.cmd(Command::ClusterPresence {
            query: query.clone(),
            others: Some(others),
        }),
        [r#"2 <- {"type":"presence_stats","room":"r","user_count":2,"connection_count":4}"#]
    );
    assert_eq!(
        s.cmd(Command::ClusterPresence {
            query: query.clone(),
            others: None,
        }),
        [r#"2 <- {"type":"nack","op":"presence_stats","room":"r","reason":"unavailable"}"#]
    );
    // Counts from other nodes are data from Redis: huge ones saturate.
    assert_eq!(
        s.cmd(Command::ClusterPresence {
            query: query.clone(),
            others: Some(vec![(UserId::new("x"), u64::MAX), (UserId::new("y"), 7)]),
        }),
        [format!(
            r#"2 <- {{"type":"presence_stats","room":"r","user_count":3,"connection_count":{}}}"#,
            u64::MAX
        )]
    );
    // An answer for a connection that has gone is dropped.
    s.cmd(Command::Disconnected { conn: ConnId(2) });
    assert!(
        s.cmd(Command::ClusterPresence {
            query,
            others: Some(Vec::new()),
        })
        .is_empty()
    );
    // Refused requests never reach the adapter.
    assert_eq!(
        s.send(1, r#"{"type":"presence","room":"","id":"q2"}"#),
        [nack(1, "presence", "q2", "bad_request")]
    );
    s.hub.check_invariants().unwrap();
}
