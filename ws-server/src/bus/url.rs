//! The `redis://` URL of the bus.

use thiserror::Error;

/// Where and how to connect: `redis://[[user]:password@]host[:port][/db]`.
///
/// The database number is accepted and not used: pub/sub channels are
/// shared by all databases of a server.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `host:port` for [`Runtime::connect`](ws_async::Runtime::connect).
    pub authority: String,
    /// The user name for AUTH (none: the default user).
    pub user: Option<String>,
    /// The password for AUTH (none: no AUTH).
    pub password: Option<String>,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUrl")
            .field("authority", &self.authority)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Why a Redis URL is not usable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    /// Not `redis://` (TLS `rediss://` and Unix sockets are not supported).
    #[error("not a redis:// URL")]
    Scheme,
    /// No host.
    #[error("no host in the Redis URL")]
    NoHost,
    /// The port is not a number from 1 to 65535.
    #[error("invalid port in the Redis URL")]
    Port,
    /// The path is not a database number.
    #[error("the Redis URL's path must be a database number")]
    Database,
    /// Query parameters or a fragment.
    #[error("the Redis URL takes no query or fragment")]
    Query,
    /// A bad `%` escape in the user name or password.
    #[error("invalid percent-encoding in the Redis URL")]
    Escape,
}

impl RedisUrl {
    /// Parses `redis://[[user]:password@]host[:port][/db]` (user and
    /// password percent-decoded; default port 6379).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let rest = url.strip_prefix("redis://").ok_or(UrlError::Scheme)?;
        if rest.contains(['?', '#']) {
            return Err(UrlError::Query);
        }
        let (rest, db) = rest.split_once('/').unwrap_or((rest, ""));
        if !db.is_empty() && db.parse::<u32>().is_err() {
            return Err(UrlError::Database);
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                let nonempty = |s: &str| -> Result<Option<String>, UrlError> {
                    (!s.is_empty()).then(|| decode(s)).transpose()
                };
                (nonempty(user)?, nonempty(password)?)
            }
        };
        // `[v6]:port`, `host:port` or a bare host.
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) if !host.starts_with('[') || host.ends_with(']') => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(UrlError::Port)?,
            ),
            _ => (hostport, 6379),
        };
        if host.is_empty() || host == "[]" || host.contains(['/', ' ', '@']) {
            return Err(UrlError::NoHost);
        }
        Ok(Self {
            authority: format!("{host}:{port}"),
            user,
            password,
        })
    }
}

/// Percent-decoding (RFC 3986).
fn decode(s: &str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(UrlError::Escape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| UrlError::Escape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UrlError::Escape)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::Escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (String, Option<String>, Option<String>) {
        let u = RedisUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (u.authority, u.user, u.password)
    }

    #[test]
    fn forms_redis_accepts() {
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            ok("redis://127.0.0.1:6380"),
            ("127.0.0.1:6380".into(), None, None)
        );
        assert_eq!(
            ok("redis://localhost"),
            ("localhost:6379".into(), None, None)
        );
        assert_eq!(ok("redis://h/3"), ("h:6379".into(), None, None));
        assert_eq!(ok("redis://[::1]:7000/"), ("[::1]:7000".into(), None, None));
        assert_eq!(ok("redis://[::1]"), ("[::1]:6379".into(), None, None));
        assert_eq!(ok("redis://:p%40ss@h:1"), ("h:1".into(), None, s("p@ss")));
        assert_eq!(ok("redis://bob:pw@h"), ("h:6379".into(), s("bob"), s("pw")));
    }

    #[test]
    fn bad_urls_are_refused() {
        for (url, error) in [
            ("not a url", UrlError::Scheme),
            ("rediss://h", UrlError::Scheme),
            ("redis://", UrlError::NoHost),
            ("redis://:pw@", UrlError::NoHost),
            ("redis://h:0", UrlError::Port),
            ("redis://h:x", UrlError::Port),
            ("redis://h:70000", UrlError::Port),
            ("redis://h/db", UrlError::Database),
            ("redis://h?protocol=resp3", UrlError::Query),
            ("redis://:%zz@h", UrlError::Escape),
        ] {
            assert_eq!(RedisUrl::parse(url), Err(error), "{url}");
        }
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let url = RedisUrl::parse("redis://:secret@h").unwrap();
        assert!(!format!("{url:?}").contains("secret"));
    }
}
