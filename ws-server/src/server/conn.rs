//! One client connection: the handshake (with plain HTTP, Origin, per-IP
//! and token checks), then a loop that forwards received messages to the
//! hub and writes what the hub queued in the connection's [`Outbox`].

use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ws_hub::{AuthRequest, Command, ConnId, Identity, ResumeRequest};
use ws_proto::{AcceptOptions, CloseCode, HttpResponse, Message, Request};

use super::Shared;
use super::hub_task::ToHub;
use super::metrics::ServerCounters;
use super::outbox::{Outbox, Pending};
use ws_async::Incoming;
use ws_async::WsError;
use ws_async::{Decision, accept_with};
use ws_async::{Runtime, Transport};

/// Counts connections per IP address; a slot is released on drop.
#[derive(Debug, Default)]
pub(crate) struct IpLimiter {
    counts: Mutex<std::collections::HashMap<IpAddr, usize>>,
}

pub(crate) struct IpSlot<'a> {
    limiter: &'a IpLimiter,
    ip: IpAddr,
}

impl IpLimiter {
    /// Takes a slot for `ip`, unless it already holds `limit` (0: no limit).
    pub(crate) fn acquire(&self, ip: IpAddr, limit: usize) -> Option<IpSlot<'_>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(IpSlot { limiter: self, ip })
    }
}

impl Drop for IpSlot<'_> {
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

/// What the handshake decided about a request.
enum Admission {
    Upgrade {
        identity: Identity,
        resume: Option<ResumeRequest>,
        /// (now, token expiry) in Unix seconds, when the token expires.
        token_expiry: Option<(u64, u64)>,
    },
    Answered,
}

/// Serves one accepted TCP connection to the end.
pub(crate) async fn serve_connection<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let slot = shared
        .ip_limiter
        .acquire(peer.ip(), shared.config.max_connections_per_ip);
    let Some(tls) = &shared.config.tls else {
        let config = shared.config.ws.clone();
        return serve_upgrade(rt, io, peer, &shared, slot, config, None).await;
    };
    // On a TLS port the per-IP limit applies before the TLS handshake, so
    // a flood of hellos from one address costs no crypto (and gets no 429:
    // there is no HTTP without the handshake).
    if slot.is_none() {
        ServerCounters::bump(&shared.counters.ip_limit_refusals);
        return;
    }
    // Boxed, like the WebSocket handshake below: freed once done.
    let (io, config) = match Box::pin(tls.handshake(&rt, io, &shared.config.ws)).await {
        Ok(done) => done,
        Err(e) => {
            ServerCounters::bump(&shared.counters.tls_handshake_failures);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
    };
    ServerCounters::bump(&shared.counters.tls_handshakes);
    let user = io.peer_user();
    serve_upgrade(rt, io, peer, &shared, slot, config, user).await;
}

/// The WebSocket handshake and then the connection's life; `cert_user`
/// is the user a verified TLS client certificate names.
async fn serve_upgrade<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    peer: SocketAddr,
    shared: &Shared,
    slot: Option<IpSlot<'_>>,
    config: ws_async::WsConfig,
    cert_user: Option<String>,
) {
    // Server-API requests (docs/API.md) are answered here.
    let Some(io) = super::api::intercept(&rt, io, shared).await else {
        return;
    };
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let mut admission = Admission::Answered;
    // Boxed so that the handshake's state is freed once the connection is
    // open instead of living in the task for the connection's lifetime.
    let accepted = Box::pin(accept_with(rt, io, config, |req| {
        let (decision, outcome) = decide(
            req,
            conn,
            peer,
            slot.is_some(),
            cert_user.as_deref(),
            shared,
        );
        admission = outcome;
        decision
    }))
    .await;
    let ws = match accepted {
        Ok(ws) => ws,
        Err(WsError::Refused(_)) => return,
        Err(e) => {
            ServerCounters::bump(&shared.counters.handshake_failures);
            tracing::debug!(%peer, error = %e, "handshake failed");
            return;
        }
    };
    let Admission::Upgrade {
        identity,
        resume,
        token_expiry,
    } = admission
    else {
        return;
    };
    ServerCounters::bump(&shared.counters.handshakes);
    let outbox = Arc::new(Outbox::new(shared.config.hub.outbound));
    let open = ToHub::Open {
        conn,
        outbox: outbox.clone(),
        identity,
        remote_addr: peer,
        resume,
    };
    if shared.hub.send(open).await.is_err() {
        return;
    }
    if let Some((now_unix_secs, expires_unix_secs)) = token_expiry {
        let expiry = Command::TokenExpiry {
            conn,
            now_unix_secs,
            expires_unix_secs,
        };
        let _ = shared.hub.send(ToHub::Command(expiry)).await;
    }
    let (mut reader, mut writer) = ws.split();
    if let Err(e) = pump(conn, &mut reader, &mut writer, &outbox, shared).await {
        tracing::debug!(%peer, ?conn, error = %e, "connection ended with an error");
    }
    outbox.detach();
    // The hub decides what the client's close code means for its session.
    if let Some(close) = reader.close_info().filter(|c| c.clean) {
        let (code, reason) = (close.code.0, close.reason);
        let command = Command::ClientClosed { conn, code, reason };
        let _ = shared.hub.send(ToHub::Command(command)).await;
    }
    let _ = shared
        .hub
        .send(ToHub::Command(Command::Disconnected { conn }))
        .await;
    drop(slot);
}

