//! The frame codec: pure functions over byte slices (RFC 6455 section 5).
//!
//! [`FrameHeader::decode`] returns `Ok(None)` when it needs more bytes and
//! never consumes anything on its own; encoders append to any
//! [`bytes::BufMut`] (a `Vec<u8>` or `BytesMut`).

mod close;
mod mask;

pub use close::{CloseCode, MAX_CLOSE_REASON};
pub(crate) use close::{close_payload, parse_close_payload, truncate_reason};
pub use mask::{apply_mask, apply_mask_bytewise};

use bytes::{BufMut, Bytes, BytesMut};

use crate::deflate::Compressor;
use crate::error::ProtocolError;

/// The longest possible frame header: 2 bytes, an 8-byte length, a 4-byte key.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload a control frame may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continuation of a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Maps the 4-bit wire value; reserved values give `None`.
    pub fn from_wire(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// The 4-bit wire value.
    pub fn to_wire(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong are control frames.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of a message.
    pub fin: bool,
    /// RSV1-3 as the low three bits.
    pub rsv: u8,
    /// The raw 4-bit opcode (reserved values included, so the caller can
    /// reject them with the right close code).
    pub opcode: u8,
    /// The masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`.
    ///
    /// Returns `Ok(Some((header, header_len)))`, `Ok(None)` if `buf` is too
    /// short (nothing is consumed: call again with more bytes), or an error
    /// for a 64-bit length with its most significant bit set.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        let (payload_len, len_bytes) = match b1 & 0x7f {
            126 => match rest {
                [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
                _ => return Ok(None),
            },
            127 => match rest.first_chunk::<8>() {
                Some(bytes) => {
                    let len = u64::from_be_bytes(*bytes);
                    if len >> 63 != 0 {
                        return Err(ProtocolError::InvalidLength);
                    }
                    (len, 8)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 0),
        };
        let mut header_len = 2 + len_bytes;
        let mask = if masked {
            let Some(key) = buf.get(header_len..header_len + 4) else {
                return Ok(None);
            };
            header_len += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        Ok(Some((
            Self {
                fin: b0 & 0x80 != 0,
                rsv: (b0 >> 4) & 0x07,
                opcode: b0 & 0x0f,
                mask,
                payload_len,
            },
            header_len,
        )))
    }

    /// The encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the encoded header (with the shortest length form) to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(u8::from(self.fin) << 7 | (self.rsv & 0x07) << 4 | (self.opcode & 0x0f));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        match self.payload_len {
            n @ 0..=125 => out.put_u8(mask_bit | n as u8),
            n @ 126..=0xffff => {
                out.put_u8(mask_bit | 126);
                out.put_u16(n as u16);
            }
            n => {
                out.put_u8(mask_bit | 127);
                out.put_u64(n);
            }
        }
        if let Some(key) = self.mask {
            out.put_slice(&key);
        }
    }
}

/// A complete, unmasked (server-to-client) frame, encoded once so that the
/// same bytes can be queued on many connections without copying.
///
/// Hand it to [`crate::Connection::send_prepared`]; it is refused on a
/// client connection, whose frames must be masked.
///
/// [`PreparedFrame::with_deflate`] adds a compressed form, made once: every
/// connection that negotiated permessage-deflate without server context
/// takeover gets those same compressed bytes, the others the plain ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedFrame {
    opcode: OpCode,
    header: Bytes,
    payload: Bytes,
    deflated: Option<Deflated>,
}

/// The compressed form of a prepared frame.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Deflated {
    window_bits: u8,
    header: Bytes,
    payload: Bytes,
}

fn encode_header(opcode: OpCode, rsv: u8, len: usize) -> Bytes {
    let header = FrameHeader {
        fin: true,
        rsv,
        opcode: opcode.to_wire(),
        mask: None,
        payload_len: len as u64,
    };
    let mut buf = BytesMut::with_capacity(header.encoded_len());
    header.encode(&mut buf);
    buf.freeze()
}

impl PreparedFrame {
    /// A single-frame text message. The caller promises `text` is UTF-8,
    /// which `&str` guarantees.
    pub fn text(text: impl Into<Bytes>) -> Self {
        Self::new(OpCode::Text, text.into())
    }

    /// A single-frame text message whose payload is the concatenation of
    /// `parts`, each valid UTF-8 on its own.
    pub fn text_parts(parts: &[&str]) -> Self {
        let mut payload = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            payload.extend_from_slice(part.as_bytes());
        }
        Self::new(OpCode::Text, payload.freeze())
    }

    /// A single-frame binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::new(OpCode::Binary, data.into())
    }

    fn new(opcode: OpCode, payload: Bytes) -> Self {
        Self {
            opcode,
            header: encode_header(opcode, 0, payload.len()),
            payload,
            deflated: None,
        }
    }

    /// Adds the compressed (permessage-deflate, no context takeover) form,
    /// compressed once with `compressor`.
    pub fn with_deflate(mut self, compressor: &mut Compressor) -> Self {
        let payload = compressor.compress(&self.payload);
        self.deflated = Some(Deflated {
            window_bits: compressor.window_bits(),
            // RSV1: the compressed bit.
            header: encode_header(self.opcode, 0b100, payload.len()),
            payload,
        });
        self
    }

    /// The compressed payload, if [`PreparedFrame::with_deflate`] made one.
    pub fn deflated_payload(&self) -> Option<&Bytes> {
        self.deflated.as_ref().map(|d| &d.payload)
    }

    /// The compressed form: its window bits, header and payload.
    pub(crate) fn deflated(&self) -> Option<(u8, &Bytes, &Bytes)> {
        self.deflated
            .as_ref()
            .map(|d| (d.window_bits, &d.header, &d.payload))
    }

    /// The encoded header bytes.
    pub fn header(&self) -> &Bytes {
        &self.header
    }

    /// The payload bytes (shared, not copied, by clones of this frame).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Header plus payload length on the wire.
    pub fn wire_len(&self) -> usize {
        self.header.len() + self.payload.len()
    }
}

