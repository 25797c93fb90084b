//! Minimal RFC 6455 pieces for the load tool: frame encoding, a streaming
//! frame parser that can skip payloads without buffering them, and the
//! client and server opening handshakes.

use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fixed masking key used by the load tool (a load tool does not need
/// unpredictable keys; the server still has to unmask every byte).
pub const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The RSV1 bit of a frame's first byte: set on the first frame of a
/// message compressed with permessage-deflate (RFC 7692).
pub const RSV1: u8 = 0x40;

/// Opcode of a continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// The GUID of RFC 6455 section 1.3.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The fixed `Sec-WebSocket-Key` the load tool sends (the RFC's sample nonce).
pub const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Appends one frame (FIN set) to `out`, masked with `mask` if given.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.reserve(payload.len() + 14);
    out.push(0x80 | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], key, 0);
        }
        None => out.extend_from_slice(payload),
    }
}

/// XORs `buf` with `key`, starting at key offset `pos` (0..4); returns the
/// key offset following the last byte.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], pos: usize) -> usize {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(pos + i) & 3];
    }
    (pos + buf.len()) & 3
}

/// Something that went wrong while parsing frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// An opcode RFC 6455 reserves.
    BadOpcode(u8),
    /// A control frame longer than 125 bytes or fragmented.
    BadControlFrame,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::BadControlFrame => f.write_str("bad control frame"),
        }
    }
}

impl std::error::Error for ParseError {}

/// What the parser found.
#[derive(Debug)]
pub enum Event<'a> {
    /// A complete data message (possibly assembled from fragments).
    /// `payload` is empty unless the parser captures payloads.
    Data {
        /// Opcode of the first frame (text or binary).
        opcode: u8,
        /// Total payload length (on the wire: compressed if `compressed`).
        len: u64,
        /// RSV1 was set on the first frame (permessage-deflate).
        compressed: bool,
        /// Unmasked payload, if captured.
        payload: &'a [u8],
    },
    /// A ping with its payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close frame with its payload (code and reason).
    Close(&'a [u8]),
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    Payload {
        remaining: u64,
        opcode: u8,
        fin: bool,
        mask: Option<[u8; 4]>,
        mask_pos: usize,
    },
}

/// Streaming frame parser. It accepts masked and unmasked frames alike (a
/// raw TCP echo sends the client's masked frames back), never buffers
/// payload unless asked to (`capture`), and yields the same events for any
/// chunking of the input.
#[derive(Debug)]
pub struct FrameParser {
    capture: bool,
    state: State,
    hdr: [u8; 14],
    hdr_len: usize,
    msg_opcode: u8,
    msg_len: u64,
    msg_compressed: bool,
    data: Vec<u8>,
    ctrl: Vec<u8>,
}

impl FrameParser {
    /// A parser; with `capture` the payloads of data messages are kept
    /// (unmasked) and handed out in [`Event::Data`].
    pub fn new(capture: bool) -> Self {
        Self {
            capture,
            state: State::Header,
            hdr: [0; 14],
            hdr_len: 0,
            msg_opcode: 0,
            msg_len: 0,
            msg_compressed: false,
            data: Vec::new(),
            ctrl: Vec::new(),
        }
    }

