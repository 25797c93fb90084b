//! Authentication and authorisation hooks, and a built-in HMAC token scheme.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::AuthError;
use crate::id::{ConnId, Identity, RoomName, UserId};

/// What an authenticator gets to decide on a new connection.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The connection being opened.
    pub conn: ConnId,
    /// The token from the query string (`?token=`) or a header, if any.
    pub token: Option<&'a str>,
    /// The peer address, if known.
    pub remote_addr: Option<SocketAddr>,
    /// Current Unix time in seconds, read by the adapter (the hub reads no
    /// clocks); used to check token expiry.
    pub now_unix_secs: u64,
    /// A string unique to this run of this node,
    /// [`HubConfig::anonymous_namespace`](crate::HubConfig::anonymous_namespace).
    /// The built-in authenticators name anonymous users
    /// `anon-<namespace>-<conn>`, so that two nodes of a cluster (or two
    /// runs of one node) never hand out the same anonymous name. Empty:
    /// `anon-<conn>` (fine for a single node that never restarts).
    pub namespace: &'a str,
}

/// Decides who a connection belongs to, before the WebSocket upgrade is
/// accepted. The adapter calls [`Hub::authenticate`](crate::Hub::authenticate)
/// and answers HTTP 401 on error.
pub trait Authenticator: Send + Sync {
    /// Maps credentials to an identity or rejects them.
    fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError>;

    /// When an accepted `token` expires (Unix seconds), if it does; the
    /// hub then enforces the expiry during the connection. Default: never.
    fn token_expiry(&self, token: &str) -> Option<u64> {
        let _ = token;
        None
    }
}

impl<A: Authenticator + ?Sized> Authenticator for Box<A> {
    fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        (**self).authenticate(req)
    }

    fn token_expiry(&self, token: &str) -> Option<u64> {
        (**self).token_expiry(token)
    }
}

/// The default authenticator: everybody is an anonymous user named
/// `anon-<namespace>-<conn>` (see [`AuthRequest::namespace`]). Adapters
/// SHOULD NOT reuse [`ConnId`]s (a `u64` counter never wraps), or two
/// anonymous users could share a name over time.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAnonymous;

impl Authenticator for AllowAnonymous {
    fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        Ok(anonymous(req))
    }
}

/// `anon-<namespace>-<conn>`, or `anon-<conn>` without a namespace.
fn anonymous(req: &AuthRequest<'_>) -> Identity {
    if req.namespace.is_empty() {
        Identity::anonymous(format!("anon-{}", req.conn.0))
    } else {
        Identity::anonymous(format!("anon-{}-{}", req.namespace, req.conn.0))
    }
}

/// base64url that accepts the encoded parts with or without `=` padding.
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// Shared-secret HMAC-SHA256 tokens: `<user>.<expiry>.<signature>`.
///
/// `<user>` is the user id in base64url (so it may contain any
/// character), `<expiry>` the expiry as decimal Unix seconds and
/// `<signature>` the base64url HMAC-SHA256 of `<user>.<expiry>` (exactly
/// as it appears in the token) under the shared secret. Both base64url
/// parts may be written with or without `=` padding; [`issue`](Self::issue)
/// writes them unpadded. An application server mints tokens with
/// [`HmacTokenAuth::issue`] (or any HMAC library); the hub verifies them in
/// constant time.
#[derive(Clone)]
pub struct HmacTokenAuth {
    secret: Vec<u8>,
    allow_anonymous: bool,
}

impl std::fmt::Debug for HmacTokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacTokenAuth")
            .field("secret", &"<redacted>")
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

