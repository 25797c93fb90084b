//! Client side: building the request and validating the server's answer.

use base64::Engine as _;
use bytes::{BufMut, Bytes};

use super::has_token;
use super::response::{check_headers, put_headers};
use crate::deflate::{DeflateConfig, DeflateParams};
use crate::error::{HandshakeError, SendError};

/// What a client asks for in its opening handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// The `Host` header: host, plus `:port` when it is not the default.
    pub host: String,
    /// The request target: path and optional query, starting with `/`.
    pub target: String,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// Extra headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    /// The 16 random bytes behind `Sec-WebSocket-Key`. The caller supplies
    /// them (from the OS random source) so this crate reads no randomness.
    pub key: [u8; 16],
}

impl ClientRequest {
    /// A request for `target` on `host` with the given random key.
    pub fn new(host: impl Into<String>, target: impl Into<String>, key: [u8; 16]) -> Self {
        Self {
            host: host.into(),
            target: target.into(),
            origin: None,
            protocols: Vec::new(),
            headers: Vec::new(),
            key,
        }
    }

    /// The `Sec-WebSocket-Key` header value.
    pub fn key_header(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key)
    }

    /// Appends the encoded request to `out`, with the permessage-deflate
    /// offers of `deflate` if it is set.
    pub(crate) fn encode(
        &self,
        out: &mut impl BufMut,
        deflate: Option<&DeflateConfig>,
    ) -> Result<(), SendError> {
        check_headers(&self.headers)?;
        let mut fixed = vec![("Host".to_owned(), self.host.clone())];
        if let Some(origin) = &self.origin {
            fixed.push(("Origin".into(), origin.clone()));
        }
        if !self.protocols.is_empty() {
            fixed.push(("Sec-WebSocket-Protocol".into(), self.protocols.join(", ")));
        }
        if let Some(deflate) = deflate {
            fixed.push((
                "Sec-WebSocket-Extensions".into(),
                deflate.client_offer_header(),
            ));
        }
        check_headers(&fixed)?;
        if !self.target.starts_with('/')
            || self
                .target
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(SendError::InvalidHeader("request target".into()));
        }
        out.put_slice(format!("GET {} HTTP/1.1\r\n", self.target).as_bytes());
        put_headers(out, &fixed);
        out.put_slice(
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
        );
        out.put_slice(format!("Sec-WebSocket-Key: {}\r\n", self.key_header()).as_bytes());
        put_headers(out, &self.headers);
        out.put_slice(b"\r\n");
        Ok(())
    }
}

/// The server's validated 101 answer, handed over in
/// [`crate::Event::Accepted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerResponse {
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters the server accepted, if any.
    pub deflate: Option<DeflateParams>,
    /// All response headers.
    pub headers: Vec<(String, Bytes)>,
}

/// Parses and validates the server's response head against `req` (and
/// the deflate offers made from `deflate`). Returns `Ok(None)` while the
/// head is incomplete.
pub(crate) fn parse_response(
    buf: &[u8],
    req: &ClientRequest,
    deflate: Option<&DeflateConfig>,
    max_headers: usize,
    max_size: usize,
) -> Result<Option<(ServerResponse, usize)>, HandshakeError> {
    let mut storage = vec![httparse::EMPTY_HEADER; max_headers];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::HeadTooLarge { limit: max_size });
        }
        Err(e) => return Err(HandshakeError::MalformedHttp(e.to_string())),
    };
    let status = resp.code.unwrap_or_default();
    if status != 101 {
        return Err(HandshakeError::Rejected(status));
    }
    let headers: Vec<(String, Bytes)> = resp
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), Bytes::copy_from_slice(h.value)))
        .collect();
    let named = |name: &str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &v[..])
            .collect::<Vec<_>>()
    };
    if !named("upgrade").iter().any(|v| has_token(v, "websocket")) {
        return Err(HandshakeError::InvalidHeader {
            name: "Upgrade",
            reason: "must contain websocket",
        });
    }
    if !named("connection").iter().any(|v| has_token(v, "upgrade")) {
        return Err(HandshakeError::InvalidHeader {
            name: "Connection",
            reason: "must contain upgrade",
        });
    }
    let expected = super::accept_key(req.key_header().as_bytes());
    match named("sec-websocket-accept").first() {
        Some(v) if v.trim_ascii() == expected.as_bytes() => {}
        Some(_) => return Err(HandshakeError::AcceptMismatch),
        None => return Err(HandshakeError::MissingHeader("Sec-WebSocket-Accept")),
    }
    let extensions = named("sec-websocket-extensions");
    let deflate = match deflate {
        Some(config) => config.check_answer(extensions.iter().copied())?,
        None if extensions.is_empty() => None,
        None => return Err(HandshakeError::UnofferedExtension),
    };
    let protocol = match named("sec-websocket-protocol").first() {
        None => None,
        Some(v) => {
            let p = String::from_utf8_lossy(v).trim().to_owned();
            if !req.protocols.contains(&p) {
                return Err(HandshakeError::UnofferedProtocol(p));
            }
            Some(p)
        }
    };
    Ok(Some((
        ServerResponse {
            protocol,
            deflate,
            headers,
        },
        len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ClientRequest {
        let mut req = ClientRequest::new("server.example.com", "/chat", *b"the sample nonce");
        req.protocols = vec!["chat".into()];
        req
    }

    const RESPONSE: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n";

    #[test]
    fn rfc_example_key_and_request() {
        let req = request();
        assert_eq!(req.key_header(), "dGhlIHNhbXBsZSBub25jZQ==");
        let mut out = Vec::new();
        req.encode(&mut out, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /chat HTTP/1.1\r\nHost: server.example.com\r\n"));
        assert!(text.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn valid_response_is_accepted() {
        let (resp, len) = parse_response(RESPONSE.as_bytes(), &request(), None, 64, 8192)
            .unwrap()
            .unwrap();
        assert_eq!(len, RESPONSE.len());
        assert_eq!(resp.protocol.as_deref(), Some("chat"));
    }

    #[test]
    fn bad_responses_are_refused() {
        let req = request();
        let check = |text: String, expect: HandshakeError| {
            assert_eq!(
                parse_response(text.as_bytes(), &req, None, 64, 8192),
                Err(expect),
                "{text}"
            );
        };
        check(
            RESPONSE.replace("101 Switching Protocols", "403 Forbidden"),
            HandshakeError::Rejected(403),
        );
        check(
            RESPONSE.replace("s3pP", "AAAA"),
            HandshakeError::AcceptMismatch,
        );
        check(
            RESPONSE.replace(": chat", ": other"),
            HandshakeError::UnofferedProtocol("other".into()),
        );
        check(
            RESPONSE.replace("Upgrade: websocket\r\n", ""),
            HandshakeError::InvalidHeader {
                name: "Upgrade",
                reason: "must contain websocket",
            },
        );
        check(
            RESPONSE.replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            ),
            HandshakeError::UnofferedExtension,
        );
    }
}
