//! tokio-tungstenite peer server: echo (the shape of tokio-tungstenite's own
//! echo-server example: `read.try_filter(data).forward(write)`), or with
//! `--broadcast`, relay every data message from any client to all other
//! clients. With `--tls-cert` and `--tls-key` the echo runs over
//! tokio-rustls (ring), the usual TLS stack under tokio-tungstenite.

use std::path::PathBuf;

use clap::Parser;
use futures_util::{SinkExt, StreamExt, TryStreamExt, future};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use ws_benches::server::{self, PeerOpts, ServerOpts};

#[derive(Parser, Debug)]
#[command(about = "tokio-tungstenite peer server (echo or broadcast)")]
struct Args {
    #[command(flatten)]
    server: ServerOpts,
    #[command(flatten)]
    peer: PeerOpts,
    /// Certificate chain (PEM): echo over TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (bcast, _) = broadcast::channel::<(u64, Message)>(args.peer.queue.max(1));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(
            ws_benches::tls::server_config(cert, key)?,
        )),
        _ => None,
    };
    server::serve(&args.server, |stream, id| {
        let tx = args.peer.broadcast.then(|| bcast.clone());
        let tls = tls.clone();
        async move {
            let _ = match (tx, tls) {
                (Some(tx), _) => relay(stream, tx, id).await,
                (None, Some(tls)) => echo_tls(stream, tls).await,
                (None, None) => echo(stream).await,
            };
        }
    })?;
    Ok(())
}

async fn echo_tls(
    stream: tokio::net::TcpStream,
    tls: tokio_rustls::TlsAcceptor,
) -> anyhow::Result<()> {
    echo(tls.accept(stream).await?).await
}

async fn echo<S>(stream: S) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let ws = tokio_tungstenite::accept_async(stream).await?;
    let (write, read) = ws.split();
    read.try_filter(|m| future::ready(m.is_text() || m.is_binary()))
        .forward(write)
        .await?;
    Ok(())
}

async fn relay(
    stream: tokio::net::TcpStream,
    tx: broadcast::Sender<(u64, Message)>,
    me: u64,
) -> anyhow::Result<()> {
    let ws = tokio_tungstenite::accept_async(stream).await?;
    let (mut write, mut read) = ws.split();
    let mut rx = tx.subscribe();
    let writer = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok((from, msg)) => {
                    if from == me {
                        continue;
                    }
                    if write.feed(msg).await.is_err() {
                        break;
                    }
                    if rx.is_empty() && write.flush().await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    while let Some(msg) = read.next().await {
        match msg? {
            m @ (Message::Text(_) | Message::Binary(_)) => {
                let _ = tx.send((me, m));
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    writer.abort();
    Ok(())
}
