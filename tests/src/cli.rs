//! Checks of a server binary's command-line forms (`echo`, `client`,
//! `hub-client`, and what `serve` serves over plain HTTP), run by each
//! runtime crate against its own binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ws_async::WsConfig;
use ws_async::certgen::Validity;
use ws_async::tls::{connect_tls, load_certs};
use ws_proto::Message;

use crate::tls::{Pki, https_get, peer_leaf};

/// A child process that is killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin echo` on a free port; returns the process and its address.
fn start_echo(bin: &str) -> (Reaped, String) {
    let (child, addr, _) = start_listening(bin, &["echo", "--listen", "127.0.0.1:0"]);
    (child, addr)
}

/// Starts `bin args...` (a server subcommand listening on port 0); returns
/// the process, its address and its later log lines.
fn start_listening(bin: &str, args: &[&str]) -> (Reaped, String, mpsc::Receiver<String>) {
    start_listening_with_log(bin, args, "info")
}

/// [`start_listening`] at log level `level`.
fn start_listening_with_log(
    bin: &str,
    args: &[&str],
    level: &str,
) -> (Reaped, String, mpsc::Receiver<String>) {
    let mut child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", level)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // Every line goes to the receiver, the start-up ones included.
    let (tx, rx) = mpsc::channel();
    let addr = loop {
        let line = lines.next().expect("server exited early").expect("read");
        let addr = line
            .split("addr=")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().expect("address").to_owned());
        let _ = tx.send(line);
        if let Some(addr) = addr {
            break addr;
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Reaped(child), addr, rx)
}

/// `client` sends stdin lines, prints replies, closes with 1000 at end of
/// input and exits 0; a failure exits non-zero with a message; `echo`
/// exits cleanly on SIGTERM.
pub fn check_cli(bin: &str) {
    let (mut echo, addr) = start_echo(bin);
    let url = format!("ws://{addr}/cli");
    let out = run_client(bin, &url, &[], &[], "one\ntwo ü\n\nthree\n");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "one\ntwo ü\n\nthree\n"
    );

    let refused = Command::new(bin)
        .args(["client", "--url", "ws://127.0.0.1:1/"])
        .stdin(Stdio::null())
        .output()
        .expect("run client");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("error"));
    let bad_url = Command::new(bin)
        .args(["client", "--url", "http://127.0.0.1:1/"])
        .output()
        .expect("run client");
    assert!(!bad_url.status.success());
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("ws://"));

    // SIGTERM: the server exits 0 by itself.
    let pid = echo.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = echo.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            waited < Duration::from_secs(30),
            "echo did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
        waited += Duration::from_millis(20);
    };
    assert!(status.success(), "{status}");
}

fn wait_bounded(child: Child, limit: Duration) -> std::process::Output {
    let id = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(limit);
        let _ = Command::new("kill")
            .args(["-KILL", &id.to_string()])
            .status();
    });
    let out = child.wait_with_output().expect("wait");
    drop(watchdog);
    out
}

/// A `hub-client` process with its stdout read line by line in the
/// background.
struct HubClientProc {
    child: Reaped,
    lines: mpsc::Receiver<String>,
}

impl HubClientProc {
    fn start(bin: &str, url: &str, token: &str) -> Self {
        let mut child = Command::new(bin)
            .args(["hub-client", "--url", url, "--room", "r", "--token", token])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hub-client");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child: Reaped(child),
            lines,
        }
    }

    fn write(&mut self, text: &str) {
        let stdin = self.child.0.stdin.as_mut().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write");
        stdin.flush().expect("flush");
    }

    /// The `data` of the next delivered message.
    fn next_data(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a message line in time");
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
        assert_eq!(v["type"], "message", "{line}");
        v["data"].clone()
    }

    /// Closes stdin and waits (bounded) for the exit.
    fn finish(mut self) -> std::process::Output {
        drop(self.child.0.stdin.take());
        let mut waited = Duration::ZERO;
        while self.child.0.try_wait().expect("wait").is_none() {
            assert!(waited < Duration::from_secs(30), "hub-client did not exit");
            std::thread::sleep(Duration::from_millis(20));
            waited += Duration::from_millis(20);
        }
        let status = self.child.0.wait().expect("status");
        let mut stderr = Vec::new();
        if let Some(mut e) = self.child.0.stderr.take() {
            let _ = e.read_to_end(&mut stderr);
        }
        std::process::Output {
            status,
            stdout: Vec::new(),
            stderr,
        }
    }
}

