//! Codec micro-benchmarks of `ws-proto` beside its peers.
//!
//! Every group measures our code and, where the peer's public API allows,
//! tungstenite 0.28 and fastwebsockets 0.10 on the same input, so each
//! figure has a peer in the same run:
//!
//! - `header_decode/{7bit,16bit,64bit}`: one masked client frame header
//!   (6, 8 and 14 bytes). Ours: `FrameHeader::decode`; tungstenite:
//!   `FrameHeader::parse` over a `Cursor`. fastwebsockets has no public
//!   header parser (it is inlined in `read_frame`, measured under
//!   `decode`).
//! - `header_encode/{7bit,16bit,64bit}`: the same headers written into a
//!   14-byte stack buffer. Ours: `FrameHeader::encode`; tungstenite:
//!   `FrameHeader::format`; fastwebsockets: `Frame::fmt_head`.
//! - `utf8/{ascii,multibyte}/{1KiB,1MiB}`: our incremental `Utf8Validator`
//!   fed the whole buffer (`validator_whole`) and 4 KiB pieces that cut
//!   characters (`validator_4k`), against `std::str::from_utf8` and
//!   `simdutf8` (what fastwebsockets uses).
//! - `decode/{text,binary}/{20B,16KiB,1MiB}`: whole-message decode on the
//!   server side of an open connection: a batch of masked client frames
//!   (about 1 MiB of payload, at most 4096 frames; one frame for 1 MiB) is
//!   delivered in reads of at most 64 KiB, and every message is taken out.
//!   Ours: `Connection::handle_data` + `poll_event`; tungstenite:
//!   `WebSocket::from_raw_socket(.., Role::Server, ..)` + `read` over an
//!   in-memory stream; fastwebsockets: `WebSocket::after_handshake(..,
//!   Role::Server)` + `read_frame` in a current-thread tokio runtime. All
//!   three unmask, check text as UTF-8 and copy each byte once from the
//!   "socket" into their buffer. Throughput is payload bytes.
//! - `handshake/`: parse the upgrade request and write the 101. Ours:
//!   `Connection::server` + `handle_data` + `poll_event` + `accept` +
//!   `poll_transmit`; tungstenite: `tungstenite::accept` over an in-memory
//!   stream (its `WebSocket` allocates a 128 KiB read buffer, which is part
//!   of what a real accept costs). `accept_key` alone: ours against
//!   `tungstenite::handshake::derive_accept_key`. fastwebsockets' handshake
//!   needs hyper (its `upgrade` feature), so it is left out.
//! - `mask_peers/{16KiB,1MiB}`: our `apply_mask` beside
//!   `fastwebsockets::unmask` (tungstenite's mask is private).
//!
//! Runs are short (1 s warm-up, 2 s measurement) since the benchmark
//! machine is shared: compare figures of one run with each other.
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::{Cursor, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use ws_proto::frame::{FrameHeader, apply_mask};
use ws_proto::utf8::Utf8Validator;
use ws_proto::{AcceptOptions, Config, Connection, Event, Message};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The most a single read of the in-memory "socket" returns.
const READ_CHUNK: usize = 64 << 10;

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn short<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    group
}

fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

// ----- frame headers -----

/// A masked client header for each length form: payload 20, 300, 70 000.
const HEADER_FORMS: [(&str, u64); 3] = [("7bit", 20), ("16bit", 300), ("64bit", 70_000)];

fn header(len: u64) -> FrameHeader {
    FrameHeader {
        fin: true,
        rsv: 0,
        opcode: 0x2,
        mask: Some(KEY),
        payload_len: len,
    }
}

fn header_decode(c: &mut Criterion) {
    let mut group = short(c, "header_decode");
    group.throughput(Throughput::Elements(1));
    for (form, len) in HEADER_FORMS {
        let mut wire = Vec::new();
        header(len).encode(&mut wire);
        group.bench_with_input(BenchmarkId::new("ours", form), &wire, |b, wire| {
            b.iter(|| FrameHeader::decode(black_box(wire)).unwrap().unwrap());
        });
        group.bench_with_input(BenchmarkId::new("tungstenite", form), &wire, |b, wire| {
            b.iter(|| {
                let mut cursor = Cursor::new(black_box(wire.as_slice()));
                tungstenite::protocol::frame::FrameHeader::parse(&mut cursor)
                    .unwrap()
                    .unwrap()
            });
        });
    }
    group.finish();
}

