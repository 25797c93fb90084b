//! Server side: writing the 101 answer or an HTTP response.

use bytes::{BufMut, Bytes};

use super::header_is_safe;
use crate::error::{HandshakeError, SendError};

/// How a server accepts an upgrade request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptOptions {
    /// The chosen subprotocol; it must be one the client offered.
    pub protocol: Option<String>,
    /// Extra response headers (e.g. `Set-Cookie`).
    pub headers: Vec<(String, String)>,
    /// Decline the client's permessage-deflate offers even though the
    /// connection's `Config::deflate` would accept one.
    pub decline_deflate: bool,
}

impl AcceptOptions {
    /// Accept with a subprotocol.
    pub fn with_protocol(protocol: impl Into<String>) -> Self {
        Self {
            protocol: Some(protocol.into()),
            ..Self::default()
        }
    }
}

/// A plain HTTP response: a handshake rejection or an answer to a
/// non-WebSocket request on the same port. The connection closes after it
/// (`Connection: close`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` of the body.
    pub content_type: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A response with a plain-text body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8".into(),
            headers: Vec::new(),
            body: Bytes::from(body.into()),
        }
    }

    /// The rejection for a handshake error: its status hint, its message as
    /// the body, and `Sec-WebSocket-Version: 13` on a 426 (RFC 6455 4.4).
    pub fn for_error(err: &HandshakeError) -> Self {
        let mut resp = Self::text(err.status_hint(), format!("{err}\n"));
        match err.status_hint() {
            426 => resp
                .headers
                .push(("Sec-WebSocket-Version".into(), "13".into())),
            405 => resp.headers.push(("Allow".into(), "GET".into())),
            _ => {}
        }
        resp
    }

    /// Appends the encoded response to `out`.
    pub(crate) fn encode(&self, out: &mut impl BufMut) -> Result<(), SendError> {
        check_headers(&self.headers)?;
        if !header_is_safe("Content-Type", &self.content_type) {
            return Err(SendError::InvalidHeader("Content-Type".into()));
        }
        put_str(
            out,
            &format!(
                "HTTP/1.1 {} {}\r\n",
                self.status,
                reason_phrase(self.status)
            ),
        );
        put_str(out, &format!("Content-Type: {}\r\n", self.content_type));
        put_str(out, &format!("Content-Length: {}\r\n", self.body.len()));
        put_str(out, "Connection: close\r\n");
        put_headers(out, &self.headers);
        put_str(out, "\r\n");
        out.put_slice(&self.body);
        Ok(())
    }
}

/// Appends `101 Switching Protocols` for a validated request, with the
/// `Sec-WebSocket-Extensions` answer if one was negotiated.
pub(crate) fn encode_switching(
    out: &mut impl BufMut,
    accept: &str,
    opts: &AcceptOptions,
    extensions: Option<&str>,
) -> Result<(), SendError> {
    check_headers(&opts.headers)?;
    if let Some(p) = &opts.protocol
        && !header_is_safe("Sec-WebSocket-Protocol", p)
    {
        return Err(SendError::InvalidHeader("Sec-WebSocket-Protocol".into()));
    }
    put_str(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    put_header(out, "Sec-WebSocket-Accept", accept);
    if let Some(protocol) = &opts.protocol {
        put_header(out, "Sec-WebSocket-Protocol", protocol);
    }
    if let Some(extensions) = extensions {
        put_header(out, "Sec-WebSocket-Extensions", extensions);
    }
    put_headers(out, &opts.headers);
    put_str(out, "\r\n");
    Ok(())
}

pub(crate) fn check_headers(headers: &[(String, String)]) -> Result<(), SendError> {
    match headers.iter().find(|(n, v)| !header_is_safe(n, v)) {
        Some((name, _)) => Err(SendError::InvalidHeader(name.clone())),
        None => Ok(()),
    }
}

pub(crate) fn put_headers(out: &mut impl BufMut, headers: &[(String, String)]) {
    for (name, value) in headers {
        put_header(out, name, value);
    }
}

/// Appends `name: value\r\n` (checked by the caller).
fn put_header(out: &mut impl BufMut, name: &str, value: &str) {
    put_str(out, name);
    put_str(out, ": ");
    put_str(out, value);
    put_str(out, "\r\n");
}

fn put_str(out: &mut impl BufMut, s: &str) {
    out.put_slice(s.as_bytes());
}

/// Reason phrases for the statuses a WebSocket server commonly sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_for_wrong_version_names_version_13() {
        let mut out = Vec::new();
        HttpResponse::for_error(&HandshakeError::UnsupportedVersion)
            .encode(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
    }

    #[test]
    fn header_injection_is_refused() {
        let mut out = Vec::new();
        let opts = AcceptOptions {
            headers: vec![("X".into(), "a\r\nEvil: 1".into())],
            ..AcceptOptions::default()
        };
        assert!(encode_switching(&mut out, "k", &opts, None).is_err());
    }
}
