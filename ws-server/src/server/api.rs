//! The server API for backends on the hub's port (docs/API.md): requests
//! whose path starts with `/api/` and that carry `Authorization: Bearer
//! <key>` with one of the `--api-key`s. JSON in and out, bounded bodies.
//!
//! With no API key configured the API is off and connections go straight
//! to the WebSocket handshake. With keys, the request head is read here
//! first; a request for another path continues to the handshake with the
//! bytes already read replayed.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use ws_async::{Runtime, Transport};
use ws_hub::{ApiPublished, BusTarget, CloseReason, NackReason, RoomName, UserId};

use super::Shared;
use super::hub_task::ToHub;

/// Largest request body accepted, in bytes (larger: 413).
pub const MAX_API_BODY: usize = 64 * 1024;

/// Default close code of `POST /api/disconnect`.
pub const DISCONNECT_CODE: u16 = 4002;

/// Default close reason of `POST /api/disconnect`.
pub const DISCONNECT_REASON: &str = "disconnected by the server";

/// The configured API keys; never printed.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<String>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys(<{} redacted>)", self.0.len())
    }
}

impl ApiKeys {
    /// Keys from `--api-key`; empty strings are ignored.
    pub fn new(keys: impl IntoIterator<Item = String>) -> Self {
        Self(keys.into_iter().filter(|k| !k.is_empty()).collect())
    }

    /// Whether the API is on.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is one of the keys, compared in constant time
    /// (for keys of the same length; every key is compared).
    fn accepts(&self, given: &str) -> bool {
        self.0.iter().fold(false, |ok, key| {
            ct_eq(key.as_bytes(), given.as_bytes()) | ok
        })
    }
}

/// Compares without an early exit on the first differing byte.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request the hub task answers.
#[derive(Debug)]
pub(crate) enum ApiCall {
    Publish {
        target: BusTarget,
        id: Option<String>,
        data: Box<RawValue>,
    },
    /// The local users of `room`: `{"user": sessions, ...}`.
    PresenceMap {
        room: String,
    },
    /// Every local room: `{"room": {"user": sessions, ...}, ...}`.
    PresenceTable,
    Disconnect(Disconnect),
}

/// A `POST /api/disconnect`, as it also travels between nodes: on the
/// bus's global channel (which every node follows), as JSON whose first
/// field is `"control":"disconnect"` ([`RELAY_PREFIX`]); hub messages
/// ([`ws_hub::BusMessage`]) start with `"origin"`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Disconnect {
    /// Always [`Control::Disconnect`]; first, so that a relay is told from
    /// a hub message by its first bytes.
    control: Control,
    /// The node that was asked.
    origin: String,
    user: String,
    code: u16,
    reason: String,
    discard: bool,
}

/// The kinds of control messages between nodes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Control {
    Disconnect,
}

/// How a relayed [`Disconnect`] starts.
const RELAY_PREFIX: &[u8] = br#"{"control":"disconnect","#;

impl Disconnect {
    /// The bus message that asks the other nodes to do the same.
    pub(crate) fn relay(&self) -> crate::bus::BusCommand {
        crate::bus::BusCommand::Publish {
            channel: ws_hub::GLOBAL_CHANNEL.to_owned(),
            // Strings, numbers and a bool: serialisation cannot fail.
            payload: serde_json::to_vec(self).unwrap_or_default().into(),
        }
    }

    /// Whether a bus payload is a relayed disconnect rather than a hub
    /// message.
    pub(crate) fn is_relay(payload: &[u8]) -> bool {
        payload.starts_with(RELAY_PREFIX)
    }

    /// A disconnect relayed by another node (`None` for this node's own,
    /// echoed by Redis, and for anything invalid).
    pub(crate) fn from_relay(payload: &[u8], node: &str) -> Option<Self> {
        let d: Self = serde_json::from_slice(payload).ok()?;
        (d.origin != node && disconnect_code_ok(d.code) && d.reason.len() <= CloseReason::MAX_LEN)
            .then_some(d)
    }

    /// Closes the user's connections on this node; how many.
    pub(crate) fn apply(self, hub: &mut ws_hub::Hub, now: std::time::Instant) -> usize {
        let Ok(reason) = CloseReason::new(self.reason) else {
            return 0;
        };
        let user = UserId::new(self.user);
        hub.api_disconnect(now, &user, self.code, &reason, self.discard)
    }
}

