//! The Autobahn|Testsuite client procedure (`wstest -m fuzzingserver`):
//! `getCaseCount`, then every `runCase` echoing, then `updateReports`.

use std::sync::Arc;

use ws_async::Runtime;
use ws_async::WsConfig;
use ws_async::WsError;
use ws_async::tls::{connect_url, rustls::ClientConfig};
use ws_proto::Message;

/// Why the Autobahn client procedure stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AutobahnError {
    /// Connecting to or talking with the fuzzing server failed.
    #[error(transparent)]
    Ws(#[from] WsError),
    /// `getCaseCount` did not answer with a number.
    #[error("getCaseCount answered {0}")]
    CaseCount(String),
}

/// Runs every case against `base_url` (e.g. `ws://127.0.0.1:9001`, or
/// `wss://...` with `tls`) as `agent`; returns the number of cases run.
pub async fn run_autobahn_client<R: Runtime>(
    rt: R,
    base_url: &str,
    agent: &str,
    tls: Option<Arc<ClientConfig>>,
    config: WsConfig,
) -> Result<usize, AutobahnError> {
    let base = base_url.trim_end_matches('/');
    let (mut ws, _) = connect_url(
        rt.clone(),
        &format!("{base}/getCaseCount"),
        tls.clone(),
        config.clone(),
    )
    .await?;
    let count = match ws.recv().await? {
        Some(Message::Text(text)) => text
            .as_str()
            .trim()
            .parse::<usize>()
            .map_err(|_| AutobahnError::CaseCount(format!("{:?}", text.as_str())))?,
        other => return Err(AutobahnError::CaseCount(format!("{other:?}"))),
    };
    while ws.recv().await?.is_some() {}
    tracing::info!(count, "running Autobahn cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match connect_url(rt.clone(), &url, tls.clone(), config.clone()).await {
            Ok((mut ws, _)) => loop {
                match ws.recv().await {
                    Ok(Some(message)) => {
                        if ws.feed(message).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) | Err(WsError::Io(_)) => break,
                    Err(_) => {} // a close timeout ends the case once recv returns None
                }
            },
            Err(e) => tracing::warn!(case, error = %e, "case connection failed"),
        }
    }
    let (mut ws, _) = connect_url(
        rt,
        &format!("{base}/updateReports?agent={agent}"),
        tls,
        config,
    )
    .await?;
    while ws.recv().await?.is_some() {}
    Ok(count)
}
