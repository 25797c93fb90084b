//! The adapters over real loopback sockets: every client runtime against
//! every server runtime, and peers that misbehave.

use std::io::{ErrorKind, Write};
use std::time::Duration;

use bytes::Bytes;
use ws_async::{Incoming, WsConfig, WsError, connect};
use ws_proto::{CloseCode, Message};
use ws_tests::*;

fn pairs() -> impl Iterator<Item = (Rt, Rt)> {
    RUNTIMES
        .into_iter()
        .flat_map(|s| RUNTIMES.into_iter().map(move |c| (s, c)))
}

#[test]
fn every_client_runtime_talks_to_every_server_runtime() {
    for (server_rt, client_rt) in pairs() {
        let server = start_echo(server_rt, WsConfig::default());
        let url = server.url("/echo?x=1");
        let big = Bytes::from(
            (0..16u32 << 20)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        );
        on_runtime!(client_rt, |rt| async move {
            let (mut ws, _) = connect(rt, &url, WsConfig::default())
                .await
                .expect("connect");
            for message in [
                Message::text("hello"),
                Message::text(""),
                Message::text("κόσμε €"),
                Message::binary(vec![0u8, 1, 2, 255]),
                Message::Binary(big.clone()),
            ] {
                ws.send(message.clone()).await.expect("send");
                assert_eq!(
                    ws.recv().await.expect("recv"),
                    Some(message),
                    "{server_rt:?} <- {client_rt:?}"
                );
            }
            ws.ping(Bytes::from_static(b"are you there"))
                .await
                .expect("ping");
            assert_eq!(
                ws.recv_incoming().await.expect("pong"),
                Some(Incoming::Pong(Bytes::from_static(b"are you there")))
            );
            ws.close(CloseCode(4000), "custom").await.expect("close");
            let info = ws.close_info().expect("closed");
            assert!(info.clean);
            assert_eq!(
                info.code,
                CloseCode(4000),
                "the server echoes the close code"
            );
        });
        assert!(
            server.wait_active_at_most(0, Duration::from_secs(10)),
            "server freed the connection"
        );
    }
}

#[test]
fn fragmented_messages_are_reassembled_both_ways() {
    for (server_rt, client_rt) in pairs() {
        let server = start_echo(server_rt, WsConfig::default());
        let url = server.url("/");
        on_runtime!(client_rt, |rt| async move {
            let mut config = WsConfig::default();
            config.proto.fragment_size = Some(1000);
            let (mut ws, _) = connect(rt, &url, config).await.expect("connect");
            let text: String = "fragmented ü ".repeat(10_000);
            ws.send(Message::text(text.clone())).await.expect("send");
            assert_eq!(ws.recv().await.expect("recv"), Some(Message::text(text)));
            ws.close(CloseCode::NORMAL, "").await.expect("close");
        });
    }
}

#[test]
fn permessage_deflate_is_negotiated_and_round_trips_on_every_pair() {
    let json: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"room\":\"lobby\",\"text\":\"hello {}\"}},",
                i % 17
            )
        })
        .collect();
    for (server_rt, client_rt) in pairs() {
        for (server_mode, client_mode) in [
            ("shared", "shared"),
            ("dedicated", "shared"),
            ("shared", "dedicated"),
            ("off", "shared"),
        ] {
            let mut server_config = WsConfig::default();
            server_config.set_deflate(server_mode, 10).expect("mode");
            server_config.proto.fragment_size = Some(4096);
            let server = start_echo(server_rt, server_config);
            let url = server.url("/");
            let json = json.clone();
            on_runtime!(client_rt, |rt| async move {
                let mut config = WsConfig::default();
                config.set_deflate(client_mode, 12).expect("mode");
                let (mut ws, response) = connect(rt, &url, config).await.expect("connect");
                assert_eq!(response.deflate.is_some(), server_mode != "off");
                assert_eq!(ws.deflate(), response.deflate);
                for message in [
                    Message::text(json.clone()),
                    Message::text("short"),
                    Message::binary(json.clone().into_bytes()),
                    Message::text(json.clone()),
                ] {
                    ws.send(message.clone()).await.expect("send");
                    assert_eq!(
                        ws.recv().await.expect("recv"),
                        Some(message),
                        "{server_rt:?}/{server_mode} <- {client_rt:?}/{client_mode}"
                    );
                }
                ws.close(CloseCode::NORMAL, "").await.expect("close");
            });
        }
    }
}

