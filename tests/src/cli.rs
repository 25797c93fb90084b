//! Checks of a server binary's command-line forms (`echo`, `client`), run
//! by each runtime crate against its own binary.

use std::io::{BufRead, BufReader, Write};
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
    let mut child = Command::new(bin)
        .args(["echo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("echo exited early").expect("read");
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
