//! Incremental UTF-8 validation across frames and partial reads.
//!
//! A text message may be split anywhere, even inside a character. The
//! validator keeps at most three bytes of an unfinished character and fails
//! on the first byte that can no longer start or continue a valid sequence,
//! so an invalid message is rejected as soon as the offending byte arrives
//! (RFC 6455 section 8.1; Autobahn 6.4.* checks this "fail fast" rule).
//!
//! It relies on `simdutf8::compat::from_utf8` (SIMD validation, several
//! times faster than std on non-ASCII text; the crate fastwebsockets uses),
//! whose error, like std's, distinguishes "invalid" (`error_len() ==
//! Some(_)`) from "incomplete at the end" (`error_len() == None`) and checks
//! the second byte's range per lead byte, so prefixes such as `F4 90` or
//! `ED A0` are rejected immediately.

use simdutf8::compat::from_utf8;

/// Streaming UTF-8 validator.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

/// The input is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the message.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        // ASCII (most chat and JSON text) needs no character tracking; the
        // word-at-a-time scan is cheaper than the validator's set-up for
        // small messages.
        if self.partial_len == 0 && input.is_ascii() {
            return Ok(());
        }
        if self.partial_len > 0 {
            // Complete the character that the previous piece cut.
            let have = usize::from(self.partial_len);
            let need = sequence_len(self.partial[0]).ok_or(InvalidUtf8)?;
            let take = (need - have).min(input.len());
            self.partial[have..have + take].copy_from_slice(&input[..take]);
            let now = have + take;
            match from_utf8(&self.partial[..now]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still incomplete: the input was too short to finish it.
                    self.partial_len = now as u8;
                    return Ok(());
                }
            }
            input = &input[take..];
        }
        match from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &input[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Whether the input so far ends on a character boundary; a message
    /// that ends while this is false is invalid.
    pub fn is_complete(&self) -> bool {
        self.partial_len == 0
    }

    /// Resets to the start of a new message.
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }
}

/// The length of a UTF-8 sequence from its lead byte.
fn sequence_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(bytes: &[u8], at: &[usize]) -> Result<bool, InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut prev = 0;
        for &cut in at.iter().chain(std::iter::once(&bytes.len())) {
            v.feed(&bytes[prev..cut])?;
            prev = cut;
        }
        Ok(v.is_complete())
    }

    #[test]
    fn agrees_with_std_for_every_split() {
        let samples: &[&[u8]] = &[
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "κόσμε".as_bytes(),
            "\u{10FFFF}\u{FFFD}a\u{800}".as_bytes(),
            &[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xf4, 0x90, 0x80,
                0x80,
            ],
            &[0xed, 0xa0, 0x80],
            &[0xc0, 0xaf],
            &[0xf0, 0x9f, 0x98],
            &[0x80],
            &[0xff, 0x41],
        ];
        for s in samples {
            let expected = std::str::from_utf8(s).is_ok();
            for a in 0..=s.len() {
                for b in a..=s.len() {
                    let got = matches!(feed_split(s, &[a, b]), Ok(true));
                    assert_eq!(got, expected, "{s:x?} split at {a},{b}");
                }
            }
        }
    }

    #[test]
    fn fails_fast_on_the_first_impossible_byte() {
        let mut v = Utf8Validator::new();
        // F4 90 can never begin a valid character (above U+10FFFF).
        v.feed(b"abc").unwrap();
        v.feed(&[0xf4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
        // A surrogate lead ED A0 is rejected at its second byte.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xed, 0xa0]), Err(InvalidUtf8));
        // An overlong lead byte is rejected alone.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xc0]), Err(InvalidUtf8));
    }

    #[test]
    fn incomplete_end_is_reported() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xe2, 0x82]).unwrap();
        assert!(!v.is_complete());
        v.feed(&[0xac]).unwrap();
        assert!(v.is_complete());
    }
}
