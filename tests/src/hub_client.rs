//! A small client of the hub's JSON protocol (`docs/PROTOCOL.md`) for the
//! scenario suite and the soak test, plus plain-HTTP helpers (`/healthz`,
//! `/metrics`, refused upgrades) over raw TCP.
//!
//! Every wait is bounded: a helper that expects something panics with a
//! description of what it was waiting for after [`WAIT`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use ws_async::tls::rustls::ClientConfig;
use ws_async::tls::{MaybeTls, client_tls_handshake, server_name};
use ws_async::{CloseInfo, Runtime, WebSocket, WsConfig, WsError, client_handshake};
use ws_proto::{ClientRequest, CloseCode, Message};

use crate::read_http_head;

/// The generous bound on every single wait of the suite.
pub const WAIT: Duration = Duration::from_secs(10);

/// An expiry far in the future for test tokens (year 2096).
pub const FAR_FUTURE_UNIX_SECS: u64 = 4_000_000_000;

/// Varies the `Sec-WebSocket-Key` of successive connections.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A token for `user` signed with `secret` by the hub's HMAC scheme.
pub fn token(secret: &str, user: &str) -> String {
    ws_hub::HmacTokenAuth::new(secret.as_bytes().to_vec()).issue(user, FAR_FUTURE_UNIX_SECS)
}

/// `fut`'s output, or `None` when `limit` passes first (runtime timer).
pub async fn within<R: Runtime, T>(
    rt: &R,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let sleep = rt.sleep_until(rt.now() + limit);
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep.await;
        None
    })
    .await
}

/// Sleeps for `d` on the runtime's timer.
pub async fn sleep<R: Runtime>(rt: &R, d: Duration) {
    rt.sleep_until(rt.now() + d).await;
}

/// How to open a hub connection beyond the request target.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The `Origin` header.
    pub origin: Option<String>,
    /// Extra headers, e.g. `Authorization`.
    pub headers: Vec<(String, String)>,
    /// Offer permessage-deflate (the shared mode).
    pub deflate: bool,
    /// TLS (the server verified as `localhost`), or plain TCP.
    pub tls: Option<Arc<ClientConfig>>,
}

/// What one bounded receive produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Recv {
    /// A hub message.
    Msg(Value),
    /// Nothing within the limit.
    Timeout,
    /// The connection is over (closed or failed).
    Closed,
}

/// A hub client over a [`WebSocket`]: sends requests, parses replies,
/// and keeps what it read but was not asked for in order, so a test can
/// wait for one reply while messages keep arriving.
pub struct HubClient<R: Runtime> {
    rt: R,
    ws: WebSocket<MaybeTls<R::Stream>, R>,
    pending: VecDeque<Value>,
    welcome: Value,
    last_seq: u64,
    closed: bool,
    next_ping: u64,
}

