//! A throwaway `redis-server` for tests: started on a free loopback port
//! with persistence off, stopped by PID (also when the test panics, via
//! `Drop`), and restartable on the same port.

// Test harness: wall-clock deadlines are fine here (the ban is for the
// sans-IO cores).
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a start may take before the test fails.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A `redis-server` child process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it
    /// answers PING.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed or does not come up in time.
    pub fn start() -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self { port, child: None };
            match server.spawn() {
                Ok(()) => return server,
                // Another process took the port between probe and bind.
                Err(e) => last = e,
            }
        }
        panic!("cannot start redis-server: {last}");
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the process is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL, by PID) and reaps it; clients see their
    /// connections reset. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (stopping it first if it
    /// is running) and waits until it answers PING.
    ///
    /// # Panics
    ///
    /// If it does not come up in time.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cannot restart redis-server on port {}: {e}", self.port)
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends one command and returns its reply flattened to strings (an
    /// array's elements in order; `nil` as an empty string), for checks
    /// from tests, e.g. `command(&["PUBSUB", "NUMSUB", "ch"])`.
    ///
    /// # Panics
    ///
    /// If the server does not answer.
    pub fn command(&self, args: &[&str]) -> Vec<String> {
        let reply = send_command(self.addr(), args);
        reply.unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "spawn redis-server ({e}); install it with `apt-get install -y redis-server`"
                )
            })?;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server exited: {status}"));
            }
            if send_command(self.addr(), &["PING"]).is_ok_and(|r| r == ["PONG"]) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("redis-server did not answer PING".to_owned());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}

/// One command over a fresh connection; the reply flattened.
fn send_command(addr: SocketAddr, args: &[&str]) -> Result<Vec<String>, String> {
    let mut tcp =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    tcp.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(tcp);
    let mut out = Vec::new();
    read_reply(&mut reader, &mut out)?;
    Ok(out)
}

/// Reads one RESP2 reply, appending its values to `out`.
fn read_reply(reader: &mut impl BufRead, out: &mut Vec<String>) -> Result<(), String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at_checked(1).ok_or("empty reply")?;
    let number = || rest.parse::<i64>().map_err(|e| format!("{line}: {e}"));
    match kind {
        "+" | ":" => out.push(rest.to_owned()),
        "-" => return Err(rest.to_owned()),
        "$" => match usize::try_from(number()?) {
            Ok(len) => {
                let mut data = vec![0; len + 2];
                reader.read_exact(&mut data).map_err(|e| e.to_string())?;
                data.truncate(len);
                out.push(String::from_utf8_lossy(&data).into_owned());
            }
            Err(_) => out.push(String::new()),
        },
        "*" => {
            for _ in 0..number()?.max(0) {
                read_reply(reader, out)?;
            }
        }
        _ => return Err(format!("unexpected reply {line:?}")),
    }
    Ok(())
}