impl HmacTokenAuth {
    /// Verifies tokens signed with `secret`; connections without a token
    /// are rejected.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
            allow_anonymous: false,
        }
    }

    /// Whether connections without a token become anonymous users instead
    /// of being rejected (an invalid token is always rejected).
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    fn mac(&self, signed: &str) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.secret).ok()?;
        mac.update(signed.as_bytes());
        Some(mac)
    }

    /// Mints a token for `user` valid until `expires_unix_secs`.
    pub fn issue(&self, user: &str, expires_unix_secs: u64) -> String {
        let signed = format!("{}.{expires_unix_secs}", URL_SAFE_NO_PAD.encode(user));
        let sig = self
            .mac(&signed)
            .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
            .unwrap_or_default();
        format!("{signed}.{sig}")
    }

    /// Checks a token at `now_unix_secs`.
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<UserId, AuthError> {
        let (signed, sig) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let (user_b64, expiry) = signed.split_once('.').ok_or(AuthError::Malformed)?;
        let sig = URL_SAFE_ANY_PAD
            .decode(sig)
            .map_err(|_| AuthError::Malformed)?;
        let mac = self.mac(signed).ok_or(AuthError::BadSignature)?;
        mac.verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)?;
        let expiry: u64 = expiry.parse().map_err(|_| AuthError::Malformed)?;
        if now_unix_secs >= expiry {
            return Err(AuthError::Expired);
        }
        let user = URL_SAFE_ANY_PAD
            .decode(user_b64)
            .map_err(|_| AuthError::Malformed)?;
        let user = String::from_utf8(user).map_err(|_| AuthError::Malformed)?;
        if user.is_empty() {
            return Err(AuthError::Malformed);
        }
        Ok(UserId::new(user))
    }
}

impl Authenticator for HmacTokenAuth {
    fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        match req.token {
            Some(t) => self.verify(t, req.now_unix_secs).map(|user| Identity {
                user,
                anonymous: false,
            }),
            None if self.allow_anonymous => Ok(anonymous(req)),
            None => Err(AuthError::MissingToken),
        }
    }

    fn token_expiry(&self, token: &str) -> Option<u64> {
        let (signed, _) = token.rsplit_once('.')?;
        let (_, expiry) = signed.split_once('.')?;
        expiry.parse().ok()
    }
}

/// Decides what an identified user may do. Every method defaults to
/// allowing; override the ones you need.
pub trait Authoriser: Send + Sync {
    /// May `user` join `room`? Refusal nacks the join with `forbidden`.
    fn may_join(&self, user: &UserId, room: &RoomName) -> bool {
        let _ = (user, room);
        true
    }

    /// May `user` publish to `room` (of which it is a member)?
    fn may_publish(&self, user: &UserId, room: &RoomName) -> bool {
        let _ = (user, room);
        true
    }

    /// May `user` send a direct message to `to`?
    fn may_send(&self, user: &UserId, to: &UserId) -> bool {
        let _ = (user, to);
        true
    }

    /// May `user` see who is in `room` (`presence`, `presence_stats`)?
    /// Defaults to [`may_join`](Self::may_join): whoever may enter a room
    /// may see who is there.
    fn may_presence(&self, user: &UserId, room: &RoomName) -> bool {
        self.may_join(user, room)
    }

    /// May `user` broadcast to every connection?
    fn may_broadcast(&self, user: &UserId) -> bool {
        let _ = user;
        true
    }
}

/// A boxed authoriser (an application's choice made at run time) is an
/// authoriser.
impl<A: Authoriser + ?Sized> Authoriser for Box<A> {
    fn may_join(&self, user: &UserId, room: &RoomName) -> bool {
        (**self).may_join(user, room)
    }

    fn may_publish(&self, user: &UserId, room: &RoomName) -> bool {
        (**self).may_publish(user, room)
    }

    fn may_send(&self, user: &UserId, to: &UserId) -> bool {
        (**self).may_send(user, to)
    }

    fn may_broadcast(&self, user: &UserId) -> bool {
        (**self).may_broadcast(user)
    }
}

