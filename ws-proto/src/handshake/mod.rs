//! The opening handshake (RFC 6455 section 4), as pure functions over bytes.
//!
//! - [`accept_key`]: `Sec-WebSocket-Accept` from a key.
//! - [`request`]: the server side: parse and validate an upgrade request.
//! - [`response`]: writing 101 and HTTP error responses.
//! - [`client`]: the client side: build a request, validate the response.

pub mod client;
pub mod request;
pub mod response;

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

pub use client::{ClientRequest, ServerResponse};
pub use request::Request;
pub use response::{AcceptOptions, HttpResponse};

/// The GUID that RFC 6455 appends to the key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` value.
///
/// ```
/// assert_eq!(
///     ws_proto::handshake::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
pub fn accept_key(key: &[u8]) -> String {
    String::from_utf8_lossy(&accept_key_bytes(key)).into_owned()
}

/// [`accept_key`] without an allocation: always 28 base64 characters.
pub(crate) fn accept_key_bytes(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let mut out = [0u8; 28];
    // A 20-byte digest encodes to exactly 28 characters.
    let _ = base64::engine::general_purpose::STANDARD.encode_slice(sha.finalize(), &mut out);
    out
}

/// Whether a comma-separated header value contains `token`, compared
/// case-insensitively (e.g. `Connection: keep-alive, Upgrade`).
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Finds the end of an HTTP head (`\r\n\r\n`), scanning from `from`.
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf.get(start..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| start + p + 4)
}

/// Rejects header names and values that would break HTTP framing.
pub(crate) fn header_is_safe(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && value.bytes().all(|b| b != b'\r' && b != b'\n' && b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_accept_key_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn tokens_are_case_insensitive_in_comma_lists() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b"UPGRADE", "upgrade"));
        assert!(!has_token(b"upgrader", "upgrade"));
        assert!(!has_token(b"", "upgrade"));
    }

    #[test]
    fn head_end_is_found_across_scans() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        assert_eq!(find_head_end(buf, 0), Some(27));
        assert_eq!(find_head_end(buf, 25), Some(27));
        assert_eq!(find_head_end(&buf[..26], 0), None);
    }
}
