//! permessage-deflate (RFC 7692) for the load tool: the offers it makes,
//! messages compressed once up front, and an inflater for what the server
//! sends back. Raw DEFLATE through `flate2` (zlib), window 15.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The tail a sync flush ends with, removed on send and appended on
/// receive (RFC 7692 section 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What the load tool offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Offer {
    /// No offer: plain frames.
    Off,
    /// No context takeover in either direction: every message is
    /// compressed on its own (what `--deflate shared` answers).
    NoContext,
    /// Server context takeover allowed (the client still compresses each
    /// message on its own): a server that keeps a compressor per
    /// connection does so.
    Takeover,
}

impl Offer {
    /// The `Sec-WebSocket-Extensions` value, `None` for [`Offer::Off`].
    pub fn header(self) -> Option<&'static str> {
        match self {
            Self::Off => None,
            Self::NoContext => {
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
            }
            Self::Takeover => Some("permessage-deflate; client_no_context_takeover"),
        }
    }

    /// Checks the server's answer: `Ok(None)` without an offer,
    /// `Ok(Some(inflater))` when permessage-deflate was accepted, an error
    /// when it was offered and not accepted.
    pub fn check_answer(self, answer: Option<&str>) -> anyhow::Result<Option<Inflater>> {
        if self == Self::Off {
            return Ok(None);
        }
        let Some(answer) = answer.filter(|a| a.trim_start().starts_with("permessage-deflate"))
        else {
            anyhow::bail!("the server did not accept permessage-deflate ({answer:?})");
        };
        Ok(Some(Inflater::new(
            answer.contains("server_no_context_takeover"),
        )))
    }
}

/// `payload` compressed as one message without context takeover (sync
/// flush, tail removed), at zlib level 6, window 15.
pub fn compress_message(payload: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    loop {
        let consumed = c.total_in() as usize;
        out.reserve(payload.len() / 2 + 64);
        c.compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate");
        if c.total_in() as usize == payload.len() && out.ends_with(&TAIL) {
            break;
        }
    }
    out.truncate(out.len() - TAIL.len());
    out
}

/// Inflates the server's compressed messages.
pub struct Inflater {
    inner: Decompress,
    /// The server compresses each message on its own: reset after each.
    reset: bool,
    out: Vec<u8>,
}

impl Inflater {
    fn new(reset: bool) -> Self {
        Self {
            inner: Decompress::new(false),
            reset,
            out: Vec::new(),
        }
    }

    /// Inflates one whole message (its frames' payloads, concatenated);
    /// returns the plain bytes.
    pub fn inflate(&mut self, payload: &[u8]) -> anyhow::Result<&[u8]> {
        self.out.clear();
        for input in [payload, &TAIL[..]] {
            let start = self.inner.total_in();
            loop {
                let done = (self.inner.total_in() - start) as usize;
                if done == input.len() && self.out.len() < self.out.capacity() {
                    break;
                }
                self.out.reserve(input.len().max(256) * 4);
                let status = self.inner.decompress_vec(
                    &input[done..],
                    &mut self.out,
                    FlushDecompress::Sync,
                )?;
                if status == Status::StreamEnd {
                    anyhow::bail!("a final DEFLATE block in a message");
                }
            }
        }
        if self.reset {
            self.inner.reset(false);
        }
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_reset() {
        let text: Vec<u8> = (0..20_000).map(|i| b"hello room "[i % 11]).collect();
        let packed = compress_message(&text);
        assert!(packed.len() < text.len() / 10);
        for reset in [true, false] {
            let mut inf = Inflater::new(reset);
            for _ in 0..3 {
                assert_eq!(inf.inflate(&packed).unwrap(), &text[..]);
            }
        }
        assert!(Inflater::new(true).inflate(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn answers() {
        assert!(Offer::Off.check_answer(None).unwrap().is_none());
        assert!(Offer::NoContext.check_answer(None).is_err());
        let inf = Offer::Takeover
            .check_answer(Some("permessage-deflate; server_no_context_takeover"))
            .unwrap()
            .unwrap();
        assert!(inf.reset);
    }
}
