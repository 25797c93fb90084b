//! Checks of a server binary's command-line forms (`echo`, `client`,
//! `hub-client`, and what `serve` serves over plain HTTP), run by each
//! runtime crate against its own binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    start_server(bin, &["echo"])
}

/// Starts `bin <args> --listen 127.0.0.1:0`; returns the process and the
/// address it logs.
fn start_server(bin: &str, args: &[&str]) -> (Reaped, String) {
    let mut child = Command::new(bin)
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("server exited early").expect("read");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Reaped(child), addr)
}

/// `client` sends stdin lines, prints replies, closes with 1000 at end of
/// input and exits 0; a failure exits non-zero with a message; `echo`
/// exits cleanly on SIGTERM.
pub fn check_cli(bin: &str) {
    let (mut echo, addr) = start_echo(bin);
    let mut client = Command::new(bin)
        .args(["client", "--url", &format!("ws://{addr}/cli")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start client");
    client
        .stdin
        .take()
        .expect("stdin")
        .write_all("one\ntwo ü\n\nthree\n".as_bytes())
        .expect("write");
    let out = wait_bounded(client, Duration::from_secs(30));
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
        .args(["client", "--url", "wss://x/"])
        .output()
        .expect("run client");
    assert!(!bad_url.status.success());
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("TLS"));

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
    lines: std::sync::mpsc::Receiver<String>,
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
        let (tx, lines) = std::sync::mpsc::channel();
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
    let (_server, addr) = start_server(bin, &["serve", "--auth-secret", SECRET]);
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
