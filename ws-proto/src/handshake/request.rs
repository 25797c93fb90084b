//! Server side: parsing and validating the client's upgrade request.

use base64::Engine as _;
use bytes::Bytes;

use super::has_token;
use crate::deflate::DeflateOffer;
use crate::error::HandshakeError;

/// A parsed HTTP request head, handed to the server application in
/// [`crate::Event::Request`] so it can route and authorise it (path, query,
/// Origin, token headers) before it accepts or rejects.
///
/// A request that is not a valid WebSocket upgrade is still delivered, with
/// [`Request::upgrade_error`] saying why, so a server can answer plain HTTP
/// (health checks, metrics) on the same port.
///
/// The head is kept as one copy of its bytes, and the method, target and
/// headers as positions in it: parsing allocates the same few times however
/// many headers there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    head: Bytes,
    method: Span,
    target: Span,
    /// Name and value of every header, in order.
    headers: Vec<(Span, Span)>,
    upgrade: Result<AcceptKey, HandshakeError>,
}

/// A byte range of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// Where `part` (a slice of `head`) lies in `head`.
    /// An empty span if `part` is not inside `head`.
    fn of(head: &[u8], part: &[u8]) -> Self {
        let start = (part.as_ptr() as usize).wrapping_sub(head.as_ptr() as usize);
        match start.checked_add(part.len()) {
            Some(end) if end <= head.len() => Self { start, end },
            _ => Self { start: 0, end: 0 },
        }
    }
}

/// A `Sec-WebSocket-Accept` value: base64 of a SHA-1 digest, 28 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcceptKey([u8; 28]);

