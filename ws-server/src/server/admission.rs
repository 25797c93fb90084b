//! Admission: what the server answers a request head, decided as a pure
//! function of the request, what the server knows of the peer (its
//! per-IP slot, a verified client certificate) and `now` in Unix seconds.
//! No clock is read and no counter is bumped here: the connection task
//! reads the clock, acts on the [`Admission`] and counts it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::assets::Asset;
use ws_hub::{AuthError, AuthRequest, Authenticator, ConnId, Identity, ResumeRequest};
use ws_proto::{HttpResponse, Request};

/// Counts connections per IP address; a slot is released on drop. The
/// count is the only state; whether it allows one more is [`ip_allows`].
#[derive(Debug, Default)]
pub(crate) struct IpLimiter {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's count at its address; owns its limiter so that a
/// connection task can hold it without borrowing the server's state.
pub(crate) struct IpSlot {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

/// Whether an address holding `count` connections may open one more under
/// `limit` (0: no limit).
pub(crate) fn ip_allows(count: usize, limit: usize) -> bool {
    limit == 0 || count < limit
}

impl IpLimiter {
    /// Takes a slot for `ip`, unless it already holds `limit` (0: no limit).
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if !ip_allows(*count, limit) {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// What the server knows of the peer besides its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer<'a> {
    /// The number the connection will have in the hub.
    pub(crate) conn: ConnId,
    /// The peer's address.
    pub(crate) addr: SocketAddr,
    /// Whether the per-IP limit left a slot for this connection.
    pub(crate) has_slot: bool,
    /// The user a verified TLS client certificate names.
    pub(crate) cert_user: Option<&'a str>,
}

/// The server's admission rules.
#[derive(Clone, Copy)]
pub(crate) struct Policy<'a> {
    /// Origins browsers may connect from (empty: any).
    pub(crate) allowed_origins: &'a [String],
    /// Checks tokens.
    pub(crate) authenticator: &'a dyn Authenticator,
    /// [`ws_hub::HubConfig::anonymous_namespace`].
    pub(crate) namespace: &'a str,
}

/// A WebSocket upgrade the server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// Who the connection belongs to.
    pub(crate) identity: Identity,
    /// The session the client asks to resume, if any.
    pub(crate) resume: Option<ResumeRequest>,
    /// `(now, expiry)` in Unix seconds, when the token expires: the hub
    /// then enforces the expiry during the connection.
    pub(crate) token_expiry: Option<(u64, u64)>,
}

/// A plain HTTP request (not a WebSocket upgrade), by route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET` of the browser client or its demo page: 200.
    Asset(Asset),
    /// `GET /healthz`: 200.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// Another method on `/healthz` or `/metrics`: 405.
    MethodNotAllowed,
    /// A broken upgrade: the WebSocket handshake refuses it with the
    /// precise reason.
    BadUpgrade,
    /// Anything else: 404.
    NotFound,
}

/// An upgrade the server refuses, with the HTTP status it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 429: the address holds its share of connections.
    TooManyFromAddress,
    /// 403: the Origin is not on the allow-list.
    Origin,
    /// 401: the authenticator refused the token (or its absence).
    Unauthorized(AuthError),
}

/// What the server does with a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Upgrade to a WebSocket.
    Upgrade(Admitted),
    /// Answer a plain HTTP request.
    Http(Route),
    /// Refuse the upgrade.
    Refused(Refusal),
}

impl Refusal {
    /// The HTTP answer: status and reason.
    pub(crate) fn response(&self) -> HttpResponse {
        match self {
            Self::TooManyFromAddress => {
                HttpResponse::text(429, "too many connections from this address")
            }
            Self::Origin => HttpResponse::text(403, "origin not allowed"),
            Self::Unauthorized(e) => HttpResponse::text(401, format!("unauthorized: {e}")),
        }
    }
}

