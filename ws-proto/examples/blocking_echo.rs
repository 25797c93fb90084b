//! A WebSocket echo server and client on blocking `std::net` sockets and
//! threads, with `ws-proto` alone: no async runtime. The proof that the
//! core is sans-IO: this file owns the sockets, the clock and the
//! randomness; [`Connection`] only turns bytes and instants into events,
//! bytes and deadlines.
//!
//! ```sh
//! cargo run -p ws-proto --example blocking_echo -- server 127.0.0.1:9001
//! cargo run -p ws-proto --example blocking_echo -- client 127.0.0.1:9001 hello world
//! ```
//!
//! The server echoes every message on a thread per connection; the client
//! sends each argument as a text message and prints the echoes. `cargo
//! test` runs the tests at the bottom, which start both over 127.0.0.1.

// This example is the IO layer: reading the clock is its job.
#![allow(clippy::disallowed_methods)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use ws_proto::{
    AcceptOptions, ClientRequest, CloseCode, Config, Connection, Event, HttpResponse, Message,
    SeededMaskKeys,
};

/// Drives one [`Connection`] over a blocking socket.
///
/// The whole adapter: write out what the connection queued, then block in
/// `read` until input arrives or the connection's deadline passes, and feed
/// whichever happened back in.
struct Blocking {
    stream: TcpStream,
    conn: Connection,
    read: Vec<u8>,
    out: Vec<u8>,
    /// The longest wait for input when the connection has no deadline of
    /// its own; `None` waits for ever.
    idle: Option<Duration>,
}

impl Blocking {
    fn new(stream: TcpStream, conn: Connection, idle: Option<Duration>) -> Self {
        Self {
            stream,
            conn,
            read: vec![0; 64 * 1024],
            out: Vec::new(),
            idle,
        }
    }