#[test]
fn a_garbage_peer_gets_1002_and_others_keep_being_served() {
    for server_rt in RUNTIMES {
        let server = start_echo(server_rt, WsConfig::default());
        let mut bad = raw_client(server.addr);
        // Reserved opcode 0x3.
        bad.write_all(&client_frame(true, 0x3, b"junk"))
            .expect("write");
        let frames = read_frames_until_eof(&mut bad);
        let (opcode, payload) = frames.last().expect("a close frame");
        assert_eq!(*opcode, 8);
        assert_eq!(close_code(payload), 1002);
        // An unmasked frame.
        let mut bad = raw_client(server.addr);
        bad.write_all(&[0x81, 0x02, b'h', b'i']).expect("write");
        assert_eq!(
            close_code(&read_frames_until_eof(&mut bad).last().expect("close").1),
            1002
        );
        // Invalid UTF-8.
        let mut bad = raw_client(server.addr);
        bad.write_all(&client_frame(true, 0x1, &[0xce, 0xba, 0xff]))
            .expect("write");
        assert_eq!(
            close_code(&read_frames_until_eof(&mut bad).last().expect("close").1),
            1007
        );

        let url = server.url("/");
        on_runtime!(server_rt, |rt| async move {
            let (mut ws, _) = connect(rt, &url, WsConfig::default())
                .await
                .expect("connect");
            ws.send(Message::text("still here")).await.expect("send");
            assert_eq!(
                ws.recv().await.expect("recv"),
                Some(Message::text("still here"))
            );
            ws.close(CloseCode::NORMAL, "").await.expect("close");
        });
    }
}

#[test]
fn a_peer_violation_ends_recv_with_its_close_code_not_an_error() {
    // The peer sends an unmasked frame: `recv` answers `Ok(None)` (the
    // connection closed) and `close_info` carries 1002; the peer sees the
    // same code.
    for rt_kind in RUNTIMES {
        on_runtime!(rt_kind, |rt| async move {
            let (mut ws, peer) = accept_raw_peer(&rt, WsConfig::default(), |addr| {
                let mut bad = raw_client(addr);
                bad.write_all(&[0x81, 0x02, b'h', b'i']).expect("write");
                read_frames_until_eof(&mut bad)
            })
            .await;
            let received = ws.recv().await;
            assert!(matches!(received, Ok(None)), "{received:?}");
            let info = ws.close_info().expect("closed");
            assert_eq!(info.code, CloseCode::PROTOCOL_ERROR, "{info:?}");
            let frames = peer.join().expect("peer");
            let (opcode, payload) = frames.last().expect("a close frame");
            assert_eq!((*opcode, close_code(payload)), (8, 1002));
        });
    }
}

/// A peer that is still sending when the connection fails (here a frame
/// over the limit) gets the close frame that says why. Closing a socket
/// with unread data makes the kernel reset the connection, and the reset
/// could overtake the close frame: the failing side sends its FIN, then
/// reads and discards until the peer's.
#[test]
fn a_peer_still_sending_after_a_violation_gets_the_close_frame() {
    for rt_kind in RUNTIMES {
        for round in 0..3 {
            on_runtime!(rt_kind, |rt| async move {
                let mut config = WsConfig::default();
                config.proto.max_frame_size = 1024;
                let (mut ws, peer) = accept_raw_peer(&rt, config, |addr| {
                    let mut big = raw_client(addr);
                    big.set_write_timeout(Some(Duration::from_secs(20)))
                        .expect("timeout");
                    let frame = client_frame(true, 0x2, &vec![7u8; 4 << 20]);
                    let mut reader = big.try_clone().expect("clone");
                    let writer = std::thread::spawn(move || big.write_all(&frame));
                    let frames = read_frames_until_eof(&mut reader);
                    let _ = writer.join();
                    frames
                })
                .await;
                assert!(matches!(ws.recv().await, Ok(None)));
                let frames = peer.join().expect("peer");
                let close = frames.iter().find(|(opcode, _)| *opcode == 8);
                let code = close.map(|(_, payload)| close_code(payload));
                assert_eq!(code, Some(1009), "{rt_kind:?} round {round}: {frames:?}");
            });
        }
    }
}

