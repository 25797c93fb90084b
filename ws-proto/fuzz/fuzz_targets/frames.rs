//! The frame decoder of an open connection, both roles, on arbitrary bytes
//! in arbitrary chunks, with small limits so they are exercised.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ws_proto::frame::FrameHeader;
use ws_proto::{AcceptOptions, ClientRequest, Config, Connection, Event, SeededMaskKeys};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else { return };
    let _ = FrameHeader::decode(data);
    let now = Instant::now();
    let mut config = Config::default();
    config.max_frame_size = 1024;
    config.max_message_size = 4096;
    config.strict_masking = flags & 1 == 0;
    config.fragment_size = Some(usize::from(flags >> 4) + 1);
    let mut conn = if flags & 2 == 0 {
        let mut s = Connection::server(config.clone(), now).unwrap();
        s.handle_data(now, REQUEST);
        let _ = s.poll_event();
        s.accept(AcceptOptions::default()).unwrap();
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
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        );
        c
    };
    let chunk = usize::from(flags >> 2 & 3) * 7 + 1;
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        conn.handle_data(now, piece);
        while let Some(event) = conn.poll_event() {
            if let Event::Message(m) = event {
                let _ = conn.send(m);
            }
        }
        while conn.poll_transmit(&mut out).is_some() {}
        assert!(conn.buffered_inbound() <= 1024 + 14 + 4096);
    }
    conn.handle_eof(now);
});
