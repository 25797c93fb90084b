//! Common plumbing of the peer servers: options, runtime, listener, and
//! the accept loop ([`serve`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Options every peer server takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerOpts {
    /// Address to listen on (loopback).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Worker threads: 1 (the default) runs a tokio current-thread runtime,
    /// so servers are comparable when pinned to one core.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Options of the WebSocket peers, which echo or relay.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerOpts {
    /// Relay every message to all other connected clients instead of echoing.
    #[arg(long)]
    pub broadcast: bool,
    /// Per-subscriber broadcast queue length (laggards lose messages).
    #[arg(long, default_value_t = 4096)]
    pub queue: usize,
}

/// Builds the runtime `opts` asks for.
pub fn runtime(opts: &ServerOpts) -> std::io::Result<tokio::runtime::Runtime> {
    if opts.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    }
}

/// Binds a listener with a deep backlog (handshake benchmarks open
/// connections in bursts).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    let l = sock.listen(4096)?;
    eprintln!("listening on {}", l.local_addr()?);
    Ok(l)
}

/// Accepts the next connection with `TCP_NODELAY` set, riding out transient
/// errors such as running out of file descriptors.
pub async fn accept(l: &TcpListener) -> TcpStream {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                return s;
            }
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Runs a peer server until the process is killed: raises the open-file
/// limit, builds the runtime `opts` asks for, binds, and spawns
/// `handle(stream, n)` for the n-th accepted connection (from 0).
pub fn serve<F, Fut>(opts: &ServerOpts, mut handle: F) -> std::io::Result<()>
where
    F: FnMut(TcpStream, u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    crate::raise_nofile_limit();
    let rt = runtime(opts)?;
    let listener = rt.block_on(async { listen(opts.listen) })?;
    rt.block_on(async move {
        for n in 0u64.. {
            let stream = accept(&listener).await;
            tokio::spawn(handle(stream, n));
        }
    });
    Ok(())
}