impl<R: Runtime> std::fmt::Debug for HubClient<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("welcome", &self.welcome)
            .field("last_seq", &self.last_seq)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> HubClient<R> {
    /// Connects to `target` (path and query) on `addr` and reads the
    /// `welcome`.
    pub async fn connect(rt: R, addr: SocketAddr, target: &str) -> Result<Self, WsError> {
        Self::connect_with(rt, addr, target, &ConnectOptions::default()).await
    }

    /// [`connect`](Self::connect) with an Origin and extra headers.
    pub async fn connect_with(
        rt: R,
        addr: SocketAddr,
        target: &str,
        options: &ConnectOptions,
    ) -> Result<Self, WsError> {
        let attempt = async {
            let tcp = rt.connect(&addr.to_string()).await?;
            let io = match &options.tls {
                None => MaybeTls::Plain(tcp),
                Some(tls) => {
                    let name = server_name("localhost").expect("name");
                    MaybeTls::Tls(Box::new(
                        client_tls_handshake(tcp, tls.clone(), name).await?,
                    ))
                }
            };
            // Any 16 bytes do for a test client; vary them anyway.
            let n = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            let mut key = [0x5au8; 16];
            key[..8].copy_from_slice(&n.to_le_bytes());
            let mut request = ClientRequest::new(addr.to_string(), target, key);
            request.origin.clone_from(&options.origin);
            request.headers.clone_from(&options.headers);
            let mut config = WsConfig::default();
            if options.deflate {
                config.proto.deflate = Some(ws_proto::DeflateConfig::shared());
            }
            client_handshake(rt.clone(), io, request, config).await
        };
        let (ws, _) = within(&rt, WAIT, attempt).await.ok_or(WsError::Timeout)??;
        let mut client = Self {
            rt,
            ws,
            pending: VecDeque::new(),
            welcome: Value::Null,
            last_seq: 0,
            closed: false,
            next_ping: 0,
        };
        match client.read_one(WAIT).await {
            Recv::Msg(v) if v["type"] == "welcome" => client.welcome = v,
            other => {
                return Err(WsError::Io(std::io::Error::other(format!(
                    "expected welcome, got {other:?}"
                ))));
            }
        }
        Ok(client)
    }

    /// The `welcome` message.
    pub fn welcome(&self) -> &Value {
        &self.welcome
    }

    /// The session id from the `welcome`.
    pub fn session(&self) -> String {
        self.welcome["session"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The user from the `welcome`.
    pub fn user(&self) -> String {
        self.welcome["user"].as_str().unwrap_or_default().to_owned()
    }

    /// The highest `seq` of a `message` read so far on this connection.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The permessage-deflate parameters negotiated, if any.
    pub fn deflate(&self) -> Option<ws_proto::DeflateParams> {
        self.ws.deflate()
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.ws.close_info()
    }

    /// Sends one text message as is.
    pub async fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.ws.send(Message::text(text.to_owned())).await
    }

    /// Sends one binary message.
    pub async fn send_binary(&mut self, data: &[u8]) -> Result<(), WsError> {
        self.ws.send(Message::binary(data.to_vec())).await
    }

    /// Sends a JSON value as a text message.
    pub async fn send_json(&mut self, value: &Value) -> Result<(), WsError> {
        self.send_text(&value.to_string()).await
    }

    /// Sends a JSON value; panics if the connection is gone.
    pub async fn request(&mut self, value: Value) {
        if let Err(e) = self.send_json(&value).await {
            panic!("sending {value}: {e}");
        }
    }

    /// Reads one message from the socket (not from what is kept).
    async fn read_one(&mut self, limit: Duration) -> Recv {
        if self.closed {
            return Recv::Closed;
        }
        match within(&self.rt, limit, self.ws.recv()).await {
            None => Recv::Timeout,
            Some(Ok(Some(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("server sent invalid JSON {:?}: {e}", t.as_str()));
                if v["type"] == "message"
                    && let Some(seq) = v["seq"].as_u64()
                {
                    self.last_seq = self.last_seq.max(seq);
                }
                Recv::Msg(v)
            }
            Some(Ok(Some(Message::Binary(_)))) => panic!("the hub sent a binary message"),
            Some(Ok(None) | Err(_)) => {
                self.closed = true;
                Recv::Closed
            }
        }
    }

    /// The next message (kept ones first), within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Recv {
        match self.pending.pop_front() {
            Some(v) => Recv::Msg(v),
            None => self.read_one(limit).await,
        }
    }

    /// The next message, in order; panics after [`WAIT`] or on close.
    pub async fn next(&mut self) -> Value {
        match self.recv_within(WAIT).await {
            Recv::Msg(v) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The first message (kept or new) that satisfies `pred`; the others
    /// are kept in order. Panics after [`WAIT`] or on close, naming `what`.
    pub async fn expect_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).unwrap_or_default();
        }
        let deadline = self.rt.now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(self.rt.now());
            match self.read_one(left).await {
                Recv::Msg(v) if pred(&v) => return v,
                Recv::Msg(v) => self.pending.push_back(v),
                other => panic!(
                    "waiting for {what}: {other:?}; kept meanwhile: {:?}",
                    self.pending
                ),
            }
        }
    }

    /// The first message of type `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        self.expect_where(ty, |v| v["type"] == ty).await
    }

    /// The `ack` or `nack` for operation `op` whose `key` field (`id`, or
    /// `room` for join/leave) is `value`.
    pub async fn reply(&mut self, op: &str, key: &str, value: &str) -> Value {
        let what = format!("ack/nack of {op} {key}={value}");
        self.expect_where(&what, |v| {
            (v["type"] == "ack" || v["type"] == "nack") && v["op"] == op && v[key] == value
        })
        .await
    }

    /// Joins `room`; returns the reply.
    pub async fn join(&mut self, room: &str) -> Value {
        self.request(json!({"type": "join", "room": room})).await;
        self.reply("join", "room", room).await
    }

    /// Leaves `room`; returns the reply.
    pub async fn leave(&mut self, room: &str) -> Value {
        self.request(json!({"type": "leave", "room": room})).await;
        self.reply("leave", "room", room).await
    }

    /// Publishes to `room`; returns the reply.
    pub async fn publish(&mut self, room: &str, id: &str, data: Value) -> Value {
        self.request(json!({"type": "publish", "room": room, "id": id, "data": data}))
            .await;
        self.reply("publish", "id", id).await
    }

    /// Sends a direct message to every connection of `user`; returns the reply.
    pub async fn send_to(&mut self, user: &str, id: &str, data: Value) -> Value {
        self.request(json!({"type": "send", "user": user, "id": id, "data": data}))
            .await;
        self.reply("send", "id", id).await
    }

    /// Broadcasts to every connection; returns the reply.
    pub async fn broadcast(&mut self, id: &str, data: Value) -> Value {
        self.request(json!({"type": "broadcast", "id": id, "data": data}))
            .await;
        self.reply("broadcast", "id", id).await
    }

    /// Sends an application `ping` and returns, in order, everything that
    /// arrived before its `pong` (plus what was kept): the hub answers in
    /// order, so this is everything it had sent before reading the ping.
    pub async fn barrier(&mut self) -> Vec<Value> {
        self.next_ping += 1;
        let id = format!("barrier-{}", self.next_ping);
        self.request(json!({"type": "ping", "id": id})).await;
        let mut seen: Vec<Value> = self.pending.drain(..).collect();
        let deadline = self.rt.now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(self.rt.now());
            match self.read_one(left).await {
                Recv::Msg(v) if v["type"] == "pong" && v["id"] == id.as_str() => return seen,
                Recv::Msg(v) => seen.push(v),
                other => panic!("waiting for pong {id}: {other:?}; seen: {seen:?}"),
            }
        }
    }

    /// Takes what was read but not asked for yet.
    pub fn take_pending(&mut self) -> Vec<Value> {
        self.pending.drain(..).collect()
    }

    /// Reads (keeping messages) until the server closes; returns how.
    /// Panics if it does not close within [`WAIT`].
    pub async fn closed(&mut self) -> CloseInfo {
        let deadline = self.rt.now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(self.rt.now());
            match self.read_one(left).await {
                Recv::Msg(v) => self.pending.push_back(v),
                Recv::Closed => break,
                Recv::Timeout => panic!("the server did not close within {WAIT:?}"),
            }
        }
        self.ws
            .close_info()
            .unwrap_or_else(|| panic!("connection failed without a close"))
    }

    /// Closes cleanly with 1000.
    pub async fn close(self) {
        self.close_with(1000, "bye").await;
    }

    /// Closes cleanly with `code` and `reason` (waits for the server's
    /// answer, bounded).
    pub async fn close_with(mut self, code: u16, reason: &str) {
        let _ = within(&self.rt, WAIT, self.ws.close(CloseCode(code), reason)).await;
    }

    /// Drops the connection without a close handshake (a dead network).
    pub fn abort(self) {
        drop(self);
    }
}

