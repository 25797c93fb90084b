//! Shared test helpers: a connected client/server pair and raw frame
//! builders.
#![allow(dead_code, unreachable_pub)]

use std::time::Instant;

use ws_proto::frame::{FrameHeader, apply_mask};
use ws_proto::{AcceptOptions, ClientRequest, Config, Connection, Event, SeededMaskKeys};

pub const KEY: [u8; 16] = *b"the sample nonce";

pub fn client(config: Config, now: Instant) -> Connection {
    let req = ClientRequest::new("localhost", "/", KEY);
    Connection::client(config, req, Box::new(SeededMaskKeys::new([9; 32])), now).unwrap()
}

/// Moves everything `from` has queued into `to`.
pub fn pump(from: &mut Connection, to: &mut Connection, now: Instant) {
    let mut wire = Vec::new();
    while from.poll_transmit(&mut wire).is_some() {}
    to.handle_data(now, &wire);
}

pub fn drain(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

pub fn transmit(conn: &mut Connection) -> Vec<u8> {
    let mut wire = Vec::new();
    while conn.poll_transmit(&mut wire).is_some() {}
    wire
}

/// An open (client, server) pair.
pub fn open_pair(client_cfg: Config, server_cfg: Config, now: Instant) -> (Connection, Connection) {
    let mut c = client(client_cfg, now);
    let mut s = Connection::server(server_cfg, now).unwrap();
    pump(&mut c, &mut s, now);
    assert!(matches!(s.poll_event(), Some(Event::Request(_))));
    s.accept(AcceptOptions::default()).unwrap();
    pump(&mut s, &mut c, now);
    assert!(matches!(c.poll_event(), Some(Event::Accepted(_))));
    (c, s)
}

/// An open server whose handshake is done; the raw client side is the test.
pub fn open_server(config: Config, now: Instant) -> Connection {
    let mut s = Connection::server(config, now).unwrap();
    s.handle_data(now, &upgrade_request());
    assert!(matches!(s.poll_event(), Some(Event::Request(_))));
    s.accept(AcceptOptions::default()).unwrap();
    transmit(&mut s);
    s
}

pub fn upgrade_request() -> Vec<u8> {
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec()
}

/// A raw frame as a client would send it (masked with a fixed key).
pub fn client_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(fin, rsv, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

pub fn raw_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    }
    .encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// A decoded frame: (fin, opcode, payload).
pub type RawFrame = (bool, u8, Vec<u8>);

/// Decodes unmasked server frames.
pub fn parse_frames(mut wire: &[u8]) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    while let Some((h, n)) = FrameHeader::decode(wire).unwrap() {
        let len = h.payload_len as usize;
        let mut payload = wire[n..n + len].to_vec();
        if let Some(key) = h.mask {
            apply_mask(&mut payload, key, 0);
        }
        frames.push((h.fin, h.opcode, payload));
        wire = &wire[n + len..];
    }
    assert!(wire.is_empty(), "trailing partial frame");
    frames
}