/// Whether `code` may be given to `POST /api/disconnect`.
fn disconnect_code_ok(code: u16) -> bool {
    (4002..=4999).contains(&code)
}

/// An HTTP status and a JSON body.
pub(crate) type ApiAnswer = (u16, Value);

impl ApiCall {
    /// Runs the call on the hub (in the hub task).
    pub(crate) fn apply(self, hub: &mut ws_hub::Hub, now: std::time::Instant) -> ApiAnswer {
        match self {
            Self::Publish { target, id, data } => {
                match hub.api_publish(now, target, id.as_deref(), &data) {
                    Ok(outcome) => (
                        200,
                        json!({"ok": true, "duplicate": outcome == ApiPublished::Duplicate}),
                    ),
                    Err(reason) => nack_answer(reason),
                }
            }
            Self::PresenceMap { room } => (200, users_json(&hub.presence(&room))),
            Self::PresenceTable => {
                let table: serde_json::Map<String, Value> = hub
                    .presence_by_room()
                    .iter()
                    .map(|(room, p)| (room.as_str().to_owned(), users_json(p)))
                    .collect();
                (200, Value::Object(table))
            }
            Self::Disconnect(d) => {
                let closed = d.apply(hub, now);
                (200, json!({"ok": true, "closed": closed}))
            }
        }
    }
}

fn users_json(p: &ws_hub::PresenceSnapshot) -> Value {
    p.users
        .iter()
        .map(|(u, n)| (u.as_str().to_owned(), json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The answer of `GET /api/presence`: the local users of `room`, plus
/// those of the other nodes in a cluster.
async fn presence<R: Runtime>(rt: &R, room: String, shared: &Shared) -> ApiAnswer {
    let (status, local) = ask(ApiCall::PresenceMap { room: room.clone() }, shared).await;
    if status != 200 {
        return (status, local);
    }
    let mut users: super::presence_table::Users = serde_json::from_value(local).unwrap_or_default();
    if let Some(url) = &shared.config.redis {
        let Ok(url) = crate::bus::url::RedisUrl::parse(url) else {
            return error(503, "unavailable", "bad Redis URL");
        };
        let node = &shared.config.hub.node_id;
        let added = async {
            let mut client = crate::bus::RedisClient::connect(rt.clone(), &url).await?;
            super::presence_table::add_other_nodes(&mut client, node, &room, &mut users).await
        };
        if added.await.is_err() {
            return error(503, "unavailable", "Redis is unreachable");
        }
    }
    let mut body = json!({
        "room": room,
        "user_count": users.len(),
        "connection_count": users.values().fold(0u64, |sum, n| sum.saturating_add(*n)),
    });
    if users.len() > shared.config.hub.presence_max_users {
        body["truncated"] = json!(true);
    } else {
        body["users"] = users
            .iter()
            .map(|(u, n)| json!({"user": u, "connections": n}))
            .collect();
    }
    (200, body)
}

/// Runs `call` in the hub task.
async fn ask(call: ApiCall, shared: &Shared) -> ApiAnswer {
    let (reply, answer) = async_channel::bounded(1);
    if shared.hub.send(ToHub::Api(call, reply)).await.is_err() {
        return error(503, "unavailable", "server shutting down");
    }
    answer
        .recv()
        .await
        .unwrap_or_else(|_| error(503, "unavailable", "server shutting down"))
}

fn nack_answer(reason: NackReason) -> ApiAnswer {
    let status = match reason {
        NackReason::UnknownUser => 404,
        NackReason::Busy => 503,
        _ => 400,
    };
    (status, json!({"error": reason.as_str()}))
}

fn error(status: u16, code: &str, message: &str) -> ApiAnswer {
    (status, json!({"error": code, "message": message}))
}

/// A transport that first yields `prefix` (bytes already read from
/// `inner`), then reads `inner`.
pub(crate) struct Replayed<T> {
    prefix: BytesMut,
    inner: T,
}

impl<T: Transport> Transport for Replayed<T> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        if self.prefix.is_empty() {
            return self.inner.poll_read_into(cx, buf);
        }
        let n = self.prefix.len().min(buf.capacity() - buf.len()).max(1);
        let n = n.min(self.prefix.len());
        buf.extend_from_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(n))
    }

    fn poll_read_slice(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.prefix.is_empty() {
            return self.inner.poll_read_slice(cx, buf);
        }
        let n = self.prefix.len().min(buf.len());
        buf[..n].copy_from_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_write_vectored(cx, bufs)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.inner.poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_shutdown(cx)
    }
}

