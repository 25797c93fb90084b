//! `ws://` and `wss://` URLs.

use crate::error::WsError;

/// A parsed `ws[s]://host[:port][/path][?query]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss://`: TLS.
    pub secure: bool,
    /// Host name or address (IPv6 in brackets).
    pub host: String,
    /// Port (80 by default, 443 for `wss://`).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl WsUrl {
    /// Parses a URL.
    pub fn parse(url: &str) -> Result<Self, WsError> {
        let (secure, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else {
            return Err(WsError::Url(format!(
                "{url}: expected ws://host[:port]/path or wss://..."
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
            None => Self::default_port(secure),
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
        Ok(Self {
            secure,
            host,
            port,
            target,
        })
    }

    fn default_port(secure: bool) -> u16 {
        if secure { 443 } else { 80 }
    }

    /// `host:port`, for connecting.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The `Host` header value (port omitted when it is the scheme's
    /// default).
    pub fn host_header(&self) -> String {
        if self.port == Self::default_port(self.secure) {
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
    fn wss_defaults_to_443() {
        let u = WsUrl::parse("wss://example.com/chat").unwrap();
        assert!(u.secure);
        assert_eq!((u.port, u.host_header()), (443, "example.com".to_owned()));
        let u = WsUrl::parse("wss://example.com:8443").unwrap();
        assert_eq!(u.host_header(), "example.com:8443");
        assert!(!WsUrl::parse("ws://example.com").unwrap().secure);
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert!(WsUrl::parse("http://x/").is_err());
        assert!(WsUrl::parse("ws://:80/").is_err());
        assert!(WsUrl::parse("wss://:443/").is_err());
        assert!(WsUrl::parse("ws://x:99999/").is_err());
    }
}
