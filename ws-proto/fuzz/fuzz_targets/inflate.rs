//! The inflate path of an open connection with permessage-deflate, both
//! roles and both memory modes: arbitrary frames with RSV1 in arbitrary
//! chunks never panic, and no message outgrows the limit once inflated.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ws_proto::{
    AcceptOptions, ClientRequest, Config, Connection, DeflateConfig, Event, SeededMaskKeys,
};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else { return };
    let now = Instant::now();
    let mut config = Config::default();
    config.max_frame_size = 1024;
    config.max_message_size = 4096;
    config.strict_masking = false;
    config.deflate = Some(if flags & 1 == 0 {
        DeflateConfig::shared()
    } else {
        // Window bits 9 to 15 (zlib cannot do 8; 8 is answered as 9).
        DeflateConfig::dedicated(9 + (flags >> 5) % 7)
    });
    let mut conn = if flags & 2 == 0 {
        let mut s = Connection::server(config.clone(), now).unwrap();
        s.handle_data(now, REQUEST);
        let _ = s.poll_event();
        s.accept(AcceptOptions::default()).unwrap();
        assert!(s.deflate().is_some());
        s
    } else {
        let mut c = Connection::client(
            config.clone(),
            ClientRequest::new("h", "/", *b"the sample nonce"),
            Box::new(SeededMaskKeys::new([1; 32])),
            now,
        )
        .unwrap();
        c.handle_data(
            now,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n",
        );
        c
    };
    let chunk = usize::from(flags >> 2 & 7) * 5 + 1;
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        conn.handle_data(now, piece);
        while let Some(event) = conn.poll_event() {
            if let Event::Message(m) = event {
                assert!(m.len() <= 4096);
                // Echo: the compress path runs on whatever was inflated.
                let _ = conn.send(m);
            }
        }
        while conn.poll_transmit(&mut out).is_some() {}
        assert!(conn.buffered_inbound() <= 1024 + 14 + 4097);
    }
    conn.handle_eof(now);
    assert!(!conn.holds_deflate_context() || conn.deflate().is_some());
});
