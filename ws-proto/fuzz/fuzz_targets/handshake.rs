//! Server and client handshake parsing on arbitrary bytes in arbitrary chunks.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ws_proto::{AcceptOptions, ClientRequest, Config, Connection, Event, SeededMaskKeys};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let now = Instant::now();
    let cut = usize::from(split).min(data.len());
    let mut server = Connection::server(Config::default(), now).unwrap();
    let req = ClientRequest::new("h", "/", [0; 16]);
    let mut client = Connection::client(Config::default(), req, Box::new(SeededMaskKeys::new([1; 32])), now).unwrap();
    for conn in [&mut server, &mut client] {
        conn.handle_data(now, &data[..cut]);
        conn.handle_data(now, &data[cut..]);
        while let Some(event) = conn.poll_event() {
            if let Event::Request(r) = event {
                let _ = (r.path(), r.query(), r.origin(), r.protocols().count());
                let _ = conn.accept(AcceptOptions::default());
            }
        }
        let mut out = Vec::new();
        while conn.poll_transmit(&mut out).is_some() {}
        assert!(conn.buffered_inbound() <= data.len());
    }
});
