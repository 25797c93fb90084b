//! One client connection: the handshake (plain HTTP, Origin, per-IP and
//! token checks decided by [`admission`]), then a loop that forwards
//! received messages to the hub and writes what the hub queued in the
//! connection's [`Outbox`] (both mappings in [`dispatch`]).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use ws_hub::{Command, ConnId};
use ws_proto::{AcceptOptions, HttpResponse, Request};

use super::Shared;
use super::admission::{self, Admission, Admitted, Peer, Policy, Refusal, Route};
use super::api::Replayed;
use super::bodies::BodyCache;
use super::dispatch;
use super::hub_task::ToHub;
use super::metrics::ServerCounters;
use super::outbox::{Outbox, Pending};
use super::tls::ServerTls;
use crate::shutdown::ConnectionGuard;
use ws_async::Incoming;
use ws_async::WsError;
use ws_async::{Decision, accept_with};
use ws_async::{Runtime, Transport};

/// Serves one accepted TCP connection to the end, then drops `guard`.
/// The returned future is the connection's whole task: spawn it as it is,
/// since a future awaited in another `async` block that owns it takes its
/// room twice (once as the block's capture, once as the awaited value).
///
/// Not an `async fn`, so that its arguments are not kept in the task: the
/// TLS and WebSocket handshakes and the hub's `Open` run in a boxed
/// future that owns them and is freed once the connection is open. What
/// stays in the task for the connection's life is [`live`]'s state and
/// the few values it needs, and every byte of it is paid by every idle
/// connection.
pub(crate) fn serve_connection<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    peer: SocketAddr,
    shared: Arc<Shared>,
    guard: ConnectionGuard,
) -> impl Future<Output = ()> {
    let slot = shared
        .ip_limiter
        .acquire(peer.ip(), shared.config.max_connections_per_ip);
    let opening = Box::pin(opening(rt, io, peer, shared.clone(), slot.is_some()));
    async move {
        // `.await` consumes the box: it is freed once the connection is open.
        if let Some(mut opened) = opening.await {
            live(&mut opened, &peer, &shared).await;
        }
        drop(slot);
        drop(guard);
    }
}

/// A connection past its handshakes, known to the hub.
struct Opened<T, R: Runtime> {
    conn: ConnId,
    reader: ws_async::ReadHalf<T, R>,
    writer: ws_async::WriteHalf<T, R>,
    outbox: Arc<Outbox>,
}

/// The handshakes and the hub's `Open`, up to an open plain connection.
/// A TLS connection lives its whole life in [`tls_connection`] and gives
/// back `None`, like a connection that did not open.
async fn opening<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    peer: SocketAddr,
    shared: Arc<Shared>,
    has_slot: bool,
) -> Option<Opened<Replayed<T>, R>> {
    let Some(tls) = &shared.config.tls else {
        return open(rt, io, peer, &shared, has_slot, &shared.config.ws, None).await;
    };
    // Boxed: inline, the TLS connection's state (a TLS stream of over ten
    // kilobytes among it) would size this future, which every plain
    // connection allocates for its handshake.
    Box::pin(tls_connection(rt, io, tls, peer, &shared, has_slot)).await;
    None
}

/// A TLS connection's whole life: the TLS handshake, the WebSocket
/// handshake and the hub's `Open`, then [`live`].
async fn tls_connection<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    tls: &ServerTls,
    peer: SocketAddr,
    shared: &Shared,
    has_slot: bool,
) {
    // On a TLS port the per-IP limit applies before the TLS handshake, so
    // a flood of hellos from one address costs no crypto (and gets no
    // 429: there is no HTTP without the handshake).
    if !has_slot {
        ServerCounters::bump(&shared.counters.ip_limit_refusals);
        return;
    }
    // Boxed, like the WebSocket handshake: freed once done.
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
    if let Some(mut opened) = open(rt, io, peer, shared, has_slot, &config, user).await {
        live(&mut opened, &peer, shared).await;
    }
}

/// The WebSocket handshake (or a server-API request, answered here), then
/// the hub's `Open`; `cert_user` is the user a verified TLS client
/// certificate names. `None` once the connection has been dealt with.
async fn open<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    peer: SocketAddr,
    shared: &Shared,
    has_slot: bool,
    config: &ws_async::WsConfig,
    cert_user: Option<String>,
) -> Option<Opened<Replayed<T>, R>> {
    // Server-API requests (docs/API.md) are answered here.
    let io = super::api::intercept(&rt, io, shared).await?;
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let peer_info = Peer {
        conn,
        addr: peer,
        has_slot,
        cert_user: cert_user.as_deref(),
    };
    let mut admitted = None;
    // Boxed: the handshake's state is large and short-lived.
    // Cloned here, not by the caller: a `WsConfig` held across the
    // awaits above would sit in every pending handshake's future.
    let accepted = Box::pin(accept_with(rt, io, config.clone(), |req| {
        let (decision, outcome) = decide(req, &peer_info, shared);
        admitted = outcome;
        decision
    }))
    .await;
    let ws = match accepted {
        Ok(ws) => ws,
        Err(WsError::Refused(_)) => return None,
        Err(e) => {
            ServerCounters::bump(&shared.counters.handshake_failures);
            tracing::debug!(%peer, error = %e, "handshake failed");
            return None;
        }
    };
    let Admitted {
        identity,
        resume,
        token_expiry,
    } = admitted?;
    ServerCounters::bump(&shared.counters.handshakes);
    let outbox = Arc::new(Outbox::new(shared.config.hub.outbound));
    let open = ToHub::Open {
        conn,
        outbox: outbox.clone(),
        identity,
        remote_addr: peer,
        resume,
    };
    shared.hub.send(open).await.ok()?;
    if let Some((now_unix_secs, expires_unix_secs)) = token_expiry {
        let expiry = Command::TokenExpiry {
            conn,
            now_unix_secs,
            expires_unix_secs,
        };
        let _ = shared.hub.send(ToHub::Command(expiry)).await;
    }
    let (reader, writer) = ws.split();
    Some(Opened {
        conn,
        reader,
        writer,
        outbox,
    })
}

