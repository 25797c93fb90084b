//! tokio-tungstenite peer server: echo (the shape of tokio-tungstenite's own
//! echo-server example: `read.try_filter(data).forward(write)`), or with
//! `--broadcast`, relay every data message from any client to all other
//! clients.

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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (bcast, _) = broadcast::channel::<(u64, Message)>(args.peer.queue.max(1));
    server::serve(&args.server, |stream, id| {
        let tx = args.peer.broadcast.then(|| bcast.clone());
        async move {
            let _ = match tx {
                Some(tx) => relay(stream, tx, id).await,
                None => echo(stream).await,
            };
        }
    })?;
    Ok(())
}

async fn echo(stream: tokio::net::TcpStream) -> anyhow::Result<()> {
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