/// The shared part of a text message whose head differs per receiver (a
/// hub delivery: a per-connection prefix, then the same body for every
/// member), with an optional compressed form made once.
///
/// [`crate::Connection::send_text_with_body`] sends `head ++ body`. To a
/// connection that negotiated permessage-deflate without context takeover
/// for its sending direction, the payload is the head as a stored
/// (uncompressed) DEFLATE block followed by the body compressed once, so
/// every member gets the same compressed body bytes; a DEFLATE stream is a
/// sequence of blocks, and the body's blocks refer to nothing before them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBody {
    plain: Bytes,
    deflated: Option<(u8, Bytes)>,
}

impl PreparedBody {
    /// A body sent as is. The caller promises it is UTF-8 (with the head).
    pub fn new(body: Bytes) -> Self {
        Self {
            plain: body,
            deflated: None,
        }
    }

    /// Adds the compressed form, compressed once with `compressor`.
    pub fn with_deflate(mut self, compressor: &mut Compressor) -> Self {
        let payload = compressor.compress(&self.plain);
        self.deflated = Some((compressor.window_bits(), payload));
        self
    }

    /// The body.
    pub fn plain(&self) -> &Bytes {
        &self.plain
    }

    /// The compressed body, if [`PreparedBody::with_deflate`] made one.
    pub fn deflated_payload(&self) -> Option<&Bytes> {
        self.deflated.as_ref().map(|(_, b)| b)
    }

    pub(crate) fn deflated(&self) -> Option<(u8, &Bytes)> {
        self.deflated.as_ref().map(|(bits, b)| (*bits, b))
    }
}

/// Appends `data` as stored (uncompressed, non-final) DEFLATE blocks of at
/// most 65,535 bytes each (RFC 1951 section 3.2.4). Only valid where the
/// stream is at a byte boundary, as it is at the start of a message.
pub(crate) fn stored_blocks(data: &[u8], out: &mut BytesMut) {
    for block in data.chunks(0xffff) {
        let len = block.len() as u16;
        out.put_u8(0x00); // BFINAL 0, BTYPE 00, padded to the byte
        out.put_u16_le(len);
        out.put_u16_le(!len);
        out.put_slice(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(h: FrameHeader) {
        let mut buf = Vec::new();
        h.encode(&mut buf);
        assert_eq!(buf.len(), h.encoded_len());
        for cut in 0..buf.len() {
            assert_eq!(FrameHeader::decode(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(FrameHeader::decode(&buf), Ok(Some((h, buf.len()))));
    }

    #[test]
    fn every_length_form_roundtrips() {
        for len in [0, 1, 125, 126, 127, 0xffff, 0x10000, u64::MAX >> 1] {
            for mask in [None, Some([1, 2, 3, 4])] {
                roundtrip(FrameHeader {
                    fin: true,
                    rsv: 0,
                    opcode: 1,
                    mask,
                    payload_len: len,
                });
                roundtrip(FrameHeader {
                    fin: false,
                    rsv: 7,
                    opcode: 0xf,
                    mask,
                    payload_len: len,
                });
            }
        }
    }

    #[test]
    fn shortest_length_form_is_used() {
        let enc = |len| {
            let mut b = Vec::new();
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: 2,
                mask: None,
                payload_len: len,
            }
            .encode(&mut b);
            b
        };
        assert_eq!(enc(125), [0x82, 125]);
        assert_eq!(enc(126), [0x82, 126, 0, 126]);
        assert_eq!(enc(65535), [0x82, 126, 0xff, 0xff]);
        assert_eq!(enc(65536), [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn rfc_6455_examples_decode() {
        // Section 5.7: a single-frame unmasked text message "Hello".
        let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, n) = FrameHeader::decode(&unmasked).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, 1, None, 5, 2)
        );
        // A single-frame masked text message "Hello".
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = FrameHeader::decode(&masked).unwrap().unwrap();
        assert_eq!(
            (h.mask, h.payload_len, n),
            (Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6)
        );
        // 256 bytes binary in a single unmasked frame.
        let (h, n) = FrameHeader::decode(&[0x82, 0x7E, 0x01, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (2, 256, 4));
        // 64 KiB binary in a single unmasked frame.
        let (h, n) = FrameHeader::decode(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn length_with_top_bit_set_is_rejected() {
        let buf = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::decode(&buf), Err(ProtocolError::InvalidLength));
    }

    #[test]
    fn prepared_frame_matches_header_encoding() {
        let f = PreparedFrame::text("Hello");
        assert_eq!(&f.header()[..], &[0x81, 0x05]);
        assert_eq!(f.wire_len(), 7);
        let clone = f.clone();
        assert_eq!(clone.payload().as_ptr(), f.payload().as_ptr());
    }
}