/// The open connection's life, then its end told to the hub.
async fn live<T: Transport, R: Runtime>(
    opened: &mut Opened<T, R>,
    peer: &SocketAddr,
    shared: &Shared,
) {
    let Opened {
        conn,
        reader,
        writer,
        outbox,
    } = opened;
    let conn = *conn;
    if let Err(e) = pump(conn, reader, writer, outbox, shared).await {
        tracing::debug!(%peer, ?conn, error = %e, "connection ended with an error");
    }
    outbox.detach();
    // Boxed: the commands would otherwise take room in every task.
    Box::pin(ended(conn, reader.close_info(), shared)).await;
}

/// Tells the hub how the connection ended.
async fn ended(conn: ConnId, close: Option<ws_async::CloseInfo>, shared: &Shared) {
    for command in dispatch::ended(conn, close) {
        let _ = to_hub(&shared.hub, ToHub::Command(command)).await;
    }
}

/// Hands `message` to the hub task, waiting while its inbox is full;
/// `Err` once the hub task has gone. Not an `async fn`: the message is
/// handed over before the first poll, and only a wait (rare, boxed) is
/// left in the future, so the connection task does not carry a
/// command-sized slot for its whole life.
fn to_hub(
    hub: &async_channel::Sender<ToHub>,
    message: ToHub,
) -> impl Future<Output = Result<(), ()>> + '_ {
    let wait = match hub.try_send(message) {
        Ok(()) => Ok(None),
        Err(async_channel::TrySendError::Full(m)) => Ok(Some(Box::pin(hub.send(m)))),
        Err(async_channel::TrySendError::Closed(_)) => Err(()),
    };
    async move {
        match wait {
            Ok(None) => Ok(()),
            Ok(Some(send)) => send.await.map_err(drop),
            Err(()) => Err(()),
        }
    }
}

/// Chooses the answer to a request ([`admission::admit`]), reading the
/// clock for it, counts it, and renders `/metrics`.
fn decide(req: &Request, peer: &Peer<'_>, shared: &Shared) -> (Decision, Option<Admitted>) {
    let counters = &shared.counters;
    let answer = |response: HttpResponse| (Decision::Respond(response), None);
    // Token expiry is wall-clock time; the adapter owns the clock.
    #[allow(clippy::disallowed_methods)]
    let now_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let namespace = shared.config.hub.anonymous_namespace();
    let policy = Policy {
        allowed_origins: &shared.config.allowed_origins,
        authenticator: shared.authenticator.as_ref(),
        namespace: &namespace,
    };
    match admission::admit(req, peer, &policy, now_unix_secs) {
        Admission::Upgrade(admitted) => {
            (Decision::Accept(AcceptOptions::default()), Some(admitted))
        }
        Admission::Http(route) => {
            ServerCounters::bump(&counters.http_requests);
            match route {
                Route::Metrics => {
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
                // Let the handshake refuse it with the precise reason.
                Route::BadUpgrade => (Decision::Accept(AcceptOptions::default()), None),
                Route::Asset(asset) => answer(asset.response()),
                Route::Health => answer(HttpResponse::text(200, "ok\n")),
                Route::MethodNotAllowed => answer(HttpResponse::text(405, "only GET\n")),
                Route::NotFound => answer(HttpResponse::text(
                    404,
                    "not found; WebSocket clients upgrade on any other path\n",
                )),
            }
        }
        Admission::Refused(refusal) => {
            ServerCounters::bump(match refusal {
                Refusal::TooManyFromAddress => &counters.ip_limit_refusals,
                Refusal::Origin => &counters.origin_refusals,
                Refusal::Unauthorized(_) => &counters.auth_failures,
            });
            answer(refusal.response())
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
    // Deliveries share their compressed body when this member negotiated
    // deflate without server context takeover.
    let bodies = shared
        .bodies
        .as_ref()
        .filter(|_| BodyCache::fits(writer.deflate()));
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
            Step::Received(Ok(Some(incoming))) => {
                if let Incoming::Message(message) = &incoming
                    && !closing
                {
                    shared.counters.frames_in.fetch_add(1, Ordering::Relaxed);
                    let len = message.len() as u64;
                    shared.counters.bytes_in.fetch_add(len, Ordering::Relaxed);
                }
                let Some(command) = dispatch::command_for(
                    conn,
                    incoming,
                    closing,
                    shared.config.hub.max_message_size,
                ) else {
                    continue;
                };
                // Without the hub, a message has nowhere to go.
                let is_message = matches!(command, Command::Request { .. });
                if to_hub(&shared.hub, ToHub::Command(command)).await.is_err() && is_message {
                    return Ok(());
                }
            }
            Step::Received(Ok(None)) => return Ok(()),
            // The peer did not answer our close in time: it may have stopped
            // reading (a slow consumer), so what is still queued for it
            // would never drain; give up on it now.
            Step::Received(Err(WsError::Timeout)) => return Ok(()),
            Step::Received(Err(e)) | Step::WriteFailed(e) => return Err(e),
            Step::Outbox(pending) => {
                closing |= dispatch::serve_outbox(pending, outbox, writer, bodies, bound)?;
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