/// Chooses the answer to a request: health and metrics over plain HTTP,
/// then the per-IP limit, the Origin allow-list and the token (or, with
/// no token, the user of a verified TLS client certificate).
fn decide(
    req: &Request,
    conn: ConnId,
    peer: SocketAddr,
    has_slot: bool,
    cert_user: Option<&str>,
    shared: &Shared,
) -> (Decision, Admission) {
    let counters = &shared.counters;
    let answer = |response: HttpResponse| (Decision::Respond(response), Admission::Answered);
    if !req.is_upgrade() {
        ServerCounters::bump(&counters.http_requests);
        return match (req.method(), req.path()) {
            ("GET", "/healthz") => answer(HttpResponse::text(200, "ok\n")),
            ("GET", "/metrics") => {
                let mut body = String::new();
                let hub = shared.metrics.lock().map(|m| m.clone()).unwrap_or_default();
                super::metrics::render(&hub, counters, &mut body);
                if let Some(bus) = &shared.bus_stats {
                    bus.render_prometheus(&mut body);
                }
                let mut response = HttpResponse::text(200, body);
                response.content_type = "text/plain; version=0.0.4; charset=utf-8".into();
                answer(response)
            }
            (_, "/healthz" | "/metrics") => answer(HttpResponse::text(405, "only GET\n")),
            // Let the handshake refuse it with the precise reason.
            _ if req.header("upgrade").is_some() => (
                Decision::Accept(AcceptOptions::default()),
                Admission::Answered,
            ),
            _ => answer(HttpResponse::text(
                404,
                "not found; WebSocket clients upgrade on any other path\n",
            )),
        };
    }
    if !has_slot {
        ServerCounters::bump(&counters.ip_limit_refusals);
        return answer(HttpResponse::text(
            429,
            "too many connections from this address",
        ));
    }
    // Browsers always send Origin; clients without one are not browsers.
    let origins = &shared.config.allowed_origins;
    let unlisted = |o: &str| !origins.iter().any(|a| a == o);
    if !origins.is_empty() && req.origin().is_some_and(unlisted) {
        ServerCounters::bump(&counters.origin_refusals);
        return answer(HttpResponse::text(403, "origin not allowed"));
    }
    let bearer = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = req.query_param("token").or(bearer);
    let resume = || req.query().and_then(ResumeRequest::from_query);
    if let (None, Some(user)) = (token, cert_user) {
        return (
            Decision::Accept(AcceptOptions::default()),
            Admission::Upgrade {
                identity: Identity::user(user),
                resume: resume(),
                token_expiry: None,
            },
        );
    }
    // Token expiry is wall-clock time; the adapter owns the clock.
    #[allow(clippy::disallowed_methods)]
    let now_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let namespace = shared.config.hub.anonymous_namespace();
    let auth = AuthRequest {
        conn,
        token,
        remote_addr: Some(peer),
        now_unix_secs,
        namespace: &namespace,
    };
    match shared.authenticator.authenticate(&auth) {
        Ok(identity) => (
            Decision::Accept(AcceptOptions::default()),
            Admission::Upgrade {
                token_expiry: token
                    .and_then(|t| shared.authenticator.token_expiry(t))
                    .map(|expires| (now_unix_secs, expires)),
                identity,
                resume: resume(),
            },
        ),
        Err(e) => {
            ServerCounters::bump(&counters.auth_failures);
            answer(HttpResponse::text(401, format!("unauthorized: {e}")))
        }
    }
}