    /// Feeds bytes; calls `on` for each event completed by them.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on: impl FnMut(Event<'_>),
    ) -> Result<(), ParseError> {
        loop {
            match self.state {
                State::Header => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    // Gather the two fixed bytes, then the rest of the header.
                    let need = if self.hdr_len < 2 {
                        2
                    } else {
                        header_len(self.hdr[1])
                    };
                    let take = (need - self.hdr_len).min(input.len());
                    self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&input[..take]);
                    self.hdr_len += take;
                    input = &input[take..];
                    if self.hdr_len < need {
                        continue;
                    }
                    if need == 2 && header_len(self.hdr[1]) > 2 {
                        continue;
                    }
                    self.start_frame(&mut on)?;
                }
                State::Payload {
                    remaining,
                    opcode,
                    fin,
                    mask,
                    mask_pos,
                } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    let (chunk, rest) = input.split_at(n);
                    input = rest;
                    let is_control = opcode >= 8;
                    let mut pos = mask_pos;
                    if is_control || self.capture {
                        let dst = if is_control {
                            &mut self.ctrl
                        } else {
                            &mut self.data
                        };
                        let start = dst.len();
                        dst.extend_from_slice(chunk);
                        if let Some(key) = mask {
                            pos = apply_mask(&mut dst[start..], key, pos);
                        }
                    }
                    let remaining = remaining - n as u64;
                    if remaining == 0 {
                        self.finish_frame(opcode, fin, &mut on);
                    } else {
                        self.state = State::Payload {
                            remaining,
                            opcode,
                            fin,
                            mask,
                            mask_pos: pos,
                        };
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Payload bytes of the current data frame that the caller may discard
    /// without reading them (nothing is captured from them); see
    /// [`FrameParser::skip`].
    pub fn skippable(&self) -> u64 {
        match self.state {
            State::Payload {
                remaining, opcode, ..
            } if opcode < 8 && !self.capture => remaining,
            _ => 0,
        }
    }

    /// Accounts for `n` (at most [`FrameParser::skippable`]) payload bytes
    /// the caller discarded, e.g. with `recv(MSG_TRUNC)`.
    pub fn skip(&mut self, n: u64, mut on: impl FnMut(Event<'_>)) {
        let State::Payload {
            remaining,
            opcode,
            fin,
            mask,
            mask_pos,
        } = self.state
        else {
            return;
        };
        let n = n.min(remaining);
        if n == remaining {
            self.finish_frame(opcode, fin, &mut on);
        } else {
            self.state = State::Payload {
                remaining: remaining - n,
                opcode,
                fin,
                mask,
                mask_pos,
            };
        }
    }

    fn start_frame(&mut self, on: &mut impl FnMut(Event<'_>)) -> Result<(), ParseError> {
        let b0 = self.hdr[0];
        let b1 = self.hdr[1];
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        let (len, mut off) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([self.hdr[2], self.hdr[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.hdr[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if b1 & 0x80 != 0 {
            let key = [
                self.hdr[off],
                self.hdr[off + 1],
                self.hdr[off + 2],
                self.hdr[off + 3],
            ];
            off += 4;
            Some(key)
        } else {
            None
        };
        debug_assert_eq!(off, self.hdr_len);
        self.hdr_len = 0;
        match opcode {
            OP_CONT => {}
            OP_TEXT | OP_BINARY => {
                self.msg_opcode = opcode;
                self.msg_len = 0;
                self.msg_compressed = b0 & RSV1 != 0;
                self.data.clear();
            }
            OP_CLOSE | OP_PING | OP_PONG => {
                if len > 125 || !fin {
                    return Err(ParseError::BadControlFrame);
                }
                self.ctrl.clear();
            }
            op => return Err(ParseError::BadOpcode(op)),
        }
        if opcode < 8 {
            self.msg_len += len;
        }
        if len == 0 {
            self.finish_frame(opcode, fin, on);
        } else {
            self.state = State::Payload {
                remaining: len,
                opcode,
                fin,
                mask,
                mask_pos: 0,
            };
        }
        Ok(())
    }

    fn finish_frame(&mut self, opcode: u8, fin: bool, on: &mut impl FnMut(Event<'_>)) {
        self.state = State::Header;
        match opcode {
            OP_PING => on(Event::Ping(&self.ctrl)),
            OP_PONG => on(Event::Pong),
            OP_CLOSE => on(Event::Close(&self.ctrl)),
            _ if fin => on(Event::Data {
                opcode: self.msg_opcode,
                len: self.msg_len,
                compressed: self.msg_compressed,
                payload: &self.data,
            }),
            _ => {}
        }
    }
}

/// Total header length implied by the second header byte.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Maximum size of a handshake (request or response head).
const MAX_HEAD: usize = 16 * 1024;

/// Reads an HTTP head (up to `\r\n\r\n`) into `buf`; returns its length.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    let mut scanned = 0;
    loop {
        if let Some(i) = buf[scanned..].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(scanned + i + 4);
        }
        scanned = buf.len().saturating_sub(3);
        if buf.len() > MAX_HEAD {
            anyhow::bail!("HTTP head too large");
        }
        buf.reserve(4096);
        let n = stream.read_buf(buf).await?;
        if n == 0 {
            anyhow::bail!("connection closed during handshake");
        }
    }
}

/// What the server answered to the client opening handshake.
#[derive(Debug)]
pub struct Opened {
    /// Bytes the server sent after its response head (the beginning of
    /// the frame stream).
    pub leftover: Vec<u8>,
    /// The `Sec-WebSocket-Extensions` answer, if any.
    pub extensions: Option<String>,
}

/// Performs the client opening handshake, offering `extensions` (a
/// `Sec-WebSocket-Extensions` value) if given.
pub async fn client_handshake(
    stream: &mut TcpStream,
    host: &str,
    path: &str,
    extensions: Option<&str>,
) -> anyhow::Result<Opened> {
    let offer = extensions.map_or(String::new(), |e| {
        format!("Sec-WebSocket-Extensions: {e}\r\n")
    });
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let head_len = read_head(stream, &mut buf).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf[..head_len])? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => anyhow::bail!("partial HTTP response"),
    }
    if resp.code != Some(101) {
        anyhow::bail!("handshake refused: HTTP {:?}", resp.code);
    }
    let expected = accept_key(CLIENT_KEY.as_bytes());
    let ok = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("sec-websocket-accept") && h.value == expected.as_bytes()
    });
    if !ok {
        anyhow::bail!("bad or missing Sec-WebSocket-Accept");
    }
    let extensions = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    Ok(Opened {
        leftover: buf.split_off(head_len),
        extensions,
    })
}

/// Performs a minimal server opening handshake (for peers that have no
/// handshake of their own without hyper). Returns bytes read past the
/// request head; a conforming client sends none before the response.
pub async fn server_handshake(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let head_len = read_head(stream, &mut buf).await?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len])? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => anyhow::bail!("partial HTTP request"),
    }
    let key = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
        .map(|h| h.value);
    let Some(key) = key else {
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await?;
        anyhow::bail!("not a WebSocket upgrade");
    };
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    stream.write_all(resp.as_bytes()).await?;
    Ok(buf.split_off(head_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(p: &mut FrameParser, input: &[u8]) -> Vec<(u8, u64, Vec<u8>)> {
        let mut out = Vec::new();
        p.feed(input, |e| match e {
            Event::Data {
                opcode,
                len,
                payload,
                ..
            } => out.push((opcode, len, payload.to_vec())),
            Event::Ping(b) => out.push((OP_PING, b.len() as u64, b.to_vec())),
            Event::Pong => out.push((OP_PONG, 0, vec![])),
            Event::Close(b) => out.push((OP_CLOSE, b.len() as u64, b.to_vec())),
        })
        .unwrap();
        out
    }

    #[test]
    fn rfc_accept_key() {
        assert_eq!(
            accept_key(CLIENT_KEY.as_bytes()),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn any_chunking_same_events() {
        let mut stream = Vec::new();
        for size in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            encode_frame(&mut stream, OP_BINARY, &payload, Some(MASK_KEY));
            encode_frame(&mut stream, OP_PING, b"hi", None);
            encode_frame(&mut stream, OP_TEXT, &payload, None);
        }
        let mut whole = FrameParser::new(true);
        let expected = events(&mut whole, &stream);
        assert_eq!(expected.len(), 18);
        assert_eq!(expected[15].1, 70_000);
        assert_eq!(expected[15].2[1000], (1000 % 251) as u8);
        for chunk in [1usize, 3, 7, 1000] {
            let mut p = FrameParser::new(true);
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                got.extend(events(&mut p, c));
            }
            assert_eq!(got, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn skipping_payload() {
        let mut s = Vec::new();
        encode_frame(&mut s, OP_BINARY, &[7u8; 1000], Some(MASK_KEY));
        encode_frame(&mut s, OP_TEXT, b"x", None);
        let mut p = FrameParser::new(false);
        let mut n = 0;
        p.feed(&s[..20], |_| n += 1).unwrap();
        assert_eq!(p.skippable(), 1000 - 12);
        p.skip(500, |_| n += 1);
        assert_eq!(p.skippable(), 488);
        p.skip(488, |_| n += 1);
        assert_eq!((n, p.skippable()), (1, 0));
        p.feed(&s[1008..], |_| n += 1).unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn fragmented_message() {
        let mut s = vec![0x01, 0x02, b'a', b'b'];
        encode_frame(&mut s, OP_PING, b"", None);
        s.extend_from_slice(&[0x80, 0x01, b'c']);
        let mut p = FrameParser::new(true);
        let ev = events(&mut p, &s);
        assert_eq!(ev[1], (OP_TEXT, 3, b"abc".to_vec()));
    }
}
