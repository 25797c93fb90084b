//! The echo server: every text and binary message goes back as it came.
//! This is the server the Autobahn|Testsuite and the benchmarks drive.

use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use ws_proto::CloseCode;

use crate::server::tls::ServerTls;
use crate::shutdown::Shutdown;
use crate::task::{accept_error, unless};
use ws_async::WsConfig;
use ws_async::WsError;
use ws_async::accept;
use ws_async::{Runtime, Transport};

/// Accepts connections on `listener` and echoes on each until `shutdown`
/// triggers; then stops accepting, closes every client with 1001 and
/// waits up to `grace` for them to finish. With `tls`, every connection
/// is TLS (the handshake timeout covers the TLS handshake too).
pub async fn serve_echo<R: Runtime>(
    rt: R,
    listener: R::Listener,
    config: WsConfig,
    tls: Option<Arc<ServerTls>>,
    shutdown: Arc<Shutdown>,
    grace: Duration,
) -> io::Result<()> {
    // One copy shared by every connection task, not one per task.
    let config = Arc::new(config);
    let mut stop = pin!(shutdown.wait());
    while let Some(accepted) = unless(stop.as_mut(), R::accept(&listener)).await {
        match accepted {
            Ok((io, peer)) => {
                let guard = shutdown.track();
                let (rt2, config, shutdown) = (rt.clone(), config.clone(), shutdown.clone());
                let tls = tls.clone();
                rt.spawn(async move {
                    let _guard = guard;
                    let result = match tls {
                        None => echo_connection(rt2, io, &config, &shutdown).await,
                        // Boxed: a TLS stream held in this future would
                        // size every connection's task, plain ones too.
                        Some(tls) => Box::pin(echo_tls(rt2, io, &tls, &config, &shutdown)).await,
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Err(e) => accept_error(&rt, e).await,
        }
    }
    drop(listener);
    tracing::info!(
        active = shutdown.active(),
        "stopped accepting; closing clients"
    );
    let deadline = rt.now() + grace;
    future::or(shutdown.drained(), rt.sleep_until(deadline)).await;
    Ok(())
}

/// One echo connection over TLS: the TLS handshake, then
/// [`echo_connection`].
async fn echo_tls<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    tls: &ServerTls,
    config: &WsConfig,
    shutdown: &Shutdown,
) -> Result<(), WsError> {
    // Boxed: its state is freed once the handshake is done.
    let (io, config) = Box::pin(tls.handshake(&rt, io, config)).await?;
    echo_connection(rt, io, &config, shutdown).await
}

/// One echo connection.
pub async fn echo_connection<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    config: &WsConfig,
    shutdown: &Shutdown,
) -> Result<(), WsError> {
    let mut stop = pin!(shutdown.wait());
    // Boxed so that the handshake's state (a kilobyte or more) is freed
    // once the connection is open instead of living in the task forever.
    let Some(ws) = unless(stop.as_mut(), Box::pin(accept(rt, io, config.clone()))).await else {
        return Ok(());
    };
    let mut ws = ws?;
    loop {
        match unless(stop.as_mut(), ws.recv()).await {
            None => {
                return ws
                    .close(CloseCode::GOING_AWAY, "server shutting down")
                    .await;
            }
            // Queue the echo; the next recv writes everything queued in one
            // go before it waits for more input.
            Some(Ok(Some(message))) => ws.feed(message).await?,
            Some(Ok(None)) => return Ok(()),
            // The peer did not answer our close; finish shutting down.
            Some(Err(WsError::Timeout)) => {}
            Some(Err(e)) => return Err(e),
        }
    }
}
