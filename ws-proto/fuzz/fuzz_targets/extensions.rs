//! permessage-deflate negotiation on arbitrary `Sec-WebSocket-Extensions`
//! values: the server's offer parsing and answer, and the client's check of
//! an answer, in every mode. Never panics; whatever the server answers, a
//! client that made the offer accepts it (RFC 7692 section 7.1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_proto::deflate::DeflateOffer;
use ws_proto::DeflateConfig;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, value)) = data.split_first() else { return };
    let config = match mode % 8 {
        0 => DeflateConfig::shared(),
        bits => DeflateConfig::dedicated(8 + bits),
    };
    let offers = DeflateOffer::parse_offers([value]);
    if let Some((params, answer)) = config.accept_offers(&offers) {
        assert!((9..=15).contains(&params.server_max_window_bits));
        // The answer parses back to the same parameters.
        let back = DeflateOffer::parse_offers([answer.as_bytes()]);
        assert_eq!(back.len(), 1);
    }
    // The client side: arbitrary answers never panic, and any accepted
    // answer names windows in range.
    if let Ok(Some(params)) = config.check_answer([value]) {
        assert!((8..=15).contains(&params.client_max_window_bits));
    }
    // A server in the same mode answering this client's own offers is
    // always accepted by it.
    let own = DeflateOffer::parse_offers([config.client_offer_header().as_bytes()]);
    let (expected, answer) = config.accept_offers(&own).unwrap();
    assert_eq!(config.check_answer([answer.as_bytes()]), Ok(Some(expected)));
});