fn header_encode(c: &mut Criterion) {
    let mut group = short(c, "header_encode");
    group.throughput(Throughput::Elements(1));
    for (form, len) in HEADER_FORMS {
        let ours = header(len);
        group.bench_with_input(BenchmarkId::new("ours", form), &ours, |b, h| {
            b.iter(|| {
                let mut out = [0u8; 14];
                let mut dst = &mut out[..];
                black_box(h).encode(&mut dst);
                let n = 14 - dst.len();
                black_box(out);
                n
            });
        });
        let tung = tungstenite::protocol::frame::FrameHeader {
            opcode: tungstenite::protocol::frame::coding::OpCode::Data(
                tungstenite::protocol::frame::coding::Data::Binary,
            ),
            mask: Some(KEY),
            ..Default::default()
        };
        group.bench_with_input(BenchmarkId::new("tungstenite", form), &tung, |b, h| {
            b.iter(|| {
                let mut out = [0u8; 14];
                let mut dst = &mut out[..];
                black_box(h).format(black_box(len), &mut dst).unwrap();
                let n = 14 - dst.len();
                black_box(out);
                n
            });
        });
        let payload = vec![0u8; len as usize];
        let mut frame = fastwebsockets::Frame::new(
            true,
            fastwebsockets::OpCode::Binary,
            Some(KEY),
            fastwebsockets::Payload::Borrowed(&payload),
        );
        group.bench_function(BenchmarkId::new("fastwebsockets", form), |b| {
            b.iter(|| {
                let mut out = [0u8; 14];
                let n = black_box(&mut frame).fmt_head(&mut out);
                black_box(out);
                n
            });
        });
    }
    group.finish();
}

// ----- UTF-8 -----

fn ascii_text(size: usize) -> Vec<u8> {
    let base = b"The quick brown fox jumps over the lazy dog; {\"id\": 42, \"ok\": true}\n";
    base.iter().copied().cycle().take(size).collect()
}

/// Mixed 1-, 2-, 3- and 4-byte characters, cut back to a character
/// boundary at or below `size`.
fn multibyte_text(size: usize) -> Vec<u8> {
    let base = "héllo κόσμε 日本語のテキスト 🎉🚀 Ünïcödé ";
    let mut s = String::with_capacity(size + 64);
    while s.len() < size {
        s.push_str(base);
    }
    let mut end = size;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.into_bytes()
}

fn utf8(c: &mut Criterion) {
    let mut group = short(c, "utf8");
    for size in [1 << 10, 1 << 20] {
        for (kind, text) in [
            ("ascii", ascii_text(size)),
            ("multibyte", multibyte_text(size)),
        ] {
            group.throughput(Throughput::Bytes(text.len() as u64));
            let id = |name: &str| BenchmarkId::new(format!("{kind}/{name}"), size_label(size));
            group.bench_with_input(id("validator_whole"), &text, |b, text| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(text)).unwrap();
                    assert!(v.is_complete());
                });
            });
            group.bench_with_input(id("validator_4k"), &text, |b, text| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    for piece in black_box(text).chunks(4096) {
                        v.feed(piece).unwrap();
                    }
                    assert!(v.is_complete());
                });
            });
            group.bench_with_input(id("std"), &text, |b, text| {
                b.iter(|| std::str::from_utf8(black_box(text)).is_ok());
            });
            group.bench_with_input(id("simdutf8"), &text, |b, text| {
                b.iter(|| simdutf8::basic::from_utf8(black_box(text)).is_ok());
            });
        }
    }
    group.finish();
}

// ----- whole-message decode -----

/// An endless in-memory socket: reads cycle through `data` (a whole number
/// of frames), at most [`READ_CHUNK`] bytes at a time; writes are dropped.
struct CycleStream {
    data: Arc<[u8]>,
    pos: usize,
}

impl CycleStream {
    fn new(data: Arc<[u8]>) -> Self {
        Self { data, pos: 0 }
    }

    fn fill(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.data.len() - self.pos).min(READ_CHUNK);
        dst[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.data.len() {
            self.pos = 0;
        }
        n
    }
}

impl Read for CycleStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Ok(self.fill(buf))
    }
}

impl Write for CycleStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl tokio::io::AsyncRead for CycleStream {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let n = this.fill(buf.initialize_unfilled());
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for CycleStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `count` masked client frames (single-frame messages) of `size` bytes.
fn client_frames(text: bool, size: usize, count: usize) -> Vec<u8> {
    let payload = if text {
        ascii_text(size)
    } else {
        (0..size).map(|i| (i * 31 + 7) as u8).collect()
    };
    let mut wire = Vec::with_capacity(count * (size + 14));
    for i in 0..count {
        let key = [KEY[0], KEY[1], KEY[2], i as u8];
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode: if text { 0x1 } else { 0x2 },
            mask: Some(key),
            payload_len: size as u64,
        }
        .encode(&mut wire);
        let start = wire.len();
        wire.extend_from_slice(&payload);
        apply_mask(&mut wire[start..], key, 0);
    }
    wire
}

const HANDSHAKE_REQUEST: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: server.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Sec-WebSocket-Version: 13\r\n\
Origin: https://example.com\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Connection: keep-alive, Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
Upgrade: websocket\r\n\
\r\n";