enum Step {
    Received(Result<Option<Incoming>, WsError>),
    Outbox(Pending),
    WriteFailed(WsError),
}

/// Moves messages both ways until the connection ends.
async fn pump<T: Transport, R: Runtime>(
    conn: ConnId,
    reader: &mut ws_async::ReadHalf<T, R>,
    writer: &mut ws_async::WriteHalf<T, R>,
    outbox: &Outbox,
    shared: &Shared,
) -> Result<(), WsError> {
    let bound = shared.config.socket_max_outbound;
    let mut closing = false;
    // After a message from the client, the outbox is served first: a flood
    // of input must not starve this connection's output while the hub
    // (on another thread) keeps filling its outbox.
    let mut outbox_first = false;
    loop {
        let step = {
            let mut received = pin!(reader.recv_incoming());
            poll_fn(|cx| {
                if outbox_first
                    && !closing
                    && let Poll::Ready(p) = ready_outbox(outbox, writer, bound, cx)
                {
                    return Poll::Ready(Step::Outbox(p));
                }
                if let Poll::Ready(r) = received.as_mut().poll(cx) {
                    return Poll::Ready(Step::Received(r));
                }
                if writer.buffered() > 0
                    && let Poll::Ready(Err(e)) = writer.poll_flush(cx)
                {
                    return Poll::Ready(Step::WriteFailed(e));
                }
                if closing {
                    return Poll::Pending;
                }
                ready_outbox(outbox, writer, bound, cx).map(Step::Outbox)
            })
            .await
        };
        outbox_first = matches!(step, Step::Received(Ok(Some(_))));
        match step {
            Step::Received(Ok(Some(Incoming::Message(message)))) if !closing => {
                let (data, is_text) = match message {
                    Message::Text(t) => (t.into_bytes(), true),
                    Message::Binary(b) => (b, false),
                };
                shared.counters.frames_in.fetch_add(1, Ordering::Relaxed);
                shared
                    .counters
                    .bytes_in
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                let command = Command::Received {
                    conn,
                    data,
                    is_text,
                };
                if shared.hub.send(ToHub::Command(command)).await.is_err() {
                    return Ok(());
                }
            }
            Step::Received(Ok(Some(Incoming::Pong(_) | Incoming::Ping(_)))) if !closing => {
                let _ = shared
                    .hub
                    .send(ToHub::Command(Command::Activity { conn }))
                    .await;
            }
            Step::Received(Ok(Some(_))) => {}
            Step::Received(Ok(None)) => return Ok(()),
            // The peer did not answer our close in time: it may have stopped
            // reading (a slow consumer), so what is still queued for it
            // would never drain; give up on it now.
            Step::Received(Err(WsError::Timeout)) => return Ok(()),
            Step::Received(Err(e)) | Step::WriteFailed(e) => return Err(e),
            Step::Outbox(pending) => {
                while writer.buffered() < bound || pending.close.is_some() {
                    let Some(payload) = outbox.pop() else { break };
                    writer.queue_text_bytes(&[payload.head, payload.body])?;
                }
                if pending.ping && outbox.take_ping() {
                    writer.try_ping(Bytes::new())?;
                }
                if let Some((code, reason)) = pending.close {
                    writer.begin_close(CloseCode(code), reason)?;
                    closing = true;
                }
            }
        }
    }
}

/// What the outbox holds, if the socket has room for it (or it is an order
/// that needs none).
fn ready_outbox<T: Transport, R: Runtime>(
    outbox: &Outbox,
    writer: &ws_async::WriteHalf<T, R>,
    bound: usize,
    cx: &Context<'_>,
) -> Poll<Pending> {
    match outbox.poll_pending(cx) {
        Poll::Ready(p) if writer.buffered() < bound || p.close.is_some() => Poll::Ready(p),
        _ => Poll::Pending,
    }
}