    /// Writes out everything the connection has queued.
    fn flush(&mut self) -> io::Result<()> {
        while self.conn.poll_transmit(&mut self.out).is_some() {}
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// The next event, reading the socket as needed; `None` once the
    /// connection is closed and every event was reported.
    fn next_event(&mut self) -> io::Result<Option<Event>> {
        loop {
            let event = self.conn.poll_event();
            // Decoding may have queued a pong or a close echo.
            self.flush()?;
            if event.is_some() {
                return Ok(event);
            }
            if self.conn.is_closed() {
                return Ok(None);
            }
            self.wait_for_input()?;
        }
    }

    /// Blocks until input arrives or the connection's deadline passes.
    fn wait_for_input(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let deadline = self.conn.poll_timeout();
        if deadline.is_some_and(|at| at <= now) {
            self.conn.handle_timeout(now);
            return Ok(());
        }
        let wait = match deadline {
            Some(at) => Some(at - now),
            None => self.idle,
        };
        self.stream.set_read_timeout(wait)?;
        match self.stream.read(&mut self.read) {
            Ok(0) => self.conn.handle_eof(Instant::now()),
            Ok(n) => self.conn.handle_data(Instant::now(), &self.read[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if deadline.is_none() {
                    return Err(io::Error::new(ErrorKind::TimedOut, "peer idle too long"));
                }
                self.conn.handle_timeout(Instant::now());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Serves one connection: answers the handshake, then echoes every message
/// until the close handshake ends. Returns how many messages it echoed.
fn serve_connection(stream: TcpStream, idle: Option<Duration>) -> io::Result<usize> {
    let conn = Connection::server(Config::default(), Instant::now()).map_err(io::Error::other)?;
    let mut ws = Blocking::new(stream, conn, idle);
    let mut echoed = 0;
    while let Some(event) = ws.next_event()? {
        match event {
            Event::Request(request) => match request.upgrade_error() {
                None => ws.conn.accept(AcceptOptions::default()),
                Some(err) => ws.conn.respond(HttpResponse::for_error(err)),
            }
            .map_err(io::Error::other)?,
            Event::Message(message) => {
                ws.conn.send(message).map_err(io::Error::other)?;
                echoed += 1;
            }
            // Pings are answered automatically; the close handshake too.
            _ => {}
        }
    }
    ws.flush()?;
    Ok(echoed)
}

/// Accepts connections for ever (or `limit` of them), one thread each.
/// Returns the number of messages each connection echoed, in the order
/// they were accepted (failed connections are reported and left out).
fn serve(listener: &TcpListener, limit: Option<usize>, idle: Option<Duration>) -> Vec<usize> {
    thread::scope(|scope| {
        let mut workers = Vec::new();
        for stream in listener.incoming().take(limit.unwrap_or(usize::MAX)) {
            match stream {
                Ok(stream) => workers.push(scope.spawn(move || serve_connection(stream, idle))),
                Err(e) => eprintln!("accept: {e}"),
            }
        }
        workers
            .into_iter()
            .filter_map(|w| match w.join() {
                Ok(Ok(n)) => Some(n),
                Ok(Err(e)) => {
                    eprintln!("connection: {e}");
                    None
                }
                Err(_) => None,
            })
            .collect()
    })
}

/// Fills `buf` from the OS random source.
fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut buf = [0; N];
    getrandom::fill(&mut buf).map_err(io::Error::other)?;
    Ok(buf)
}

/// A client connection: the opening handshake done.
fn connect(addr: &str, path: &str, idle: Option<Duration>) -> io::Result<Blocking> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let request = ClientRequest::new(addr, path, random()?);
    let keys = Box::new(SeededMaskKeys::new(random()?));
    let conn = Connection::client(Config::default(), request, keys, Instant::now())
        .map_err(io::Error::other)?;
    let mut ws = Blocking::new(stream, conn, idle);
    match ws.next_event()? {
        Some(Event::Accepted(_)) => Ok(ws),
        other => Err(io::Error::other(format!("handshake failed: {other:?}"))),
    }
}

/// Sends each message and waits for its echo; then closes with 1000.
/// Returns the echoes and the close code the server answered with.
fn echo_all(ws: &mut Blocking, messages: &[Message]) -> io::Result<(Vec<Message>, CloseCode)> {
    let mut echoes = Vec::new();
    for message in messages {
        ws.conn.send(message.clone()).map_err(io::Error::other)?;
        loop {
            match ws.next_event()? {
                Some(Event::Message(echo)) => {
                    echoes.push(echo);
                    break;
                }
                Some(Event::Closed { code, .. }) => {
                    return Err(io::Error::other(format!("closed early: {code}")));
                }
                None => return Err(ErrorKind::UnexpectedEof.into()),
                Some(_) => {}
            }
        }
    }
    ws.conn
        .close(Instant::now(), CloseCode::NORMAL, "done")
        .map_err(io::Error::other)?;
    loop {
        match ws.next_event()? {
            Some(Event::Closed {
                code, clean: true, ..
            }) => return Ok((echoes, code)),
            Some(Event::Closed { code, .. }) => {
                return Err(io::Error::other(format!("unclean close: {code}")));
            }
            None => return Err(ErrorKind::UnexpectedEof.into()),
            Some(_) => {}
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [role, addr] if role == "server" => {
            let listener = TcpListener::bind(addr)?;
            println!("echo server on ws://{}/", listener.local_addr()?);
            serve(&listener, None, None);
            Ok(())
        }
        [role, addr, words @ ..] if role == "client" => {
            let addr = addr
                .to_socket_addrs()?
                .next()
                .ok_or(ErrorKind::NotFound)?
                .to_string();
            let mut ws = connect(&addr, "/", Some(Duration::from_secs(10)))?;
            let messages: Vec<Message> = words.iter().cloned().map(Message::text).collect();
            let (echoes, code) = echo_all(&mut ws, &messages)?;
            for echo in echoes {
                match echo {
                    Message::Text(text) => println!("{text}"),
                    Message::Binary(data) => println!("{} binary bytes", data.len()),
                }
            }
            println!("closed: {code}");
            Ok(())
        }
        _ => {
            eprintln!("usage: blocking_echo server ADDR | blocking_echo client ADDR [TEXT...]");
            Err(ErrorKind::InvalidInput.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any wait in the tests ends with an error after this, never a hang.
    const IDLE: Option<Duration> = Some(Duration::from_secs(10));

    /// Runs `clients` against a server on a free loopback port that takes
    /// exactly as many connections; returns what the server echoed per
    /// connection.
    fn with_server(clients: usize, run: impl FnOnce(String)) -> Vec<usize> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::scope(|scope| {
            let server = scope.spawn(|| serve(&listener, Some(clients), IDLE));
            let run = std::panic::AssertUnwindSafe(|| run(addr.clone()));
            if let Err(panic) = std::panic::catch_unwind(run) {
                // Let a server still waiting in `accept` finish, then fail.
                let _unblock: Vec<_> = (0..clients).map(|_| TcpStream::connect(&addr)).collect();
                std::panic::resume_unwind(panic);
            }
            server.join().unwrap()
        })
    }

    #[test]
    fn client_and_server_echo_over_loopback() {
        let messages = vec![
            Message::text("hello"),
            Message::text(""),
            Message::binary(vec![0u8, 1, 2, 255]),
            // Past the 16-bit length form, in many reads.
            Message::binary((0..300_000u32).map(|i| i as u8).collect::<Vec<_>>()),
            Message::text("héllo wörld ✓".repeat(1000)),
        ];
        let echoed = with_server(1, |addr| {
            let mut ws = connect(&addr, "/echo", IDLE).unwrap();
            let (echoes, code) = echo_all(&mut ws, &messages).unwrap();
            assert_eq!(echoes, messages);
            assert_eq!(code, CloseCode::NORMAL);
        });
        assert_eq!(echoed, [messages.len()]);
    }

    #[test]
    fn pings_are_answered_and_connections_are_independent() {
        let echoed = with_server(2, |addr| {
            let mut a = connect(&addr, "/", IDLE).unwrap();
            let mut b = connect(&addr, "/", IDLE).unwrap();
            a.conn.ping("are you there".into()).unwrap();
            a.flush().unwrap();
            assert_eq!(
                a.next_event().unwrap(),
                Some(Event::Pong("are you there".into()))
            );
            let (echoes, _) = echo_all(&mut b, &[Message::text("b")]).unwrap();
            assert_eq!(echoes, [Message::text("b")]);
            let (echoes, _) =
                echo_all(&mut a, &[Message::text("a1"), Message::text("a2")]).unwrap();
            assert_eq!(echoes, [Message::text("a1"), Message::text("a2")]);
        });
        let mut echoed = echoed;
        echoed.sort_unstable();
        assert_eq!(echoed, [1, 2]);
    }

    #[test]
    fn a_plain_http_request_gets_an_http_error() {
        let echoed = with_server(1, |addr| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream.set_read_timeout(IDLE).unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        });
        assert_eq!(echoed, [0]);
    }
}
