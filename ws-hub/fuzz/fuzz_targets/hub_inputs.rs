//! The hub's parsers of outside input other than client messages (those
//! are in the `hub` target): the upgrade query string (`session`,
//! `last_seq`, `token`), HMAC tokens, and bus messages from the broker.
//! No panic, and what decodes re-encodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_hub::{BusMessage, HmacTokenAuth, ResumeRequest, query_param};

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let query = String::from_utf8_lossy(data);
            if let Some(r) = ResumeRequest::from_query(&query) {
                assert_eq!(query_param(&query, "session"), Some(r.session.as_str()));
            }
            let _ = query_param(&query, "token");
        }
        1 => {
            let auth = HmacTokenAuth::new(*b"fuzz-secret").allow_anonymous(which & 4 != 0);
            let token = String::from_utf8_lossy(data);
            let now = u64::from(which) << 28;
            if let Ok(user) = auth.verify(&token, now) {
                // Only a token signed with the secret verifies: re-issuing
                // it for the same user and expiry is accepted too.
                let expiry = token.split('.').nth(1).and_then(|e| e.parse::<u64>().ok());
                if let Some(expiry) = expiry {
                    let again = auth.issue(user.as_str(), expiry);
                    assert!(auth.verify(&again, now).is_ok());
                }
            }
            // A token for any non-empty user name round-trips.
            let name = String::from_utf8_lossy(&data[..data.len().min(40)]);
            let issued = auth.issue(&name, u64::MAX);
            let back = auth.verify(&issued, now).map(|u| u.as_str().to_owned());
            let expected = (!name.is_empty()).then_some(&*name);
            assert_eq!(back.ok().as_deref(), expected);
        }
        _ => {
            if let Ok(m) = BusMessage::from_json(data) {
                let back = BusMessage::from_json(&m.to_json()).expect("re-decodes");
                assert_eq!(back, m);
                let _ = m.channel();
            }
        }
    }
});