/// An open server connection (handshake done, 101 drained).
fn open_server(now: Instant) -> Connection {
    let mut conn = Connection::server(Config::default(), now).unwrap();
    conn.handle_data(now, HANDSHAKE_REQUEST);
    let Some(Event::Request(_)) = conn.poll_event() else {
        panic!("no request event")
    };
    conn.accept(AcceptOptions::default()).unwrap();
    let mut out = Vec::new();
    while conn.poll_transmit(&mut out).is_some() {}
    conn
}

fn decode(c: &mut Criterion) {
    let now = origin();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = short(c, "decode");
    for text in [true, false] {
        for size in [20usize, 16 << 10, 1 << 20] {
            let count = ((1usize << 20) / size).clamp(1, 4096);
            let wire: Arc<[u8]> = client_frames(text, size, count).into();
            group.throughput(Throughput::Bytes((count * size) as u64));
            let kind = if text { "text" } else { "binary" };
            let id = |name: &str| BenchmarkId::new(format!("{kind}/{name}"), size_label(size));

            let mut conn = open_server(now);
            group.bench_function(id("ours"), |b| {
                b.iter(|| {
                    let mut got = 0;
                    for chunk in wire.chunks(READ_CHUNK) {
                        conn.handle_data(now, chunk);
                        while let Some(event) = conn.poll_event() {
                            match event {
                                Event::Message(Message::Text(t)) => black_box(t.len()),
                                Event::Message(Message::Binary(b)) => black_box(b.len()),
                                other => panic!("unexpected {other:?}"),
                            };
                            got += 1;
                        }
                    }
                    assert_eq!(got, count);
                });
            });

            let mut ws = tungstenite::protocol::WebSocket::from_raw_socket(
                CycleStream::new(wire.clone()),
                tungstenite::protocol::Role::Server,
                None,
            );
            group.bench_function(id("tungstenite"), |b| {
                b.iter(|| {
                    for _ in 0..count {
                        match ws.read().unwrap() {
                            tungstenite::Message::Text(t) => black_box(t.len()),
                            tungstenite::Message::Binary(b) => black_box(b.len()),
                            other => panic!("unexpected {other:?}"),
                        };
                    }
                });
            });

            let mut fws = fastwebsockets::WebSocket::after_handshake(
                CycleStream::new(wire.clone()),
                fastwebsockets::Role::Server,
            );
            group.bench_function(id("fastwebsockets"), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        for _ in 0..count {
                            let frame = fws.read_frame().await.unwrap();
                            assert!(frame.fin);
                            black_box(frame.payload.len());
                        }
                    });
                });
            });
        }
    }
    group.finish();
}

// ----- handshake -----

/// A one-shot socket for tungstenite's accept: reads the request, keeps
/// the response.
struct HandshakeStream {
    request: &'static [u8],
    pos: usize,
    written: Vec<u8>,
}

impl Read for HandshakeStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.request.len() - self.pos);
        buf[..n].copy_from_slice(&self.request[self.pos..self.pos + n]);
        self.pos += n;
        if n == 0 {
            // Nothing more to read: a real socket would block here.
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl Write for HandshakeStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn handshake(c: &mut Criterion) {
    let now = origin();
    let mut group = short(c, "handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("accept/ours", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            let mut conn = Connection::server(Config::default(), now).unwrap();
            conn.handle_data(now, black_box(HANDSHAKE_REQUEST));
            let Some(Event::Request(request)) = conn.poll_event() else {
                panic!("no request event")
            };
            assert_eq!(request.path(), "/chat");
            conn.accept(AcceptOptions::default()).unwrap();
            out.clear();
            while conn.poll_transmit(&mut out).is_some() {}
            assert!(out.starts_with(b"HTTP/1.1 101"));
            black_box(conn)
        });
    });
    group.bench_function("accept/tungstenite", |b| {
        b.iter(|| {
            let stream = HandshakeStream {
                request: black_box(HANDSHAKE_REQUEST),
                pos: 0,
                written: Vec::with_capacity(256),
            };
            let ws = tungstenite::accept(stream).unwrap();
            assert!(ws.get_ref().written.starts_with(b"HTTP/1.1 101"));
            black_box(ws)
        });
    });
    let key = b"dGhlIHNhbXBsZSBub25jZQ==";
    group.bench_function("accept_key/ours", |b| {
        b.iter(|| ws_proto::handshake::accept_key(black_box(key)));
    });
    group.bench_function("accept_key/tungstenite", |b| {
        b.iter(|| tungstenite::handshake::derive_accept_key(black_box(key)));
    });
    group.finish();
}

// ----- masking beside a peer -----

fn mask_peers(c: &mut Criterion) {
    let mut group = short(c, "mask_peers");
    for size in [16usize << 10, 1 << 20] {
        let mut buf = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("ours", size_label(size)), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), KEY, 0));
        });
        group.bench_function(BenchmarkId::new("fastwebsockets", size_label(size)), |b| {
            b.iter(|| fastwebsockets::unmask(black_box(&mut buf), KEY));
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    header_decode,
    header_encode,
    utf8,
    decode,
    handshake,
    mask_peers
);
criterion_main!(benches);