/// Serves an API request if `io` carries one (then returns `None`), else
/// hands the connection back with what was read. Without API keys nothing
/// is read.
pub(crate) async fn intercept<T: Transport, R: Runtime>(
    rt: &R,
    io: T,
    shared: &Shared,
) -> Option<Replayed<T>> {
    let replay = Replayed {
        prefix: BytesMut::new(),
        inner: io,
    };
    if shared.config.api_keys.is_empty() {
        return Some(replay);
    }
    // Boxed: inline, the reading and serving state would size every
    // connection's handshake future, with or without API keys.
    Box::pin(read_and_serve(rt, replay, shared)).await
}

/// [`intercept`] once API keys are set: reads the request head and serves
/// it if it names an API path.
async fn read_and_serve<T: Transport, R: Runtime>(
    rt: &R,
    mut replay: Replayed<T>,
    shared: &Shared,
) -> Option<Replayed<T>> {
    let keys = &shared.config.api_keys;
    let limit = shared.config.ws.proto.max_handshake_size;
    let timeout = shared
        .config
        .ws
        .proto
        .handshake_timeout
        .unwrap_or(Duration::from_secs(10));
    let deadline = rt.now() + timeout;
    // The futures below are boxed: inline, their state would size every
    // connection's task, including the ones that never use the API.
    let head_end = within(rt, deadline, Box::pin(read_head(&mut replay, limit))).await;
    let Some(Ok(Some(head_end))) = head_end else {
        // Timed out, closed, too large or not HTTP: the handshake code
        // answers (or times out) exactly as without the API.
        return Some(replay);
    };
    if !is_api(&replay.prefix[..head_end]) {
        return Some(replay);
    }
    let serving = Box::pin(serve(rt, &mut replay, head_end, keys, shared));
    let answer = match within(rt, deadline, serving).await {
        Some(answer) => answer,
        None => error(408, "timeout", "request not received in time"),
    };
    Box::pin(respond(&mut replay.inner, answer)).await;
    None
}

/// Whether the request line names a path under `/api/`.
fn is_api(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let _method = parts.next();
    parts.next().is_some_and(|p| p.starts_with(b"/api/"))
}

/// `fut`, unless `deadline` comes first.
async fn within<R: Runtime, F: Future>(
    rt: &R,
    deadline: std::time::Instant,
    fut: F,
) -> Option<F::Output> {
    let timer = rt.sleep_until(deadline);
    futures_lite::future::or(async { Some(fut.await) }, async {
        timer.await;
        None
    })
    .await
}

