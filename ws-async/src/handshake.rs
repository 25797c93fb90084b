//! Opening handshakes over a transport: server accept, client connect.

use std::future::{Future, poll_fn};
use std::task::{Context, Poll};

use futures_lite::future;
use ws_proto::{
    AcceptOptions, ClientRequest, Connection, Event, HttpResponse, Request, SeededMaskKeys,
    SendError, ServerResponse,
};

use crate::error::WsError;
use crate::runtime::{Runtime, Transport};
use crate::stream::{Inner, WebSocket, WsConfig};
use crate::url::{UrlError, WsUrl};

/// A server's answer to an upgrade request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Accept the upgrade.
    Accept(AcceptOptions),
    /// Answer with this HTTP response instead and close.
    Respond(HttpResponse),
}

impl<T: Transport, R: Runtime> Inner<T, R> {
    /// Drives the handshake until the connection reports a request
    /// (server) or the server's acceptance (client).
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, WsError>> {
        // Progress happens inside poll_incoming (flush, timers, reads); it
        // stops as soon as a handshake event is stashed.
        let polled = self.poll_incoming(cx);
        if let Some(ev) = self.handshake.take() {
            return Poll::Ready(Ok(*ev));
        }
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(_)) => Poll::Ready(Err(WsError::Closed)),
        }
    }
}

/// Server: reads the request head from `io` and lets `decide` accept it
/// or answer it with plain HTTP (health checks and metrics on the same
/// port, rejections). `decide` sees every request, upgrades or not; when it
/// accepts a request that is not a valid upgrade, the request is refused
/// with the matching status (400, 405, 426). The handshake timeout of
/// `config` applies.
pub async fn accept_with<T, R, F>(
    rt: R,
    io: T,
    config: WsConfig,
    decide: F,
) -> Result<WebSocket<T, R>, WsError>
where
    T: Transport,
    R: Runtime,
    F: FnOnce(&Request) -> Decision,
{
    let conn = Connection::server(config.proto.clone(), rt.now())?;
    let mut inner = Inner::new(conn, io, rt, config);
    let request = match poll_fn(|cx| inner.poll_handshake(cx)).await {
        Ok(Event::Request(request)) => request,
        Ok(_) => return Err(WsError::Closed),
        Err(e) => {
            // The core queued the HTTP rejection (400, 408, 431, ...):
            // write it and shut down before reporting the error.
            let _ = poll_fn(|cx| inner.poll_incoming(cx)).await;
            return Err(e);
        }
    };
    let response = match decide(&request) {
        Decision::Accept(options) => match inner.conn.accept(options) {
            Ok(()) => return Ok(WebSocket::from_inner(inner)),
            Err(SendError::NotUpgradable(e)) => HttpResponse::for_error(&e),
            Err(e) => return Err(e.into()),
        },
        Decision::Respond(response) => response,
    };
    let status = response.status;
    inner.conn.respond(response)?;
    // Write the response and shut down; errors no longer matter.
    let _ = poll_fn(|cx| inner.poll_incoming(cx)).await;
    Err(WsError::Refused(status))
}

/// Server: accepts any valid upgrade request (no subprotocol).
pub async fn accept<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    config: WsConfig,
) -> Result<WebSocket<T, R>, WsError> {
    accept_with(rt, io, config, |_| {
        Decision::Accept(AcceptOptions::default())
    })
    .await
}

/// Client: performs the handshake for `request` over `io`. Masking keys
/// are drawn from a generator seeded by the OS random source.
pub async fn client_handshake<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    request: ClientRequest,
    config: WsConfig,
) -> Result<(WebSocket<T, R>, ServerResponse), WsError> {
    let mut seed = [0u8; 32];
    os_random(&mut seed)?;
    let keys = Box::new(SeededMaskKeys::new(seed));
    let conn = Connection::client(config.proto.clone(), request, keys, rt.now())?;
    let mut inner = Inner::new(conn, io, rt, config);
    match poll_fn(|cx| inner.poll_handshake(cx)).await? {
        Event::Accepted(response) => Ok((WebSocket::from_inner(inner), *response)),
        _ => Err(WsError::Closed),
    }
}

/// Client: connects to a `ws://` URL (TCP, then the handshake), within the
/// configured handshake timeout. A `wss://` URL needs TLS settings:
/// `tls::connect_tls` (feature `tls`).
pub async fn connect<R: Runtime>(
    rt: R,
    url: &str,
    config: WsConfig,
) -> Result<(WebSocket<R::Stream, R>, ServerResponse), WsError> {
    let url = WsUrl::parse(url)?;
    if url.secure {
        return Err(UrlError::Tls(format!("wss://{}", url.authority())).into());
    }
    connect_over(rt, &url, config, |tcp| async { Ok(tcp) }).await
}

/// Client: TCP to `url`'s host, `wrap` (TLS, say), then the WebSocket
/// handshake, all within the configured handshake timeout.
pub(crate) async fn connect_over<R, T, F, W>(
    rt: R,
    url: &WsUrl,
    config: WsConfig,
    wrap: W,
) -> Result<(WebSocket<T, R>, ServerResponse), WsError>
where
    R: Runtime,
    T: Transport,
    F: Future<Output = Result<T, WsError>>,
    W: FnOnce(R::Stream) -> F,
{
    let request = client_request(url)?;
    let timeout = config.proto.handshake_timeout;
    within(&rt, timeout, async {
        let tcp = rt.connect(&url.authority()).await?;
        let io = wrap(tcp).await?;
        client_handshake(rt.clone(), io, request, config).await
    })
    .await
}

/// The upgrade request for `url`, with a fresh random key.
fn client_request(url: &WsUrl) -> Result<ClientRequest, WsError> {
    let mut key = [0u8; 16];
    os_random(&mut key)?;
    Ok(ClientRequest::new(
        url.host_header(),
        url.target.clone(),
        key,
    ))
}

/// Runs `attempt`, failing with [`WsError::Timeout`] after `timeout`.
pub(crate) async fn within<R: Runtime, O>(
    rt: &R,
    timeout: Option<std::time::Duration>,
    attempt: impl Future<Output = Result<O, WsError>>,
) -> Result<O, WsError> {
    match timeout {
        None => attempt.await,
        Some(t) => {
            let sleep = rt.sleep_until(rt.now() + t);
            future::or(attempt, async {
                sleep.await;
                Err(WsError::Timeout)
            })
            .await
        }
    }
}

/// Fills `buf` from the OS random source.
fn os_random(buf: &mut [u8]) -> Result<(), WsError> {
    getrandom::fill(buf).map_err(|e| WsError::Io(std::io::Error::other(e)))
}
