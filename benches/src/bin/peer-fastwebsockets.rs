//! fastwebsockets peer server: echo (the shape of fastwebsockets' own echo
//! example: a `FragmentCollector` reading frames and writing data frames
//! back, auto pong and auto close on, run `unconstrained`), or with
//! `--broadcast`, relay every data message from any client to all other
//! clients.
//!
//! The opening handshake is a minimal httparse-based one
//! ([`ws_benches::wire::server_handshake`]) followed by
//! `WebSocket::after_handshake`, so no hyper is involved: this is
//! fastwebsockets at its leanest.

use bytes::Bytes;
use clap::Parser;
use fastwebsockets::{
    FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocket,
    WebSocketError, after_handshake_split,
};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use ws_benches::server::{self, PeerOpts, ServerOpts};
use ws_benches::wire;

#[derive(Parser, Debug)]
#[command(about = "fastwebsockets peer server (echo or broadcast)")]
struct Args {
    #[command(flatten)]
    server: ServerOpts,
    #[command(flatten)]
    peer: PeerOpts,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (bcast, _) = broadcast::channel::<(u64, OpCode, Bytes)>(args.peer.queue.max(1));
    server::serve(&args.server, |stream, id| {
        let tx = args.peer.broadcast.then(|| bcast.clone());
        tokio::task::unconstrained(async move {
            let _ = match tx {
                Some(tx) => relay(stream, tx, id).await,
                None => echo(stream).await,
            };
        })
    })?;
    Ok(())
}

async fn echo(mut stream: TcpStream) -> anyhow::Result<()> {
    let early = wire::server_handshake(&mut stream).await?;
    anyhow::ensure!(
        early.is_empty(),
        "client sent frames before the handshake completed"
    );
    let mut ws = FragmentCollector::new(WebSocket::after_handshake(stream, Role::Server));
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn relay(
    mut stream: TcpStream,
    tx: broadcast::Sender<(u64, OpCode, Bytes)>,
    me: u64,
) -> anyhow::Result<()> {
    let early = wire::server_handshake(&mut stream).await?;
    anyhow::ensure!(
        early.is_empty(),
        "client sent frames before the handshake completed"
    );
    let (r, w) = stream.into_split();
    let (rx_half, mut tx_half) = after_handshake_split(r, w, Role::Server);
    let mut rx_half = FragmentCollectorRead::new(rx_half);
    // Obligated frames (auto pong / close reply) go to the writer task.
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<(OpCode, Bytes)>();
    let mut sub = tx.subscribe();
    let writer = tokio::spawn(tokio::task::unconstrained(async move {
        loop {
            let (op, payload) = tokio::select! {
                biased;
                c = ctl_rx.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
                m = sub.recv() => match m {
                    Ok((from, op, payload)) => {
                        if from == me {
                            continue;
                        }
                        (op, payload)
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            let frame = Frame::new(true, op, None, Payload::Borrowed(&payload));
            if tx_half.write_frame(frame).await.is_err() || op == OpCode::Close {
                break;
            }
        }
    }));
    loop {
        let ctl = ctl_tx.clone();
        let frame = rx_half
            .read_frame::<_, WebSocketError>(&mut move |f: Frame<'_>| {
                let _ = ctl.send((f.opcode, Bytes::copy_from_slice(&f.payload)));
                async { Ok(()) }
            })
            .await?;
        match frame.opcode {
            OpCode::Close => break,
            op @ (OpCode::Text | OpCode::Binary) => {
                let _ = tx.send((me, op, Bytes::copy_from_slice(&frame.payload)));
            }
            _ => {}
        }
    }
    drop(ctl_tx);
    let _ = writer.await;
    Ok(())
}