/// A plain HTTP GET over raw TCP: (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// `hub-client` joins a room, publishes stdin lines as JSON strings, prints
/// delivered messages as JSON lines, exits 0 at end of input once acked,
/// and exits 1 with the reason when its token is refused; `serve` serves
/// the browser client and its demo page.
pub fn check_hub_client(bin: &str) {
    const SECRET: &str = "cli-secret";
    let (_server, addr, _logs) = start_listening(
        bin,
        &["serve", "--listen", "127.0.0.1:0", "--auth-secret", SECRET],
    );
    let url = format!("ws://{addr}/ws");
    let mut sub = HubClientProc::start(bin, &url, &crate::hub_client::token(SECRET, "sub"));
    // Its own message coming back shows it has joined.
    sub.write("ready\n");
    assert_eq!(sub.next_data(), "ready");
    let mut publisher = HubClientProc::start(bin, &url, &crate::hub_client::token(SECRET, "pub"));
    publisher.write("one\n{\"not\": \"parsed\"}\nthree ü\n");
    let out = publisher.finish();
    assert!(
        out.status.success(),
        "publisher failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in ["one", "{\"not\": \"parsed\"}", "three ü"] {
        assert_eq!(sub.next_data(), expected);
    }
    let out = sub.finish();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let refused = HubClientProc::start(bin, &url, "not-a-token").finish();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let (status, js) = http_get(&addr, "/client/ws-hub-client.js");
    assert!(status.contains(" 200 "), "{status}");
    assert!(js.contains("export class HubClient"));
    let (status, page) = http_get(&addr, "/client/demo.html");
    assert!(status.contains(" 200 "), "{status}");
    assert!(page.contains("./ws-hub-client.js"));
}

/// Runs `client` on `url` with `args`, feeding `input`; returns its output.
fn run_client(
    bin: &str,
    url: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    input: &str,
) -> std::process::Output {
    let mut client = Command::new(bin)
        .args(["client", "--url", url])
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start client");
    client
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    wait_bounded(client, Duration::from_secs(30))
}

/// Sends SIGHUP to `child`.
fn hang_up(child: &Reaped) {
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
}

/// Waits (bounded) for `what` to hold.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    while !check() {
        assert!(waited < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(step);
        waited += step;
    }
}

