//! Server-API entry points in virtual time: publishing as "api" (with
//! de-duplication), and disconnecting a user with or without its sessions.

mod common;

use common::*;
use serde_json::value::RawValue;
use ws_hub::{ApiPublished, BusTarget, CloseReason, NackReason, RoomName, UserId};

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

#[test]
fn api_publish_delivers_as_api_and_deduplicates_ids() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "alice");
    s.send(1, &join("r"));
    let now = s.now;
    let room = || BusTarget::Room(RoomName::new("r"));
    let data = raw(r#"{"x":1}"#);
    assert_eq!(
        s.hub.api_publish(now, room(), Some("n1"), &data),
        Ok(ApiPublished::Delivered)
    );
    assert_eq!(
        render_all(&s.drain()),
        [msg(1, 1, "r", "n1", "api", r#"{"x":1}"#)]
    );
    assert_eq!(
        s.hub.api_publish(now, room(), Some("n1"), &data),
        Ok(ApiPublished::Duplicate)
    );
    assert!(s.drain().is_empty());
    // Without an id: a generated one, never de-duplicated.
    for seq in [2, 3] {
        assert_eq!(
            s.hub.api_publish(now, room(), None, &data),
            Ok(ApiPublished::Delivered)
        );
        let id = format!("api-node-1-{}", seq - 1);
        assert_eq!(
            render_all(&s.drain()),
            [msg(1, seq, "r", &id, "api", r#"{"x":1}"#)]
        );
    }
    let user = |u: &str| BusTarget::User(UserId::new(u));
    assert_eq!(
        s.hub.api_publish(now, user("zed"), None, &data),
        Err(NackReason::UnknownUser)
    );
    assert_eq!(
        s.hub.api_publish(now, user(""), None, &data),
        Err(NackReason::BadRequest)
    );
    assert_eq!(
        s.hub.api_publish(now, room(), Some(""), &data),
        Err(NackReason::BadRequest)
    );
    s.hub.check_invariants().unwrap();
}

#[test]
fn api_disconnect_closes_every_connection_and_optionally_discards_sessions() {
    let mut s = Sim::new(quiet_config());
    s.connect(1, "bob");
    s.connect(2, "bob");
    s.connect(3, "alice");
    let now = s.now;
    let reason = CloseReason::new("account suspended: réexamen".to_owned()).unwrap();
    assert_eq!(
        s.hub
            .api_disconnect(now, &UserId::new("bob"), 4010, &reason, false),
        2
    );
    assert_eq!(
        render_all(&s.drain()),
        [
            "close 1 4010 account suspended: réexamen",
            "close 2 4010 account suspended: réexamen"
        ]
    );
    // Kept for resume, then discarded on request.
    assert_eq!(s.hub.metrics().detached_sessions, 2);
    assert_eq!(
        s.hub
            .api_disconnect(now, &UserId::new("bob"), 4010, &reason, true),
        0
    );
    let m = s.hub.metrics();
    assert_eq!((m.detached_sessions, m.sessions, m.connections), (0, 1, 1));
    assert_eq!(
        s.hub
            .api_disconnect(now, &UserId::new("nobody"), 4010, &reason, true),
        0
    );
    s.hub.check_invariants().unwrap();
}