/// Closing shuts down our side of TCP (a FIN) at once, not when the
/// socket is dropped, on both runtimes: the peer sees the end of the
/// stream while the WebSocket is still held.
#[test]
fn closing_sends_fin_while_the_websocket_is_held() {
    for rt_kind in RUNTIMES {
        on_runtime!(rt_kind, |rt| async move {
            let (mut ws, peer) = accept_raw_peer(&rt, WsConfig::default(), |addr| {
                let mut tcp = raw_client(addr);
                tcp.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut head = [0u8; 2];
                std::io::Read::read_exact(&mut tcp, &mut head).expect("close frame");
                tcp.write_all(&client_frame(true, 0x8, &1000u16.to_be_bytes()))
                    .expect("answer");
                read_frames_until_eof(&mut tcp);
                // A timeout reads as an error, the end of the stream as 0.
                std::io::Read::read(&mut tcp, &mut [0u8; 1]).map_err(|e| e.kind())
            })
            .await;
            ws.close(CloseCode::NORMAL, "bye").await.expect("close");
            let ended = peer.join().expect("peer");
            assert_eq!(
                ended,
                Ok(0),
                "{rt_kind:?}: no FIN while the socket was held"
            );
            drop(ws);
        });
    }
}

#[test]
fn a_peer_that_never_reads_meets_backpressure() {
    for server_rt in RUNTIMES {
        let mut config = WsConfig::default();
        config.max_outbound = 64 * 1024;
        let server = start_echo(server_rt, config);
        let mut greedy = raw_client(server.addr);
        greedy
            .set_write_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        // Send up to 256 MiB of echo requests without reading a byte. The
        // server stops reading once its bounded queue is full, so the kernel
        // buffers fill and our writes stall far below that.
        let frame = client_frame(true, 0x2, &[7u8; 64 * 1024]);
        let mut sent = 0usize;
        let stalled = loop {
            match greedy.write(&frame) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break true;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
            if sent > 256 << 20 {
                break false;
            }
        };
        assert!(
            stalled,
            "{server_rt:?}: the server kept reading {sent} bytes it could not send back"
        );
        // The server still serves others.
        let url = server.url("/");
        on_runtime!(server_rt, |rt| async move {
            let (mut ws, _) = connect(rt, &url, WsConfig::default())
                .await
                .expect("connect");
            ws.send(Message::text("fine")).await.expect("send");
            assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("fine")));
            ws.close(CloseCode::NORMAL, "").await.expect("close");
        });
        drop(greedy);
        assert!(
            server.wait_active_at_most(0, Duration::from_secs(10)),
            "the stalled connection was freed"
        );
    }
}