/// TLS on the command line: `gen-cert`, then `echo` with it and `client
/// --url wss://... --ca-file`; a client that does not trust the server
/// fails clearly; `serve` with TLS answers /healthz over TLS; SIGHUP
/// reloads the certificate for new connections while an open connection
/// keeps working, and a bad new file keeps the old certificate.
pub fn check_tls_cli(bin: &str) {
    let pki = Pki::new();
    let dir = pki.dir.display().to_string();
    let (cert, key) = (format!("{dir}/gen.pem"), format!("{dir}/gen.key"));
    let made = Command::new(bin)
        .args(["gen-cert", "--cert", &cert, "--key", &key])
        .output()
        .expect("gen-cert");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key file").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the key is private");

    let (_echo, addr, _) = start_listening(
        bin,
        &[
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let port = addr.rsplit(':').next().expect("port");
    let url = format!("wss://localhost:{port}/cli");
    let out = run_client(bin, &url, &["--ca-file", &cert], &[], "one\ntwo\n");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    // The platform store (pointed at another CA here) does not trust it.
    let other = pki.ca_file().display().to_string();
    let out = run_client(bin, &url, &[], &[("SSL_CERT_FILE", &other)], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TLS handshake failed") && err.contains("certificate"),
        "{err}"
    );

    // serve over TLS: /healthz on the TLS port.
    let (server_cert, server_key) = pki.issue("serve", &["localhost"], Validity::Current);
    let (serve, addr, logs) = start_listening(
        bin,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &server_cert.display().to_string(),
            "--tls-key",
            &server_key.display().to_string(),
        ],
    );
    let addr: SocketAddr = addr.parse().expect("address");
    let client = pki.client(None);
    assert_eq!(https_get(addr, client.clone(), "/healthz").status, 200);

    // SIGHUP: an open connection survives, new ones get the new certificate.
    let first = load_certs(&server_cert).expect("cert")[0].clone();
    assert_eq!(peer_leaf(addr, client.clone()), first);
    let url = format!("wss://localhost:{}/ws", addr.port());
    let rt = runtime_smol::SmolRuntime::default();
    let (mut open, _) = smol::block_on(connect_tls(rt, &url, client.clone(), WsConfig::default()))
        .expect("connect");
    let welcome = smol::block_on(open.recv()).expect("recv");
    assert!(matches!(welcome, Some(Message::Text(_))), "{welcome:?}");
    let (new_cert, _) = pki.issue("serve", &["localhost"], Validity::Current);
    let second = load_certs(&new_cert).expect("cert")[0].clone();
    hang_up(&serve);
    eventually("new connections get the new certificate", || {
        peer_leaf(addr, client.clone()) == second
    });
    smol::block_on(async {
        open.send(Message::text(r#"{"type":"ping","id":"p"}"#))
            .await
            .expect("the open connection still sends");
        let pong = open.recv().await.expect("and receives");
        assert!(
            matches!(&pong, Some(Message::Text(t)) if t.as_str().contains("pong")),
            "{pong:?}"
        );
    });
    std::fs::write(&server_cert, "not a certificate").expect("write");
    hang_up(&serve);
    eventually("the failed reload is logged", || {
        logs.try_iter().any(|l| l.contains("reload failed"))
    });
    assert_eq!(peer_leaf(addr, client), second, "the old certificate stays");
}

/// Runs `bin token ...`; returns its output.
fn mint(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .arg("token")
        .args(args)
        .env_remove("WS_AUTH_SECRET")
        .output()
        .expect("run token")
}

/// Opens a hub connection to `addr` with `token`; returns the `welcome`
/// text, or the connection error.
fn welcome_with(addr: &str, token: &str) -> Result<String, ws_async::WsError> {
    let url = format!("ws://{addr}/ws?token={token}");
    let rt = runtime_smol::SmolRuntime::default();
    smol::block_on(async {
        let (mut ws, _) = ws_async::tls::connect_url(rt, &url, None, WsConfig::default()).await?;
        match ws.recv().await? {
            Some(Message::Text(t)) => Ok(t.as_str().to_owned()),
            other => panic!("expected a welcome, got {other:?}"),
        }
    })
}

/// `token --secret S --user U --ttl SECS` prints a token that `serve
/// --auth-secret S` accepts for user U; a token minted with another
/// secret is refused; bad arguments fail with a message.
pub fn check_token_cli(bin: &str) {
    let out = mint(
        bin,
        &["--secret", "s3cret", "--user", "alice", "--ttl", "60"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "{stdout:?}"
    );
    let token = stdout.trim_end().to_owned();
    let other = mint(
        bin,
        &["--secret", "other", "--user", "alice", "--ttl", "60"],
    );
    assert!(other.status.success());
    let other = String::from_utf8(other.stdout)
        .expect("utf-8")
        .trim_end()
        .to_owned();

    let (_serve, addr, _) = start_listening(
        bin,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--auth-secret",
            "s3cret",
        ],
    );
    let welcome = welcome_with(&addr, &token).expect("the minted token is accepted");
    assert!(
        welcome.contains(r#""type":"welcome""#) && welcome.contains(r#""user":"alice""#),
        "{welcome}"
    );
    let refused = welcome_with(&addr, &other);
    assert!(refused.is_err(), "a token of another secret: {refused:?}");

    for bad in [
        &["--secret", "", "--user", "alice"][..],
        &["--secret", "s", "--user", ""][..],
        &["--secret", "s", "--user", "alice", "--ttl", "0"][..],
        &["--user", "alice"][..],
    ] {
        let out = mint(bin, bad);
        assert!(!out.status.success(), "{bad:?} must fail");
        assert!(out.stdout.is_empty(), "{bad:?}");
        assert!(!out.stderr.is_empty(), "{bad:?}");
    }
}

/// `serve --api-key K` (repeatable) turns the server API on for those
/// keys; without a key the API answers 401; the keys never appear in the
/// server's log, even at the most verbose level.
pub fn check_api_key_cli(bin: &str) {
    let (serve, addr, logs) = start_listening_with_log(
        bin,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "cli-key-one",
            "--api-key",
            "cli-key-two",
        ],
        "trace",
    );
    let addr: SocketAddr = addr.parse().expect("address");
    let get = |key: &str| {
        crate::hub_client::http(
            addr,
            &format!("GET /api/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"),
        )
        .status
    };
    assert_eq!(get("cli-key-one"), 200);
    assert_eq!(get("cli-key-two"), 200);
    assert_eq!(get("cli-key-three"), 401);
    drop(serve);
    let logged: Vec<String> = logs.try_iter().collect();
    assert!(!logged.is_empty());
    assert!(
        logged.iter().all(|l| !l.contains("cli-key")),
        "a key was logged: {logged:?}"
    );
}

/// A node started from `bin` with Redis and a short presence TTL is
/// killed with SIGKILL: its users, listed by the other (in-process) node's
/// `GET /api/presence` and WebSocket `presence` while it lived (and the
/// binary's own `presence` answer lists the other node's users),
/// disappear once its part of the presence table expires in Redis.
pub fn check_killed_node_presence_expires(bin: &str) {
    const SECRET: &str = "killed-node-secret";
    const KEY: &str = "killed-node-key";
    let redis = crate::redis::RedisServer::start();
    let settings = ws_server::server::Settings {
        redis: Some(redis.url()),
        node_id: Some("survivor".into()),
        auth_secret: Some(SECRET.into()),
        presence_ttl_ms: Some(1000),
        ..Default::default()
    };
    let mut config = ws_server::server::ServerConfig::from_settings(&settings).expect("settings");
    config.api_keys = ws_server::server::api::ApiKeys::new([KEY.to_owned()]);
    let survivor = crate::start_hub(crate::Rt::Tokio, config);
    let url = redis.url();
    let (mut doomed, addr, _) = start_listening(
        bin,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &url,
            "--node-id",
            "doomed",
            "--auth-secret",
            SECRET,
            "--presence-ttl-ms",
            "1000",
        ],
    );
    let presence = || {
        let reply = crate::hub_client::http(
            survivor.addr,
            &format!(
                "GET /api/presence?room=lobby HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n"
            ),
        );
        assert_eq!(reply.status, 200, "{reply:?}");
        serde_json::from_str::<serde_json::Value>(&reply.body).expect("JSON")
    };
    let addr: SocketAddr = addr.parse().expect("address");
    let rt = runtime_smol::SmolRuntime::default();
    let as_user = |u: &str| format!("/ws?token={}", crate::hub_client::token(SECRET, u));
    async fn ask(
        c: &mut crate::hub_client::HubClient<runtime_smol::SmolRuntime>,
        id: &str,
    ) -> serde_json::Value {
        c.request(serde_json::json!({"type": "presence", "room": "lobby", "id": id}))
            .await;
        c.expect_where(id, |v| v["id"] == id).await
    }
    let (mut client, mut sam) = smol::block_on(async {
        let mut c = crate::hub_client::HubClient::connect(rt.clone(), addr, &as_user("dora"))
            .await
            .expect("connect");
        assert_eq!(c.join("lobby").await["type"], "ack");
        let mut sam = crate::hub_client::HubClient::connect(rt, survivor.addr, &as_user("sam"))
            .await
            .expect("connect");
        assert_eq!(sam.join("lobby").await["type"], "ack");
        (c, sam)
    });
    eventually("the survivor sees dora", || presence()["user_count"] == 2);
    assert_eq!(presence()["users"][0]["user"], "dora");
    // The WebSocket `presence` answer covers both nodes, on the binary too.
    let both =
        serde_json::json!([{"user": "dora", "connections": 1}, {"user": "sam", "connections": 1}]);
    eventually("the binary's presence covers both nodes", || {
        smol::block_on(ask(&mut client, "q1"))["users"] == both
    });
    assert_eq!(smol::block_on(ask(&mut sam, "q2"))["users"], both);
    let pid = doomed.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let _ = doomed.0.wait();
    eventually("the killed node's part expires", || {
        redis.command(&["EXISTS", "ws-hub:presence:doomed"]) == ["0"]
    });
    assert_eq!(presence()["user_count"], 1);
    assert_eq!(
        smol::block_on(ask(&mut sam, "q3")),
        serde_json::json!({"type": "presence", "room": "lobby", "id": "q3", "user_count": 1,
            "connection_count": 1, "users": [{"user": "sam", "connections": 1}]})
    );
    drop((client, sam));
    drop(survivor);
}
