//! permessage-deflate against real peers: Python `websockets` and Node
//! `ws` (installed by `scripts/install-deps.sh` under `~/.cache/ws-peers`,
//! or `$WS_PEERS_HOME`), in both directions, with
//! and without context takeover, on both runtimes.
// A peer process gets a real deadline (wall clock) before it is killed.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ws_async::{WsConfig, connect};
use ws_proto::{CloseCode, Message};
use ws_tests::*;

const MODES: [&str; 2] = ["takeover", "no-takeover"];

fn home() -> PathBuf {
    std::env::var_os("WS_PEERS_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ws-peers"),
        PathBuf::from,
    )
}

/// The command for a peer: `python` or `node`.
fn peer(kind: &str) -> Command {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop");
    let home = home();
    let mut cmd = match kind {
        "python" => {
            let mut c = Command::new(home.join("venv/bin/python"));
            c.arg(dir.join("peer.py"));
            c
        }
        _ => {
            let mut c = Command::new("node");
            c.arg(dir.join("peer.js"))
                .env("NODE_PATH", home.join("node_modules"));
            c
        }
    };
    cmd.stdin(Stdio::null()).stderr(Stdio::inherit());
    cmd
}

/// Waits for `child` to exit within `limit`; kills it otherwise.
fn wait(mut child: Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

fn big_json() -> String {
    let rows: Vec<String> = (0..3000)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"room\":\"lobby\",\"text\":\"hello {}\"}}",
                i % 17
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

#[test]
fn real_peers_as_clients_negotiate_deflate_with_our_server() {
    for kind in ["python", "node"] {
        for rt in RUNTIMES {
            for server_mode in ["shared", "dedicated"] {
                let mut config = WsConfig::default();
                config.set_deflate(server_mode, 12).expect("mode");
                let server = start_echo(rt, config);
                for mode in MODES {
                    let child = peer(kind)
                        .args(["client", &server.url("/"), mode])
                        .stdout(Stdio::piped())
                        .spawn()
                        .expect("spawn peer (run scripts/install-deps.sh)");
                    let mut child = child;
                    let mut line = String::new();
                    BufReader::new(child.stdout.take().expect("stdout"))
                        .read_line(&mut line)
                        .expect("read");
                    let what = format!("{kind} client ({mode}) -> {rt:?} {server_mode}");
                    assert!(line.starts_with("permessage-deflate"), "{what}: {line:?}");
                    if server_mode == "shared" {
                        assert!(
                            line.contains("server_no_context_takeover"),
                            "{what}: {line}"
                        );
                        assert!(
                            line.contains("client_no_context_takeover"),
                            "{what}: {line}"
                        );
                    }
                    assert!(wait(child, Duration::from_secs(60)), "{what}: peer failed");
                }
            }
        }
    }
}

#[test]
fn our_client_negotiates_deflate_with_real_servers() {
    let big = big_json();
    for kind in ["python", "node"] {
        for mode in MODES {
            let mut server = peer(kind)
                .args(["server", mode])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn peer (run scripts/install-deps.sh)");
            let mut port = String::new();
            BufReader::new(server.stdout.take().expect("stdout"))
                .read_line(&mut port)
                .expect("read port");
            let url = format!("ws://127.0.0.1:{}/", port.trim());
            for rt in RUNTIMES {
                for client_mode in ["shared", "dedicated"] {
                    let (url, big) = (url.clone(), big.clone());
                    on_runtime!(rt, |rt| async move {
                        let mut config = WsConfig::default();
                        config.set_deflate(client_mode, 11).expect("mode");
                        config.proto.fragment_size = Some(16 << 10);
                        let what = format!("{rt:?} {client_mode} -> {kind} server ({mode})");
                        let (mut ws, response) = connect(rt, &url, config).await.expect(&what);
                        let params = response.deflate.expect("deflate negotiated");
                        // The shared mode asks for server_no_context_takeover
                        // first, and both servers grant it.
                        let expected = mode == "no-takeover" || client_mode == "shared";
                        assert_eq!(params.server_no_context_takeover, expected, "{what}");
                        for m in [
                            Message::text(big.clone()),
                            Message::text("short"),
                            Message::Binary(Bytes::from(big.clone())),
                            Message::text(big.clone()),
                        ] {
                            ws.send(m.clone()).await.expect("send");
                            assert_eq!(ws.recv().await.expect("recv"), Some(m), "{what}");
                        }
                        ws.close(CloseCode::NORMAL, "").await.expect("close");
                    });
                }
            }
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}