#[test]
fn try_feed_reports_backpressure_instead_of_growing() {
    // A server-side writer whose peer never reads: the non-waiting call
    // fails once the queue is over its bound, and the queue stays bounded.
    for rt_kind in RUNTIMES {
        on_runtime!(rt_kind, |rt| async move {
            use ws_async::Runtime as _;
            let mut config = WsConfig::default();
            config.max_outbound = 256 * 1024;
            let (ws, peer) = accept_raw_peer(&rt, config, |addr| {
                let tcp = raw_client(addr);
                std::thread::sleep(Duration::from_secs(3));
                drop(tcp);
            })
            .await;
            let (_reader, mut writer) = ws.split();
            let message = Message::binary(vec![1u8; 16 * 1024]);
            let mut refused = false;
            for _ in 0..10_000 {
                match writer.try_feed(message.clone()) {
                    Ok(()) => {
                        let flush = writer.flush();
                        let _ = ws_server::task::unless(
                            std::pin::pin!(rt.sleep_until(rt.now() + Duration::from_millis(5))),
                            flush,
                        )
                        .await;
                    }
                    Err(WsError::Backpressure(queued)) => {
                        assert!(queued < 256 * 1024 + 16 * 1024 + 64);
                        refused = true;
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(refused, "sending never reported backpressure");
            assert!(writer.buffered() <= 256 * 1024 + 16 * 1024 + 64);
            peer.join().unwrap();
        });
    }
}

/// A request head that arrives in many pieces is read on a timer after
/// its first pieces (the slowloris defence in `ws-async`), and still
/// completes: the upgrade is answered and the connection works.
#[test]
fn a_head_sent_in_many_pieces_is_still_accepted() {
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";
    for rt in RUNTIMES {
        let server = start_echo(rt, WsConfig::default());
        let mut tcp = std::net::TcpStream::connect(server.addr).expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        for piece in request.chunks(request.len().div_ceil(10)) {
            tcp.write_all(piece).expect("write a piece");
            std::thread::sleep(Duration::from_millis(30));
        }
        let head = read_http_head(&mut tcp);
        assert!(head.starts_with("HTTP/1.1 101 "), "{rt:?}: {head}");
        tcp.write_all(&client_frame(true, 0x1, b"pieces"))
            .expect("send");
        let mut echoed = [0u8; 8];
        std::io::Read::read_exact(&mut tcp, &mut echoed).expect("echo");
        assert_eq!(&echoed[..], b"\x81\x06pieces", "{rt:?}");
    }
}

/// A burst of connects that nobody has accepted yet is queued by the
/// kernel, not dropped: the listener's backlog is deep (4096, capped by
/// `net.core.somaxconn`). With std's 128, the 130th connect's SYN is
/// dropped, and it waits for a retransmission (or here, times out).
#[test]
fn a_burst_of_connects_fits_in_the_listen_backlog() {
    const BURST: usize = 1_000;
    for rt_kind in RUNTIMES {
        on_runtime!(rt_kind, |rt| async move {
            use ws_async::Runtime as _;
            let listener = rt.bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
            let addr = runtime_addr(&rt, &listener);
            let mut held = Vec::with_capacity(BURST);
            for n in 0..BURST {
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                    Ok(tcp) => held.push(tcp),
                    Err(e) => panic!("{rt_kind:?}: connect {n} of {BURST} not queued: {e}"),
                }
            }
            drop(listener);
        });
    }
}

/// The address of a listener from `Runtime::bind`.
fn runtime_addr<R: ws_async::Runtime>(_rt: &R, listener: &R::Listener) -> std::net::SocketAddr {
    R::local_addr(listener).expect("addr")
}

/// Accepts one WebSocket on a fresh loopback listener from a raw peer that
/// `peer` runs on a thread of its own (given the listener's address).
async fn accept_raw_peer<R: ws_async::Runtime, P: Send + 'static>(
    rt: &R,
    config: WsConfig,
    peer: impl FnOnce(std::net::SocketAddr) -> P + Send + 'static,
) -> (
    ws_async::WebSocket<R::Stream, R>,
    std::thread::JoinHandle<P>,
) {
    let listener = rt.bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
    let addr = R::local_addr(&listener).expect("addr");
    let peer = std::thread::spawn(move || peer(addr));
    let (io, _) = R::accept(&listener).await.expect("accept");
    let ws = ws_async::accept(rt.clone(), io, config)
        .await
        .expect("accept");
    (ws, peer)
}

#[test]
fn a_peer_that_vanishes_mid_frame_is_cleaned_up() {
    for server_rt in RUNTIMES {
        let server = start_echo(server_rt, WsConfig::default());
        for _ in 0..20 {
            let mut gone = raw_client(server.addr);
            let frame = client_frame(true, 0x2, &[1u8; 100_000]);
            gone.write_all(&frame[..50_000]).expect("write");
        }
        assert!(
            server.wait_active_at_most(0, Duration::from_secs(10)),
            "{server_rt:?}: {} connections still held",
            server.active()
        );
    }
}

#[test]
fn close_codes_round_trip_and_shutdown_sends_1001() {
    for (server_rt, client_rt) in pairs() {
        let server = start_echo(server_rt, WsConfig::default());
        let url = server.url("/");
        let url2 = url.clone();
        on_runtime!(client_rt, |rt| async move {
            for code in [1000u16, 1001, 1003, 1008, 1011, 3000, 4999] {
                let (mut ws, _) = connect(rt.clone(), &url, WsConfig::default())
                    .await
                    .expect("connect");
                ws.close(CloseCode(code), "bye").await.expect("close");
                assert_eq!(ws.close_info().expect("info").code, CloseCode(code));
            }
        });
        let (client, server) = {
            let s = server;
            on_runtime!(client_rt, |rt| async move {
                let (mut ws, _) = connect(rt, &url2, WsConfig::default())
                    .await
                    .expect("connect");
                ws.send(Message::text("x")).await.expect("send");
                assert!(ws.recv().await.expect("echo").is_some());
                s.trigger_shutdown();
                assert_eq!(ws.recv().await.expect("closed"), None);
                (ws.close_info().expect("info"), s)
            })
        };
        assert_eq!(client.code, CloseCode::GOING_AWAY);
        assert!(client.clean);
        drop(server);
    }
}

#[test]
fn handshake_problems_get_http_answers_and_timeouts() {
    use std::io::Read;
    for server_rt in RUNTIMES {
        let mut config = WsConfig::default();
        config.proto.handshake_timeout = Some(Duration::from_millis(300));
        let server = start_echo(server_rt, config);
        // Wrong version: 426 with the supported version.
        let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        .unwrap();
        let head = read_http_head(&mut tcp);
        assert!(head.starts_with("HTTP/1.1 426 "), "{head}");
        assert!(head.contains("Sec-WebSocket-Version: 13"));
        // Plain HTTP: 400.
        let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(read_http_head(&mut tcp).starts_with("HTTP/1.1 400 "));
        // Silence: the server gives up on the handshake and closes.
        let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(tcp.read(&mut buf).expect("closed, not timed out"), 0);
        assert!(server.wait_active_at_most(0, Duration::from_secs(10)));
    }
}

/// `TokioRuntime`, counting the timers it is asked for.
#[derive(Clone)]
struct CountingTimers {
    inner: runtime_tokio::TokioRuntime,
    timers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ws_async::Runtime for CountingTimers {
    type Stream = <runtime_tokio::TokioRuntime as ws_async::Runtime>::Stream;
    type Listener = <runtime_tokio::TokioRuntime as ws_async::Runtime>::Listener;
    type Sleep = <runtime_tokio::TokioRuntime as ws_async::Runtime>::Sleep;

    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }
    fn sleep_until(&self, deadline: std::time::Instant) -> Self::Sleep {
        self.timers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.sleep_until(deadline)
    }
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        self.inner.spawn(future);
    }
    fn bind(
        &self,
        addr: std::net::SocketAddr,
    ) -> impl Future<Output = std::io::Result<Self::Listener>> + Send {
        self.inner.bind(addr)
    }
    fn local_addr(listener: &Self::Listener) -> std::io::Result<std::net::SocketAddr> {
        runtime_tokio::TokioRuntime::local_addr(listener)
    }
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, std::net::SocketAddr)>> + Send {
        runtime_tokio::TokioRuntime::accept(listener)
    }
    fn connect(
        &self,
        authority: &str,
    ) -> impl Future<Output = std::io::Result<Self::Stream>> + Send {
        self.inner.connect(authority)
    }
}

