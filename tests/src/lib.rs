//! Harness for the loopback integration suite: start a server on either
//! runtime in its own thread, run client code on either runtime, and raw
//! TCP helpers for misbehaving peers. Tests live in `tests/tests/`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use ws_async::{Runtime, WsConfig};
use ws_server::shutdown::Shutdown;

pub mod browser;
pub mod cli;
pub mod hub_client;
pub mod proxy;
pub mod redis;
pub mod serve_process;
pub mod tls;

/// Which runtime a side runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    /// tokio.
    Tokio,
    /// smol.
    Smol,
}

/// Both runtimes.
pub const RUNTIMES: [Rt; 2] = [Rt::Tokio, Rt::Smol];

/// Runs `$body` (an async block using `$rt: impl Runtime`) to completion on
/// the chosen client runtime. The body is compiled once per runtime.
#[macro_export]
macro_rules! on_runtime {
    ($which:expr, |$rt:ident| $body:expr) => {
        match $which {
            $crate::Rt::Tokio => {
                let runtime = ::tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let $rt = ::runtime_tokio::TokioRuntime;
                runtime.block_on($body)
            }
            $crate::Rt::Smol => {
                let $rt = ::runtime_smol::SmolRuntime::default();
                ::smol::block_on($body)
            }
        }
    };
}

/// A server running in its own thread on one runtime.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Arc<Shutdown>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// `ws://addr` plus `path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Connections the server still holds.
    pub fn active(&self) -> usize {
        self.shutdown.active()
    }

    /// Triggers a graceful shutdown without waiting for it.
    pub fn trigger_shutdown(&self) {
        self.shutdown.trigger();
    }

    /// Waits (bounded) until the server holds `n` connections or fewer;
    /// returns whether it got there.
    pub fn wait_active_at_most(&self, n: usize, limit: Duration) -> bool {
        let step = Duration::from_millis(10);
        let mut waited = Duration::ZERO;
        while self.active() > n {
            if waited >= limit {
                return false;
            }
            std::thread::sleep(step);
            waited += step;
        }
        true
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a server in its own thread: `$serve` is an async expression
/// using `$r` (the runtime), `$listener` and `$stop` (its `Shutdown`),
/// compiled once per runtime.
macro_rules! start_server {
    ($which:expr, |$r:ident, $listener:ident, $stop:ident| $serve:expr) => {{
        let shutdown = Shutdown::new();
        let (tx, rx) = mpsc::channel();
        let $stop = shutdown.clone();
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let which = $which;
        let thread = std::thread::spawn(move || match which {
            Rt::Tokio => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let $r = runtime_tokio::TokioRuntime;
                runtime.block_on(async move {
                    let $listener = $r.bind(addr).await.expect("bind");
                    tx.send(runtime_tokio::TokioRuntime::local_addr(&$listener).expect("addr"))
                        .expect("send");
                    $serve.await
                });
            }
            Rt::Smol => {
                let executor = Arc::new(async_executor::Executor::new());
                let $r = runtime_smol::SmolRuntime::with_executor(executor.clone());
                async_io::block_on(executor.run(async move {
                    let $listener = $r.bind(addr).await.expect("bind");
                    tx.send(runtime_smol::SmolRuntime::local_addr(&$listener).expect("addr"))
                        .expect("send");
                    $serve.await
                }));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server started");
        TestServer {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }};
}

/// Starts the hub server (`serve`) on `rt` with `config` on a free
/// loopback port (`config.listen` is ignored).
pub fn start_hub(rt: Rt, config: ws_server::server::ServerConfig) -> TestServer {
    start_server!(rt, |r, listener, stop| async move {
        ws_server::server::serve(r, listener, config, stop)
            .await
            .expect("serve");
    })
}

/// [`start_hub`] with the application's own plugins (`serve_with`).
pub fn start_hub_with(
    rt: Rt,
    config: ws_server::server::ServerConfig,
    plugins: ws_server::server::Plugins,
) -> TestServer {
    start_server!(rt, |r, listener, stop| async move {
        ws_server::server::serve_with(r, listener, config, plugins, stop)
            .await
            .expect("serve");
    })
}

/// Starts the echo server on `rt` with `config` on a free loopback port.
pub fn start_echo(rt: Rt, config: WsConfig) -> TestServer {
    start_echo_with(rt, config, None)
}

fn start_echo_with(
    rt: Rt,
    config: WsConfig,
    tls: Option<Arc<ws_server::server::tls::ServerTls>>,
) -> TestServer {
    let grace = Duration::from_secs(5);
    start_server!(rt, |r, listener, stop| async move {
        ws_server::echo::serve_echo(r, listener, config, tls, stop, grace)
            .await
            .expect("serve");
    })
}

/// A raw TCP client that has completed the upgrade handshake, for peers
/// that misbehave on purpose.
pub fn raw_client(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("write request");
    let head = read_http_head(&mut tcp);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    tcp
}

/// Reads an HTTP response head byte by byte (so nothing after it is lost).
pub fn read_http_head(tcp: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut out = Vec::new();
    ws_proto::frame::FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    }
    .encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    ws_proto::frame::apply_mask(&mut out[start..], key, 0);
    out
}

/// Reads unmasked server frames until EOF; returns (opcode, payload) pairs.
pub fn read_frames_until_eof(tcp: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut data = Vec::new();
    let _ = tcp.read_to_end(&mut data);
    let mut frames = Vec::new();
    let mut rest = &data[..];
    while let Ok(Some((h, n))) = ws_proto::frame::FrameHeader::decode(rest) {
        let end = n + h.payload_len as usize;
        if rest.len() < end {
            break;
        }
        frames.push((h.opcode, rest[n..end].to_vec()));
        rest = &rest[end..];
    }
    frames
}

/// The close code in a close frame payload.
pub fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

/// Starts the echo server over TLS on `rt` on a free loopback port.
pub fn start_tls_echo(rt: Rt, tls: Arc<ws_server::server::tls::ServerTls>) -> TestServer {
    start_echo_with(rt, WsConfig::default(), Some(tls))
}