/// The `data` of every `message` in `seen`, by id.
pub fn message_ids(seen: &[Value]) -> Vec<String> {
    seen.iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A plain HTTP response read over raw TCP.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The head (status line and headers).
    pub head: String,
    /// The body.
    pub body: String,
}

impl HttpReply {
    /// A header value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends a raw HTTP request to `addr` and reads the response (head, then
/// `Content-Length` bytes of body).
pub fn http(addr: SocketAddr, request: &str) -> HttpReply {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    http_over(&mut tcp, request)
}

/// Sends a raw HTTP request over `stream` and reads the response.
pub fn http_over(stream: &mut (impl Read + Write), request: &str) -> HttpReply {
    let tcp = stream;
    tcp.write_all(request.as_bytes()).expect("write request");
    let head = read_http_head(tcp);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    let mut reply = HttpReply {
        status,
        head,
        body: String::new(),
    };
    let length: usize = reply
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tcp.read_exact(&mut body).expect("read body");
    reply.body = String::from_utf8_lossy(&body).into_owned();
    reply
}

/// `GET path` over plain HTTP.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpReply {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

/// A WebSocket upgrade request for `target` with extra header lines
/// (each `Name: value`).
pub fn upgrade_request(target: &str, extra: &[&str]) -> String {
    let mut r = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        r.push_str(line);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// `/metrics`, checked to be Prometheus text (every sample has a `# HELP`
/// and a `# TYPE`, every value a non-negative number), as name → value
/// (fractions, as of a time in seconds, truncated).
pub fn metrics(addr: SocketAddr) -> HashMap<String, u64> {
    parse_metrics(&http_get(addr, "/metrics"))
}

/// A `/metrics` reply, checked as [`metrics`] does, as name → value.
pub fn parse_metrics(reply: &HttpReply) -> HashMap<String, u64> {
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut values = HashMap::new();
    let mut described = std::collections::HashSet::new();
    let mut typed = std::collections::HashSet::new();
    for line in reply.body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            described.insert(rest.split(' ').next().unwrap_or_default().to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or_default().to_owned();
            let kind = parts.next().unwrap_or_default();
            assert!(
                matches!(kind, "counter" | "gauge"),
                "bad metric type: {line}"
            );
            typed.insert(name);
        } else if !line.is_empty() {
            let (name, value) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad sample line: {line:?}"));
            // Counts are integers; a time in seconds has a fraction, kept
            // here in whole seconds.
            let value: f64 = value
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .unwrap_or_else(|| panic!("bad sample value: {line:?}"));
            let value = value as u64;
            assert!(
                described.contains(name) && typed.contains(name),
                "{name} lacks # HELP or # TYPE"
            );
            values.insert(name.to_owned(), value);
        }
    }
    values
}

/// One metric's value (panics if `/metrics` lacks it).
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    *metrics(addr)
        .get(name)
        .unwrap_or_else(|| panic!("/metrics has no {name}"))
}