impl AcceptKey {
    pub(crate) fn as_str(&self) -> &str {
        // Base64 is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Header slots parsed on the stack; a larger `max_headers` uses the heap.
const STACK_HEADERS: usize = 64;

impl Request {
    /// Parses a complete head (`buf` must end at or contain `\r\n\r\n`).
    /// Returns the request and the head's length.
    pub(crate) fn parse(
        buf: &[u8],
        max_headers: usize,
        max_size: usize,
    ) -> Result<Option<(Self, usize)>, HandshakeError> {
        let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
        let mut heap = Vec::new();
        let storage: &mut [httparse::Header<'_>] = if max_headers <= STACK_HEADERS {
            &mut stack[..max_headers]
        } else {
            heap.resize(max_headers, httparse::EMPTY_HEADER);
            &mut heap
        };
        let mut req = httparse::Request::new(storage);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HandshakeError::HeadTooLarge { limit: max_size });
            }
            Err(e) => return Err(HandshakeError::MalformedHttp(e.to_string())),
        };
        let head = &buf[..len];
        let span = |part: &[u8]| Span::of(buf, part);
        let method = span(req.method.unwrap_or_default().as_bytes());
        let target = span(req.path.unwrap_or_default().as_bytes());
        let version = req.version.unwrap_or_default();
        let headers = req
            .headers
            .iter()
            .map(|h| (span(h.name.as_bytes()), span(h.value)))
            .collect();
        let mut request = Self {
            head: Bytes::copy_from_slice(head),
            method,
            target,
            headers,
            upgrade: Err(HandshakeError::Eof),
        };
        request.upgrade = request.validate(version);
        Ok(Some((request, len)))
    }

    fn text(&self, span: Span) -> &str {
        self.head
            .get(span.start..span.end)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    fn bytes(&self, span: Span) -> &[u8] {
        self.head.get(span.start..span.end).unwrap_or_default()
    }

    /// RFC 6455 section 4.2.1, in order; returns the accept value.
    fn validate(&self, version: u8) -> Result<AcceptKey, HandshakeError> {
        if self.method() != "GET" {
            return Err(HandshakeError::MethodNotGet(self.method().to_owned()));
        }
        if version != 1 {
            return Err(HandshakeError::HttpVersion);
        }
        if self.header("host").is_none() {
            return Err(HandshakeError::MissingHeader("Host"));
        }
        if !self
            .headers_named("upgrade")
            .any(|v| has_token(v, "websocket"))
        {
            return Err(HandshakeError::InvalidHeader {
                name: "Upgrade",
                reason: "must contain websocket",
            });
        }
        if !self
            .headers_named("connection")
            .any(|v| has_token(v, "upgrade"))
        {
            return Err(HandshakeError::InvalidHeader {
                name: "Connection",
                reason: "must contain upgrade",
            });
        }
        match self.header_bytes("sec-websocket-version") {
            Some(v) if v.trim_ascii() == b"13" => {}
            _ => return Err(HandshakeError::UnsupportedVersion),
        }
        let key = self
            .header_bytes("sec-websocket-key")
            .ok_or(HandshakeError::MissingHeader("Sec-WebSocket-Key"))?
            .trim_ascii();
        // 16 bytes encode to 24 characters; the buffer has room to spare so
        // that a longer key fails on its length, not on the buffer.
        let mut raw = [0u8; 24];
        match base64::engine::general_purpose::STANDARD.decode_slice(key, &mut raw) {
            Ok(16) => Ok(AcceptKey(super::accept_key_bytes(key))),
            _ => Err(HandshakeError::InvalidHeader {
                name: "Sec-WebSocket-Key",
                reason: "must be base64 of 16 bytes",
            }),
        }
    }

    /// The method (`GET` for a WebSocket upgrade).
    pub fn method(&self) -> &str {
        self.text(self.method)
    }

    /// The request target as sent: path and query.
    pub fn target(&self) -> &str {
        self.text(self.target)
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(p, _)| p)
    }

    /// The query string after `?`, if any (not percent-decoded).
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// The value of query parameter `name` (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// All headers in order: names as sent, and values.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers
            .iter()
            .map(|&(name, value)| (self.text(name), self.bytes(value)))
    }

    /// The first header with this name (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first header with this name (case-insensitive), as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers_named(name).next()
    }

    fn headers_named<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |&&(n, _)| self.bytes(n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|&(_, v)| self.bytes(v))
    }

    /// The `Origin` header, if present.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// The subprotocols the client offers, in its order of preference.
    pub fn protocols(&self) -> impl Iterator<Item = &str> + '_ {
        self.headers_named("sec-websocket-protocol")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }

    /// The first offered subprotocol that the server `supported` list has.
    pub fn select_protocol(&self, supported: &[&str]) -> Option<String> {
        self.protocols()
            .find(|p| supported.contains(p))
            .map(str::to_owned)
    }

    /// The client's well-formed permessage-deflate offers, in its order of
    /// preference (malformed ones are left out: RFC 7692 declines them).
    pub fn deflate_offers(&self) -> Vec<DeflateOffer> {
        DeflateOffer::parse_offers(self.headers_named("sec-websocket-extensions"))
    }

    /// Whether this is a valid WebSocket upgrade request.
    pub fn is_upgrade(&self) -> bool {
        self.upgrade.is_ok()
    }

    /// Why this request is not a valid upgrade, if it is not.
    pub fn upgrade_error(&self) -> Option<&HandshakeError> {
        self.upgrade.as_ref().err()
    }

    /// The `Sec-WebSocket-Accept` value, for a valid upgrade.
    pub(crate) fn accept_value(&self) -> Result<AcceptKey, &HandshakeError> {
        self.upgrade.as_ref().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &[u8] = b"GET /chat?room=a&token=t%20x HTTP/1.1\r\n\
Host: server.example.com\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

    fn parse(buf: &[u8]) -> Request {
        Request::parse(buf, 64, 8192).unwrap().unwrap().0
    }

    fn with(replace: &str, by: &str) -> Vec<u8> {
        String::from_utf8(RFC_REQUEST.to_vec())
            .unwrap()
            .replace(replace, by)
            .into_bytes()
    }

    #[test]
    fn rfc_example_request_is_valid() {
        let req = parse(RFC_REQUEST);
        assert!(req.is_upgrade(), "{:?}", req.upgrade_error());
        assert_eq!(
            req.accept_value().unwrap().as_str(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let headers: Vec<_> = req.headers().collect();
        assert_eq!(headers.len(), 7);
        assert_eq!(headers[0], ("Host", &b"server.example.com"[..]));
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("room=a&token=t%20x"));
        assert_eq!(req.query_param("token"), Some("t%20x"));
        assert_eq!(req.query_param("nope"), None);
        assert_eq!(req.origin(), Some("http://example.com"));
        assert_eq!(req.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
        assert_eq!(
            req.select_protocol(&["superchat"]),
            Some("superchat".into())
        );
        assert_eq!(req.header("HOST"), Some("server.example.com"));
    }

    #[test]
    fn each_rule_is_checked() {
        let cases: &[(&str, &str, u16)] = &[
            ("GET /chat", "POST /chat", 405),
            ("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost", 400),
            ("Host: server.example.com\r\n", "", 400),
            ("Upgrade: websocket", "Upgrade: h2c", 400),
            ("Connection: Upgrade", "Connection: keep-alive", 400),
            ("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8", 426),
            ("Sec-WebSocket-Version: 13\r\n", "", 426),
            ("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 400),
            ("dGhlIHNhbXBsZSBub25jZQ==", "!!!", 400),
            ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 400),
        ];
        for (from, to, status) in cases {
            let req = parse(&with(from, to));
            let err = req
                .upgrade_error()
                .unwrap_or_else(|| panic!("{from} -> {to} accepted"));
            assert_eq!(err.status_hint(), *status, "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn token_lists_and_case_are_accepted() {
        let req = parse(&with(
            "Connection: Upgrade",
            "connection: keep-alive, UPGRADE",
        ));
        assert!(req.is_upgrade());
        let req = parse(&with("Upgrade: websocket", "upgrade: WebSocket"));
        assert!(req.is_upgrade());
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert_eq!(Request::parse(&RFC_REQUEST[..20], 64, 8192), Ok(None));
        assert!(matches!(
            Request::parse(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 64, 8192),
            Err(HandshakeError::MalformedHttp(_))
        ));
        assert!(matches!(
            Request::parse(RFC_REQUEST, 3, 8192),
            Err(HandshakeError::HeadTooLarge { .. })
        ));
    }
}