/// A request head that is already in the socket when the server starts
/// the handshake completes without arming the handshake timeout (a timer
/// costs a reactor wake-up per handshake on both runtimes); one that comes
/// later does arm it.
#[test]
fn a_handshake_already_received_arms_no_timer() {
    use ws_async::Runtime as _;
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let rt = CountingTimers {
            inner: runtime_tokio::TokioRuntime,
            timers: Default::default(),
        };
        let listener = rt.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = CountingTimers::local_addr(&listener).unwrap();
        for head_first in [true, false] {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            if head_first {
                client.write_all(head).unwrap();
            }
            let (io, _) = CountingTimers::accept(&listener).await.unwrap();
            if head_first {
                // Until the head is in the server's socket.
                io.0.readable().await.unwrap();
            }
            let before = rt.timers.load(std::sync::atomic::Ordering::Relaxed);
            let writer = (!head_first).then(|| {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(50));
                    client.write_all(head).unwrap();
                    client
                })
            });
            let ws = ws_async::accept(rt.clone(), io, WsConfig::default())
                .await
                .expect("handshake");
            let armed = rt.timers.load(std::sync::atomic::Ordering::Relaxed) - before;
            if head_first {
                assert_eq!(armed, 0, "a timer was armed for a head already received");
            } else {
                assert!(armed >= 1, "no timer for a head still to come");
            }
            drop(ws);
            drop(writer.map(|w| w.join().unwrap()));
        }
    });
}