/// Polls `/metrics` until `name` satisfies `pred` (the hub publishes its
/// counters after each batch, so a reply can precede them); returns the
/// value. Panics after [`WAIT`] with the last value.
pub fn wait_metric(addr: SocketAddr, name: &str, pred: impl Fn(u64) -> bool) -> u64 {
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    loop {
        let value = metric(addr, name);
        if pred(value) {
            return value;
        }
        assert!(waited < WAIT, "{name} stayed at {value}");
        std::thread::sleep(step);
        waited += step;
    }
}

/// Writes one masked text frame on a raw connection.
pub fn raw_send_text(tcp: &mut TcpStream, text: &str) {
    tcp.write_all(&crate::client_frame(true, 0x1, text.as_bytes()))
        .expect("write frame");
}

/// Reads one whole unmasked server frame from a raw connection: (opcode,
/// payload). Panics on EOF or after the socket's read timeout.
pub fn raw_read_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    let (header, start) = loop {
        if let Ok(Some(decoded)) = ws_proto::frame::FrameHeader::decode(&buf) {
            break decoded;
        }
        tcp.read_exact(&mut byte).expect("read frame header");
        buf.push(byte[0]);
    };
    debug_assert_eq!(start, buf.len());
    let mut payload = vec![0u8; usize::try_from(header.payload_len).expect("frame length")];
    tcp.read_exact(&mut payload).expect("read frame payload");
    (header.opcode, payload)
}

/// Reads frames from a raw connection until a text frame; returns it
/// parsed.
pub fn raw_recv_json(tcp: &mut TcpStream) -> Value {
    loop {
        let (opcode, payload) = raw_read_frame(tcp);
        match opcode {
            0x1 => return serde_json::from_slice(&payload).expect("JSON text frame"),
            0x8 => panic!("closed while waiting for a message: {payload:?}"),
            _ => {}
        }
    }
}