/// The default authoriser: allows everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authoriser for AllowAll {}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(token: Option<&str>, now: u64) -> AuthRequest<'_> {
        AuthRequest {
            conn: ConnId(7),
            token,
            remote_addr: None,
            now_unix_secs: now,
            namespace: "",
        }
    }

    #[test]
    fn anonymous_default() {
        let id = AllowAnonymous.authenticate(&req(Some("x"), 0)).ok();
        assert_eq!(id, Some(Identity::anonymous("anon-7")));
        // With a namespace, the same connection number on another node (or
        // another run) is another user.
        let on = |namespace| AuthRequest {
            namespace,
            ..req(None, 0)
        };
        let a = AllowAnonymous.authenticate(&on("node-a-0000002a")).ok();
        let b = AllowAnonymous.authenticate(&on("node-b-0000002a")).ok();
        assert_eq!(a, Some(Identity::anonymous("anon-node-a-0000002a-7")));
        assert_ne!(a, b);
        let hmac = HmacTokenAuth::new(b"s".to_vec()).allow_anonymous(true);
        assert_eq!(
            hmac.authenticate(&on("n-1")).ok(),
            Some(Identity::anonymous("anon-n-1-7"))
        );
    }

    #[test]
    fn padded_and_unpadded_tokens_are_both_accepted() {
        let a = HmacTokenAuth::new(b"secret".to_vec());
        // "alice" and the 32-byte MAC both need padding in base64url.
        let user = base64::engine::general_purpose::URL_SAFE.encode("alice");
        assert!(user.ends_with('='));
        let signed = format!("{user}.1000");
        let mac = a.mac(&signed).unwrap();
        let sig = base64::engine::general_purpose::URL_SAFE.encode(mac.finalize().into_bytes());
        assert!(sig.ends_with('='));
        let padded = format!("{signed}.{sig}");
        assert_eq!(a.verify(&padded, 999), Ok(UserId::new("alice")));
        // Unpadded signature over the padded user part: also fine.
        let unpadded_sig = padded.trim_end_matches('=');
        assert_eq!(a.verify(unpadded_sig, 999), Ok(UserId::new("alice")));
        // The issued (unpadded) form keeps working.
        assert_eq!(
            a.verify(&a.issue("alice", 1000), 999),
            Ok(UserId::new("alice"))
        );
        // Padding is not a way around the signature.
        let forged = padded.replacen(".1000.", ".9999.", 1);
        assert_eq!(a.verify(&forged, 0), Err(AuthError::BadSignature));
    }

    #[test]
    fn hmac_round_trip_and_failures() {
        let a = HmacTokenAuth::new(b"secret".to_vec());
        let t = a.issue("alice.smith", 1000);
        assert_eq!(a.verify(&t, 999), Ok(UserId::new("alice.smith")));
        assert_eq!(a.verify(&t, 1000), Err(AuthError::Expired));
        let other = HmacTokenAuth::new(b"other".to_vec());
        assert_eq!(other.verify(&t, 0), Err(AuthError::BadSignature));
        // Tampered expiry.
        let forged = t.replacen(".1000.", ".9999.", 1);
        assert_eq!(a.verify(&forged, 0), Err(AuthError::BadSignature));
        assert_eq!(a.verify("garbage", 0), Err(AuthError::Malformed));
        assert_eq!(a.verify("a.b.!!!", 0), Err(AuthError::Malformed));
        assert_eq!(a.verify("", 0), Err(AuthError::Malformed));
        assert_eq!(a.authenticate(&req(None, 0)), Err(AuthError::MissingToken));
        let anon = a.clone().allow_anonymous(true);
        assert_eq!(
            anon.authenticate(&req(None, 0)),
            Ok(Identity::anonymous("anon-7"))
        );
        assert_eq!(
            anon.authenticate(&req(Some(&t), 5)),
            Ok(Identity::user("alice.smith"))
        );
        assert!(!format!("{a:?}").contains("secret\""));
        assert_eq!(a.token_expiry(&t), Some(1000));
        assert_eq!(a.token_expiry("garbage"), None);
        assert_eq!(AllowAnonymous.token_expiry(&t), None);
    }

    #[test]
    fn a_boxed_authoriser_forwards_every_decision() {
        struct Nothing;
        impl Authoriser for Nothing {
            fn may_join(&self, _: &UserId, _: &RoomName) -> bool {
                false
            }
            fn may_publish(&self, _: &UserId, _: &RoomName) -> bool {
                false
            }
            fn may_send(&self, _: &UserId, _: &UserId) -> bool {
                false
            }
            fn may_broadcast(&self, _: &UserId) -> bool {
                false
            }
        }
        let (u, r) = (UserId::new("u"), RoomName::new("r"));
        let boxed: Box<dyn Authoriser> = Box::new(Nothing);
        assert!(!boxed.may_join(&u, &r) && !boxed.may_publish(&u, &r));
        assert!(!boxed.may_send(&u, &u) && !boxed.may_broadcast(&u));
        let allowed: Box<dyn Authoriser> = Box::new(AllowAll);
        assert!(allowed.may_join(&u, &r) && allowed.may_broadcast(&u));
    }

    #[test]
    fn allow_all() {
        let z = AllowAll;
        assert!(z.may_join(&UserId::new("u"), &RoomName::new("r")));
        assert!(z.may_broadcast(&UserId::new("u")));
    }
}
