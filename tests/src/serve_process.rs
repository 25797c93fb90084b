//! The `serve` binaries (`ws-tokio`, `ws-smol`) run as child processes on a
//! loopback port: built once per test process in the test's own profile,
//! stopped with SIGTERM (and waited for, bounded) or killed, and started
//! again on the same port.

// Test harness: wall-clock deadlines are fine here (the ban is for the
// sans-IO cores).
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Both server binaries.
pub const BINARIES: [&str; 2] = ["ws-tokio", "ws-smol"];

/// Bound on a start or a stop.
const LIMIT: Duration = Duration::from_secs(30);

/// Builds the server binaries once per test process (a no-op when they
/// are fresh) in this test's profile, and returns the directory.
///
/// # Panics
///
/// If the build fails.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test path");
        // target/<profile>/deps/<test>-<hash>
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--manifest-path", manifest]);
        for b in BINARIES {
            build.args(["--bin", b]);
        }
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the server binaries failed");
        dir
    })
}

/// A `serve` child process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServeProcess {
    bin: &'static str,
    args: Vec<String>,
    child: Option<Child>,
    addr: SocketAddr,
    /// Starts so far (1 after [`start`](Self::start)).
    starts: u32,
}

impl ServeProcess {
    /// Starts `bin serve --listen 127.0.0.1:0 <args>` and waits until it
    /// logs its address.
    ///
    /// # Panics
    ///
    /// If it does not start in time.
    pub fn start(bin: &'static str, args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (child, addr) =
            spawn(bin, "127.0.0.1:0", &args).unwrap_or_else(|e| panic!("start {bin}: {e}"));
        Self {
            bin,
            args,
            child: Some(child),
            addr,
            starts: 1,
        }
    }

    /// Where it listens (the same port across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The `/metrics` counters and gauges, by name.
    pub fn metrics(&self) -> HashMap<String, u64> {
        crate::hub_client::metrics(self.addr)
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    ///
    /// # Panics
    ///
    /// If it is not running or does not exit in time (it is then killed).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", child.id());
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for serve") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within {LIMIT:?} of SIGTERM", self.bin);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it again on the same port (after [`terminate`](Self::terminate)).
    ///
    /// # Panics
    ///
    /// If it does not start in time.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server");
        let listen = self.addr.to_string();
        let deadline = Instant::now() + LIMIT;
        loop {
            match spawn(self.bin, &listen, &self.args) {
                Ok((child, addr)) => {
                    assert_eq!(addr, self.addr, "restarted on another address");
                    self.child = Some(child);
                    self.starts += 1;
                    return;
                }
                // The port may still be held for a moment.
                Err(e) if Instant::now() >= deadline => {
                    panic!("restart {} on {listen}: {e}", self.bin)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `bin serve --listen <listen> <args>`; returns the child once it
/// has logged its address (its stderr is drained by a thread until it
/// exits, so it never blocks on logging).
fn spawn(bin: &str, listen: &str, args: &[String]) -> Result<(Child, SocketAddr), String> {
    let mut child = Command::new(bin_dir().join(bin))
        .args(["serve", "--listen", listen])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(rest) = line.split("addr=").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let found = rx.recv_timeout(LIMIT);
    match found.map(|a| a.parse::<SocketAddr>()) {
        Ok(Ok(addr)) => Ok((child, addr)),
        other => {
            let _ = child.kill();
            let status = child.wait();
            Err(format!("no address logged ({other:?}); exit {status:?}"))
        }
    }
}
