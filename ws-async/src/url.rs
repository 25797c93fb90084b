//! `ws://` URLs.

use crate::error::WsError;

/// A parsed `ws://host[:port][/path][?query]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// Host name or address (IPv6 in brackets).
    pub host: String,
    /// Port (80 by default).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl WsUrl {
    /// Parses a URL. `wss://` is refused with a clear error: TLS is not
    /// implemented in these adapters.
    pub fn parse(url: &str) -> Result<Self, WsError> {
        if url.starts_with("wss://") {
            return Err(WsError::Url(format!(
                "{url}: wss:// (TLS) is not supported"
            )));
        }
        let Some(rest) = url.strip_prefix("ws://") else {
            return Err(WsError::Url(format!(
                "{url}: expected ws://host[:port]/path"
            )));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            let (h, after) = stripped
                .split_once(']')
                .ok_or_else(|| WsError::Url(format!("{url}: unterminated IPv6 address")))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(WsError::Url(format!("{url}: missing host")));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse()
                .map_err(|_| WsError::Url(format!("{url}: invalid port {p:?}")))?,
        };
        if target
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(WsError::Url(format!("{url}: whitespace in path")));
        }
        Ok(Self { host, port, target })
    }

    /// `host:port`, for connecting.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The `Host` header value (port omitted when it is 80).
    pub fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            self.authority()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let u = WsUrl::parse("ws://127.0.0.1:9001/runCase?case=3&agent=x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("127.0.0.1", 9001, "/runCase?case=3&agent=x")
        );
        let u = WsUrl::parse("ws://example.com").unwrap();
        assert_eq!(
            (u.port, u.target.as_str(), u.host_header()),
            (80, "/", "example.com".to_owned())
        );
        let u = WsUrl::parse("ws://[::1]:8080?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("[::1]", 8080, "/?x=1")
        );
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert!(matches!(WsUrl::parse("wss://x/"), Err(WsError::Url(m)) if m.contains("TLS")));
        assert!(WsUrl::parse("http://x/").is_err());
        assert!(WsUrl::parse("ws://:80/").is_err());
        assert!(WsUrl::parse("ws://x:99999/").is_err());
    }
}