/// Reads until the end of the request head; returns its length, `None`
/// if the peer closed or the head exceeds `limit`.
async fn read_head<T: Transport>(io: &mut Replayed<T>, limit: usize) -> io::Result<Option<usize>> {
    loop {
        if let Some(end) = find_head_end(&io.prefix) {
            return Ok(Some(end));
        }
        if io.prefix.len() > limit || !read_more(io).await? {
            return Ok(None);
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads more of `inner` into the prefix; `false` at end of stream.
async fn read_more<T: Transport>(io: &mut Replayed<T>) -> io::Result<bool> {
    io.prefix.reserve(4096);
    let Replayed { prefix, inner } = io;
    let n = poll_fn(|cx| inner.poll_read_into(cx, prefix)).await?;
    Ok(n > 0)
}

/// Checks the key, reads the body and runs the request.
async fn serve<T: Transport, R: Runtime>(
    rt: &R,
    io: &mut Replayed<T>,
    head_end: usize,
    keys: &ApiKeys,
    shared: &Shared,
) -> ApiAnswer {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(
        req.parse(&io.prefix[..head_end]),
        Ok(httparse::Status::Complete(_))
    ) {
        return error(400, "bad_request", "malformed HTTP request");
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let authorised = header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| keys.accepts(k.trim()));
    if !authorised {
        return error(401, "unauthorized", "missing or wrong API key");
    }
    if header("transfer-encoding").is_some() {
        return error(411, "length_required", "send the body with Content-Length");
    }
    let length = match header("content-length").map(|v| v.trim().parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(400, "bad_request", "invalid Content-Length"),
    };
    if length > MAX_API_BODY {
        // Read (and drop) a bounded part of the body, so that closing does
        // not reset the connection before the client reads the answer.
        let mut left = (head_end + length).min(head_end + 4 * MAX_API_BODY);
        while io.prefix.len() < left && matches!(read_more(io).await, Ok(true)) {
            if io.prefix.len() > head_end + MAX_API_BODY {
                left -= io.prefix.len() - head_end;
                io.prefix.truncate(head_end);
            }
        }
        return error(
            413,
            "too_large",
            &format!("the body may have at most {MAX_API_BODY} bytes"),
        );
    }
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default().to_owned();
    while io.prefix.len() < head_end + length {
        match read_more(io).await {
            Ok(true) => {}
            _ => return error(400, "bad_request", "body shorter than Content-Length"),
        }
    }
    let body = io.prefix[head_end..head_end + length].to_vec();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    route(rt, &method, path, query, &body, shared).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    room: Option<String>,
    user: Option<String>,
    id: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
    code: Option<u16>,
    reason: Option<String>,
    #[serde(default)]
    discard: bool,
}

fn parse<'a, B: Deserialize<'a>>(body: &'a [u8]) -> Result<B, ApiAnswer> {
    serde_json::from_slice(body).map_err(|e| error(400, "bad_request", &e.to_string()))
}

async fn route<R: Runtime>(
    rt: &R,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    shared: &Shared,
) -> ApiAnswer {
    let call = match (method, path) {
        ("POST", "/api/publish" | "/api/send" | "/api/broadcast") => {
            let b: PublishBody<'_> = match parse(body) {
                Ok(b) => b,
                Err(answer) => return answer,
            };
            let target = match (path, b.room, b.user) {
                ("/api/publish", Some(room), None) => BusTarget::Room(RoomName::new(room)),
                ("/api/send", None, Some(user)) => BusTarget::User(UserId::new(user)),
                ("/api/broadcast", None, None) => BusTarget::Broadcast,
                _ => {
                    return error(
                        400,
                        "bad_request",
                        "publish takes `room`, send takes `user`, broadcast neither",
                    );
                }
            };
            ApiCall::Publish {
                target,
                id: b.id,
                data: b.data.to_owned(),
            }
        }
        ("POST", "/api/disconnect") => {
            let b: DisconnectBody = match parse(body) {
                Ok(b) => b,
                Err(answer) => return answer,
            };
            let code = b.code.unwrap_or(DISCONNECT_CODE);
            if !disconnect_code_ok(code) {
                return error(
                    400,
                    "bad_request",
                    "`code` must be in 4002-4999 (4000 and 4001 are reserved by the protocol)",
                );
            }
            let reason = b.reason.unwrap_or_else(|| DISCONNECT_REASON.to_owned());
            if let Err(e) = CloseReason::new(reason.clone()) {
                return error(400, "bad_request", &format!("`reason`: {e}"));
            }
            let max_name = shared.config.hub.max_name_len;
            if b.user.is_empty() || b.user.len() > max_name {
                return error(
                    400,
                    "bad_request",
                    &format!("`user` must be 1 to {max_name} bytes"),
                );
            }
            ApiCall::Disconnect(Disconnect {
                control: Control::Disconnect,
                origin: shared.config.hub.node_id.clone(),
                user: b.user,
                code,
                reason,
                discard: b.discard,
            })
        }
        ("GET", "/api/presence") => {
            let max_name = shared.config.hub.max_name_len;
            return match ws_hub::query_param(query, "room").map(form_decode) {
                None => error(400, "bad_request", "missing `room` query parameter"),
                Some(None) => error(400, "bad_request", "`room`: invalid percent-encoding"),
                Some(Some(room)) if room.is_empty() || room.len() > max_name => error(
                    400,
                    "bad_request",
                    &format!("`room` must be 1 to {max_name} bytes"),
                ),
                Some(Some(room)) => presence(rt, room, shared).await,
            };
        }
        ("GET", "/api/stats") => {
            let m = shared.metrics.lock().map(|m| m.clone()).unwrap_or_default();
            return (
                200,
                json!({"connections": m.connections, "users": m.users, "rooms": m.rooms,
                    "sessions": m.sessions, "node": shared.config.hub.node_id}),
            );
        }
        (
            _,
            "/api/publish" | "/api/send" | "/api/broadcast" | "/api/disconnect" | "/api/presence"
            | "/api/stats",
        ) => return error(405, "method_not_allowed", "wrong method for this endpoint"),
        _ => return error(404, "not_found", "no such endpoint"),
    };
    ask(call, shared).await
}

/// A query-string value decoded as `application/x-www-form-urlencoded`
/// (what `URLSearchParams` and form encoders write): `+` is a space and
/// `%XX` a byte. `None` for a broken escape or bytes that are not UTF-8.
fn form_decode(value: &str) -> Option<String> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

/// Writes the answer and closes the write side.
async fn respond<T: Transport>(io: &mut T, (status, body): ApiAnswer) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        _ => "Service Unavailable",
    };
    let body = body.to_string();
    let auth = if status == 401 {
        "WWW-Authenticate: Bearer\r\n"
    } else {
        ""
    };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut out = text.as_bytes();
    while !out.is_empty() {
        match poll_fn(|cx| io.poll_write(cx, out)).await {
            Ok(0) | Err(_) => return,
            Ok(n) => out = &out[n..],
        }
    }
    let _ = poll_fn(|cx| io.poll_flush(cx)).await;
    let _ = poll_fn(|cx| io.poll_shutdown(cx)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_form_decoded() {
        assert_eq!(form_decode("lobby").as_deref(), Some("lobby"));
        assert_eq!(form_decode("my+room").as_deref(), Some("my room"));
        assert_eq!(form_decode("a%2Bb%20c").as_deref(), Some("a+b c"));
        assert_eq!(form_decode("g%C3%A9n%c3%a9ral").as_deref(), Some("général"));
        for bad in ["50%", "%4", "%zz", "%+1", "%FF"] {
            assert_eq!(form_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_relayed_disconnect_is_told_from_hub_messages_and_from_its_own_echo() {
        let d = Disconnect {
            control: Control::Disconnect,
            origin: "a".into(),
            user: "u".into(),
            code: 4010,
            reason: "maintenance".into(),
            discard: true,
        };
        let crate::bus::BusCommand::Publish { channel, payload } = d.relay() else {
            panic!("a publish");
        };
        assert_eq!(channel, ws_hub::GLOBAL_CHANNEL);
        assert!(Disconnect::is_relay(&payload));
        assert!(Disconnect::from_relay(&payload, "a").is_none(), "own echo");
        let back = Disconnect::from_relay(&payload, "b").expect("relayed");
        assert_eq!(
            (
                back.user.as_str(),
                back.code,
                back.reason.as_str(),
                back.discard
            ),
            ("u", 4010, "maintenance", true)
        );
        // Hub messages on the same channel are not relays.
        let m = ws_hub::BusMessage {
            origin: "a".into(),
            target: BusTarget::Broadcast,
            from: UserId::new("u"),
            id: "1".into(),
            data: RawValue::from_string("1".into()).expect("JSON"),
        };
        assert!(!Disconnect::is_relay(&m.to_json()));
        // Invalid relays are ignored.
        for bad in [
            r#"{"control":"disconnect","origin":"b","user":"u","code":1000,"reason":"","discard":false}"#,
            r#"{"control":"disconnect","origin":"b","user":"u","code":4002,"discard":false}"#,
        ] {
            assert!(
                Disconnect::from_relay(bad.as_bytes(), "a").is_none(),
                "{bad}"
            );
        }
        let long = format!(
            r#"{{"control":"disconnect","origin":"b","user":"u","code":4002,"reason":"{}","discard":false}}"#,
            "x".repeat(124)
        );
        assert!(Disconnect::from_relay(long.as_bytes(), "a").is_none());
    }
}