/// Decides what to answer `req`: health and metrics over plain HTTP, then
/// the per-IP limit, the Origin allow-list and the token (or, with no
/// token, the user of a verified TLS client certificate). `now_unix_secs`
/// is wall-clock time for token expiry. A token comes from `?token=` or,
/// failing that, an `Authorization: Bearer` header.
pub(crate) fn admit(
    req: &Request,
    peer: &Peer<'_>,
    policy: &Policy<'_>,
    now_unix_secs: u64,
) -> Admission {
    if !req.is_upgrade() {
        return Admission::Http(match (req.method(), req.path()) {
            ("GET", path) if let Some(asset) = Asset::at(path) => Route::Asset(asset),
            ("GET", "/healthz") => Route::Health,
            ("GET", "/metrics") => Route::Metrics,
            (_, "/healthz" | "/metrics") => Route::MethodNotAllowed,
            _ if req.header("upgrade").is_some() => Route::BadUpgrade,
            _ => Route::NotFound,
        });
    }
    if !peer.has_slot {
        return Admission::Refused(Refusal::TooManyFromAddress);
    }
    // Browsers always send Origin; clients without one are not browsers.
    let origins = policy.allowed_origins;
    let unlisted = |o: &str| !origins.iter().any(|a| a == o);
    if !origins.is_empty() && req.origin().is_some_and(unlisted) {
        return Admission::Refused(Refusal::Origin);
    }
    let bearer = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = req.query_param("token").or(bearer);
    let resume = req.query().and_then(ResumeRequest::from_query);
    if let (None, Some(user)) = (token, peer.cert_user) {
        let identity = Identity::user(user);
        return Admission::Upgrade(Admitted {
            identity,
            resume,
            token_expiry: None,
        });
    }
    let auth = AuthRequest {
        conn: peer.conn,
        token,
        remote_addr: Some(peer.addr),
        now_unix_secs,
        namespace: policy.namespace,
    };
    match policy.authenticator.authenticate(&auth) {
        Ok(identity) => Admission::Upgrade(Admitted {
            identity,
            resume,
            token_expiry: token
                .and_then(|t| policy.authenticator.token_expiry(t))
                .map(|expires| (now_unix_secs, expires)),
        }),
        Err(e) => Admission::Refused(Refusal::Unauthorized(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ws_hub::{AllowAnonymous, HmacTokenAuth};
    use ws_proto::{Config, Connection, Event};

    use super::*;

    const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    /// The request a server connection parses from `head`.
    fn parse(head: &str) -> Request {
        // Any instant will do: nothing here depends on time.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut server = Connection::server(Config::default(), now).unwrap();
        server.handle_data(now, head.as_bytes());
        match server.poll_event() {
            Some(Event::Request(req)) => *req,
            other => panic!("no request: {other:?}"),
        }
    }

    /// A valid upgrade to `target` with extra header lines.
    fn upgrade(target: &str, headers: &str) -> Request {
        parse(&format!(
            "GET {target} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\n{KEY}Sec-WebSocket-Version: 13\r\n{headers}\r\n"
        ))
    }

    fn peer() -> Peer<'static> {
        Peer {
            conn: ConnId(7),
            addr: "127.0.0.1:5000".parse().unwrap(),
            has_slot: true,
            cert_user: None,
        }
    }

    fn hmac() -> HmacTokenAuth {
        HmacTokenAuth::new(b"secret".to_vec())
    }

    fn admit_with(req: &Request, peer: &Peer<'_>, auth: &dyn Authenticator, now: u64) -> Admission {
        let origins = ["https://ok.example".to_owned()];
        let policy = Policy {
            allowed_origins: &origins,
            authenticator: auth,
            namespace: "",
        };
        admit(req, peer, &policy, now)
    }

    fn status(admission: &Admission) -> Option<u16> {
        match admission {
            Admission::Refused(r) => Some(r.response().status),
            _ => None,
        }
    }

    /// `name`, with a token that expires at `expiry`, admitted at `now`.
    fn user_until(name: &str, now: u64, expiry: u64) -> Admission {
        Admission::Upgrade(Admitted {
            identity: Identity::user(name),
            resume: None,
            token_expiry: Some((now, expiry)),
        })
    }

    fn user(name: &str) -> Admission {
        Admission::Upgrade(Admitted {
            identity: Identity::user(name),
            resume: None,
            token_expiry: None,
        })
    }

    #[test]
    fn plain_http_is_routed_by_method_and_path() {
        let get = |line: &str| parse(&format!("{line} HTTP/1.1\r\nHost: h\r\n\r\n"));
        let route = |line: &str| admit_with(&get(line), &peer(), &AllowAnonymous, 0);
        assert_eq!(route("GET /healthz"), Admission::Http(Route::Health));
        assert_eq!(route("GET /metrics"), Admission::Http(Route::Metrics));
        assert_eq!(
            route("POST /metrics"),
            Admission::Http(Route::MethodNotAllowed)
        );
        assert_eq!(
            route("PUT /healthz"),
            Admission::Http(Route::MethodNotAllowed)
        );
        assert_eq!(route("GET /hub"), Admission::Http(Route::NotFound));
        assert_eq!(route("GET /healthz?x=1"), Admission::Http(Route::Health));
        // An upgrade with a broken header goes to the handshake, which
        // refuses it with the precise reason; plain HTTP is never refused
        // for the per-IP limit.
        let broken = parse("GET /hub HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n");
        let full = Peer {
            has_slot: false,
            ..peer()
        };
        assert_eq!(
            admit_with(&broken, &full, &AllowAnonymous, 0),
            Admission::Http(Route::BadUpgrade)
        );
        assert_eq!(
            admit_with(&get("GET /healthz"), &full, &AllowAnonymous, 0),
            Admission::Http(Route::Health)
        );
    }

    #[test]
    fn upgrades_on_any_other_path_with_resume_from_the_query() {
        let req = upgrade("/anything/here?session=abc&last_seq=4", "");
        let Admission::Upgrade(admitted) = admit_with(&req, &peer(), &AllowAnonymous, 0) else {
            panic!("refused")
        };
        assert_eq!(admitted.identity, Identity::anonymous("anon-7"));
        let resume = admitted.resume.unwrap();
        assert_eq!((resume.session.as_str(), resume.last_seq), ("abc", Some(4)));
    }

    #[test]
    fn per_ip_limit_refuses_with_429_and_the_count_decides() {
        let full = Peer {
            has_slot: false,
            ..peer()
        };
        let got = admit_with(&upgrade("/", ""), &full, &AllowAnonymous, 0);
        assert_eq!(got, Admission::Refused(Refusal::TooManyFromAddress));
        assert_eq!(status(&got), Some(429));
        assert!(ip_allows(0, 1) && !ip_allows(1, 1) && !ip_allows(5, 2));
        assert!(ip_allows(1_000_000, 0), "0 is no limit");
        let limiter = Arc::new(IpLimiter::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = limiter.acquire(ip, 2);
        let second = limiter.acquire(ip, 2);
        assert!(first.is_some() && second.is_some());
        assert!(limiter.acquire(ip, 2).is_none());
        assert!(limiter.acquire("10.0.0.2".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(limiter.acquire(ip, 2).is_some(), "a dropped slot is freed");
    }

    #[test]
    fn origin_outside_the_allow_list_is_refused_with_403() {
        let from = |origin: &str| {
            let req = upgrade("/", &format!("Origin: {origin}\r\n"));
            admit_with(&req, &peer(), &AllowAnonymous, 0)
        };
        assert_eq!(status(&from("https://evil.example")), Some(403));
        assert!(matches!(from("https://ok.example"), Admission::Upgrade(_)));
        // No Origin: not a browser, not refused.
        let none = admit_with(&upgrade("/", ""), &peer(), &AllowAnonymous, 0);
        assert!(matches!(none, Admission::Upgrade(_)));
        // An empty allow-list allows any origin.
        let req = upgrade("/", "Origin: https://evil.example\r\n");
        let policy = Policy {
            allowed_origins: &[],
            authenticator: &AllowAnonymous,
            namespace: "",
        };
        assert!(matches!(
            admit(&req, &peer(), &policy, 0),
            Admission::Upgrade(_)
        ));
    }

    #[test]
    fn tokens_are_checked_at_the_given_time() {
        let auth = hmac();
        let token = auth.issue("alice", 1_000);
        let at = |target: &str, headers: &str, now| {
            admit_with(&upgrade(target, headers), &peer(), &auth, now)
        };
        let query = format!("/?token={token}");
        assert_eq!(at(&query, "", 999), user_until("alice", 999, 1_000));
        let bearer = format!("Authorization: Bearer {token}\r\n");
        assert_eq!(at("/", &bearer, 999), user_until("alice", 999, 1_000));
        let expired = at(&query, "", 1_000);
        assert_eq!(
            expired,
            Admission::Refused(Refusal::Unauthorized(AuthError::Expired))
        );
        assert_eq!(status(&expired), Some(401));
        let missing = at("/", "", 0);
        assert_eq!(
            missing,
            Admission::Refused(Refusal::Unauthorized(AuthError::MissingToken))
        );
        assert_eq!(
            at("/?token=garbage", "", 0),
            Admission::Refused(Refusal::Unauthorized(AuthError::Malformed))
        );
        // Not a Bearer header: no token.
        let basic = format!("Authorization: Basic {token}\r\n");
        assert_eq!(status(&at("/", &basic, 0)), Some(401));
        // The query token wins over the header.
        let other = format!("Authorization: Bearer {}\r\n", auth.issue("bob", 1_000));
        assert_eq!(at(&query, &other, 0), user_until("alice", 0, 1_000));
        let Admission::Refused(refusal) = expired else {
            unreachable!()
        };
        assert_eq!(&refusal.response().body[..], b"unauthorized: token expired");
    }

    #[test]
    fn a_client_certificate_names_the_user_when_there_is_no_token() {
        let auth = hmac();
        let with_cert = Peer {
            cert_user: Some("carol"),
            ..peer()
        };
        assert_eq!(
            admit_with(&upgrade("/", ""), &with_cert, &auth, 0),
            user("carol")
        );
        // A token, when given, is what counts (and must be valid).
        let token = auth.issue("alice", 10);
        let req = upgrade(&format!("/?token={token}"), "");
        assert_eq!(
            admit_with(&req, &with_cert, &auth, 0),
            user_until("alice", 0, 10)
        );
        assert_eq!(status(&admit_with(&req, &with_cert, &auth, 10)), Some(401));
        // The per-IP limit and the Origin come first.
        let full = Peer {
            has_slot: false,
            ..with_cert
        };
        assert_eq!(
            status(&admit_with(&upgrade("/", ""), &full, &auth, 0)),
            Some(429)
        );
        let evil = upgrade("/", "Origin: https://evil.example\r\n");
        assert_eq!(status(&admit_with(&evil, &with_cert, &auth, 0)), Some(403));
    }

    #[test]
    fn anonymous_users_are_named_in_the_namespace() {
        let policy = Policy {
            allowed_origins: &[],
            authenticator: &AllowAnonymous,
            namespace: "node-1",
        };
        let Admission::Upgrade(a) = admit(&upgrade("/", ""), &peer(), &policy, 0) else {
            panic!("refused")
        };
        assert_eq!(a.identity, Identity::anonymous("anon-node-1-7"));
    }
}
