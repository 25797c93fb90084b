//! `ws://` and `wss://` URLs.

/// Why a string is not a `ws://` or `wss://` URL these adapters can
/// connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// A `wss://` URL given to a plain-TCP connect: TLS needs TLS client
    /// settings (`tls::connect_tls` or `tls::connect_url`, feature `tls`).
    #[error("{0}: wss:// needs TLS client settings (tls::connect_tls)")]
    Tls(String),
    /// A `ws://` URL where TLS was asked for.
    #[error("{0}: expected a wss:// URL for TLS")]
    NotTls(String),
    /// Not a `ws://` or `wss://` URL.
    #[error("{0}: expected ws://host[:port]/path or wss://host[:port]/path")]
    Scheme(String),
    /// An IPv6 address without its closing bracket.
    #[error("{0}: unterminated IPv6 address")]
    UnterminatedIpv6(String),
    /// No host.
    #[error("{0}: missing host")]
    MissingHost(String),
    /// A port that is not a number from 0 to 65535.
    #[error("{url}: invalid port {port:?}")]
    InvalidPort {
        /// The URL.
        url: String,
        /// The port as written.
        port: String,
    },
    /// A host that cannot be a TLS server name (for `wss://`).
    #[error("{0}: not a valid TLS server name")]
    ServerName(String),
    /// Whitespace or control characters in the path or query.
    #[error("{0}: whitespace in path")]
    Whitespace(String),
}

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
    /// Parses a `ws://` or `wss://` URL.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (secure, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else {
            return Err(UrlError::Scheme(url.to_owned()));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            let (h, after) = stripped
                .split_once(']')
                .ok_or_else(|| UrlError::UnterminatedIpv6(url.to_owned()))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(UrlError::MissingHost(url.to_owned()));
        }
        let port = match port {
            None => Self::default_port(secure),
            Some(p) => p.parse().map_err(|_| UrlError::InvalidPort {
                url: url.to_owned(),
                port: p.to_owned(),
            })?,
        };
        if target
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(UrlError::Whitespace(url.to_owned()));
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

    /// The `Host` header value (port omitted when it is 80).
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
        assert!(matches!(
            WsUrl::parse("wss://:443/"),
            Err(UrlError::MissingHost(_))
        ));
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert!(matches!(
            WsUrl::parse("http://x/"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            WsUrl::parse("ws://:80/"),
            Err(UrlError::MissingHost(_))
        ));
        assert!(matches!(
            WsUrl::parse("ws://[::1/"),
            Err(UrlError::UnterminatedIpv6(_))
        ));
        assert!(matches!(
            WsUrl::parse("ws://x:99999/"),
            Err(UrlError::InvalidPort { port, .. }) if port == "99999"
        ));
        assert!(matches!(
            WsUrl::parse("ws://x/a b"),
            Err(UrlError::Whitespace(_))
        ));
    }
}
