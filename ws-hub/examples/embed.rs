//! The hub embedded in an application's own loop: blocking `std::net`
//! sockets, plain threads and the real clock, with `ws-proto` for the
//! WebSocket layer. No async runtime.
//!
//! ```sh
//! cargo run -p ws-hub --example embed -- 127.0.0.1:9002
//! ```
//!
//! It prints a token for a demo user; connect with
//! `ws://127.0.0.1:9002/?token=...` (or without a token, as an anonymous
//! user) and speak the hub protocol of `docs/PROTOCOL.md`; press Enter to
//! shut it down gracefully (close 1001 to everyone). `cargo test`
//! runs the tests at the bottom: clients over 127.0.0.1, authentication,
//! rooms, heartbeats and a graceful shutdown.
//!
//! # Who owns what
//!
//! - **The hub thread** owns the [`Hub`]: it is the one place that reads
//!   hub inputs (a bounded channel), waits for [`Hub::poll_timeout`], calls
//!   `handle`/`handle_timeout` with `Instant::now()`, and turns actions into
//!   per-connection work. The hub itself never reads a clock.
//! - **Per connection, a reader thread** blocks in `read`, feeds the
//!   [`Connection`], and forwards messages and pongs to the hub thread (the
//!   bounded channel is the backpressure: a reader waits when the hub lags).
//! - **Per connection, a writer thread** owns the write side: it turns
//!   queued hub payloads into frames, writes them, and runs the
//!   connection's own deadlines (handshake and close timeouts).
//! - They share one [`Conn`] behind a mutex: the WebSocket state machine
//!   and the bounded [`OutboundQueue`] the hub thread pushes into, so a
//!   slow client never blocks the hub, and never grows memory either.

// This example is the IO layer: reading the clock is its job.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Scope};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ws_hub::{
    Action, AllowAll, AuthRequest, Command, ConnId, HmacTokenAuth, Hub, HubConfig, Metrics,
    OutboundQueue, PushOutcome, ResumeRequest, SessionSecret,
};
use ws_proto::{AcceptOptions, CloseCode, Config, Connection, Event, Message, Request, State};

/// How long one socket write may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the hub thread receives.
enum Input {
    /// A client asked to upgrade: authenticate it and, if it may connect,
    /// register it. The answer goes back on `reply`.
    Open {
        conn: ConnId,
        token: Option<String>,
        resume: Option<ResumeRequest>,
        remote_addr: SocketAddr,
        shared: Arc<Shared>,
        reply: SyncSender<bool>,
    },
    /// Anything else for the hub: messages, pongs, disconnects.
    Hub(Command),
    /// Graceful shutdown: close 1001 to everyone, refuse newcomers.
    Shutdown,
}

/// One connection's state, shared by its reader, its writer and the hub
/// thread.
struct Conn {
    ws: Connection,
    /// Hub payloads waiting for the writer; bounded by the hub's
    /// `outbound` settings.
    queue: OutboundQueue,
    /// The hub asked for a heartbeat ping.
    ping: bool,
    /// The hub asked to close (after what is queued).
    close: Option<(u16, ws_hub::CloseReason)>,
}

struct Shared {
    conn: Mutex<Conn>,
    /// Signals the writer: something to send, or the state changed.
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state and wakes the writer.
    fn update<T>(&self, f: impl FnOnce(&mut Conn) -> T) -> T {
        let result = f(&mut self.lock());
        self.wake.notify_one();
        result
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The hub thread: waits for an input or the hub's next deadline, hands it
/// to the hub with the current time, and carries out the actions. Ends
/// when every sender of `inputs` is gone; returns the final metrics.
fn run_hub(mut hub: Hub, inputs: Receiver<Input>) -> Metrics {
    let mut conns: HashMap<ConnId, Arc<Shared>> = HashMap::new();
    let namespace = hub.config().anonymous_namespace();
    loop {
        let input = match hub.poll_timeout() {
            Some(at) => match inputs.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match inputs.recv() {
                Ok(input) => Some(input),
                Err(_) => break,
            },
        };
        let now = Instant::now();
        match input {
            None => hub.handle_timeout(now),
            Some(Input::Open {
                conn,
                token,
                resume,
                remote_addr,
                shared,
                reply,
            }) => {
                let request = AuthRequest {
                    conn,
                    token: token.as_deref(),
                    remote_addr: Some(remote_addr),
                    now_unix_secs: unix_secs(),
                    namespace: &namespace,
                };
                let identity = hub.authenticate(&request);
                // The reader waits for this answer; it cannot be gone.
                let _ = reply.send(identity.is_ok());
                if let Ok(identity) = identity {
                    conns.insert(conn, shared);
                    hub.handle(
                        now,
                        Command::Connected {
                            conn,
                            identity,
                            remote_addr: Some(remote_addr),
                            resume,
                        },
                    );
                }
            }
            Some(Input::Hub(command)) => {
                if let Command::Disconnected { conn } = command {
                    conns.remove(&conn);
                }
                hub.handle(now, command);
            }
            Some(Input::Shutdown) => hub.handle(now, Command::Shutdown),
        }
        perform_actions(&mut hub, &mut conns, now);
    }
    hub.metrics()
}

/// Carries out every action the hub has queued.
fn perform_actions(hub: &mut Hub, conns: &mut HashMap<ConnId, Arc<Shared>>, now: Instant) {
    while let Some(action) = hub.poll_action() {
        match action {
            Action::Deliver { conn, payload } => {
                let Some(shared) = conns.get(&conn) else {
                    continue;
                };
                if shared.update(|c| c.queue.push(payload)) == PushOutcome::Overflow {
                    // The hub answers with a Close 1013, handled below.
                    hub.handle(now, Command::Overflowed { conn });
                }
            }
            Action::Ping { conn } => {
                if let Some(shared) = conns.get(&conn) {
                    shared.update(|c| c.ping = true);
                }
            }
            Action::Close { conn, code, reason } => {
                if let Some(shared) = conns.remove(&conn) {
                    shared.update(|c| c.close = Some((code, reason)));
                }
            }
            // Bus actions only come with `HubConfig::cluster`: one node here.
            _ => {}
        }
    }
}

/// The writer thread: frames what is queued, writes it and runs the
/// connection's deadlines, until the WebSocket is closed.
fn write_loop(shared: &Shared, mut stream: &TcpStream) -> io::Result<()> {
    let mut out = Vec::new();
    let mut c = shared.lock();
    loop {
        let now = Instant::now();
        // Until the reader has accepted the upgrade, hub output waits.
        if c.ws.state() == State::Open {
            while let Some(payload) = c.queue.pop() {
                // Hub payloads are UTF-8 JSON, written as one text message.
                let _ = c.ws.send_text_bytes(&[payload.head, payload.body]);
            }
            if std::mem::take(&mut c.ping) {
                let _ = c.ws.ping(Bytes::new());
            }
            if let Some((code, reason)) = c.close.take() {
                let _ = c.ws.close(now, CloseCode(code), reason.as_str());
            }
        }
        if c.ws.poll_timeout().is_some_and(|at| at <= now) {
            c.ws.handle_timeout(now);
        }
        while c.ws.poll_transmit(&mut out).is_some() {}
        if !out.is_empty() {
            drop(c);
            stream.write_all(&out)?;
            out.clear();
            c = shared.lock();
            continue;
        }
        if c.ws.is_closed() {
            return Ok(());
        }
        c = match c.ws.poll_timeout() {
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                shared
                    .wake
                    .wait_timeout(c, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => shared.wake.wait(c).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// Asks the hub thread whether `request` may connect; accepts the upgrade
/// (the hub has queued its `welcome`) or answers 401.
fn answer_request(
    conn: ConnId,
    request: &Request,
    remote_addr: SocketAddr,
    shared: &Arc<Shared>,
    hub: &SyncSender<Input>,
) -> io::Result<bool> {
    if let Some(err) = request.upgrade_error() {
        let response = ws_proto::HttpResponse::for_error(err);
        shared
            .update(|c| c.ws.respond(response))
            .map_err(io::Error::other)?;
        return Ok(false);
    }
    let (reply, answer) = sync_channel(1);
    let open = Input::Open {
        conn,
        token: request.query_param("token").map(str::to_owned),
        resume: request.query().and_then(ResumeRequest::from_query),
        remote_addr,
        shared: Arc::clone(shared),
        reply,
    };
    let hub_gone = || io::Error::other("hub stopped");
    hub.send(open).map_err(|_| hub_gone())?;
    let admitted = answer.recv().map_err(|_| hub_gone())?;
    shared
        .update(|c| {
            if admitted {
                c.ws.accept(AcceptOptions::default())
            } else {
                c.ws.reject(401, "unauthorized")
            }
        })
        .map_err(io::Error::other)?;
    Ok(admitted)
}

/// The reader side of one connection (it also starts the writer).
fn connection<'scope>(
    scope: &'scope Scope<'scope, '_>,
    conn: ConnId,
    stream: TcpStream,
    hub: SyncSender<Input>,
    config: &HubConfig,
) -> io::Result<()> {
    let remote_addr = stream.peer_addr()?;
    let ws = Connection::server(Config::default(), Instant::now()).map_err(io::Error::other)?;
    let shared = Arc::new(Shared {
        conn: Mutex::new(Conn {
            ws,
            queue: OutboundQueue::new(config.outbound),
            ping: false,
            close: None,
        }),
        wake: Condvar::new(),
    });
    // A client that stops reading fails the write instead of holding the
    // writer for ever (the hub has closed it as a slow consumer by then).
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let writer = {
        let (shared, stream) = (Arc::clone(&shared), stream.try_clone()?);
        scope.spawn(move || {
            let result = write_loop(&shared, &stream);
            // Ends the reader's `read`, whatever ended the writer.
            let _ = stream.shutdown(Shutdown::Both);
            result
        })
    };
    let result = read_loop(conn, stream, remote_addr, &shared, &hub);
    // Whatever happened, the hub forgets the connection (a no-op if it was
    // never admitted or already closed it) and the writer finishes.
    let _ = hub.send(Input::Hub(Command::Disconnected { conn }));
    shared.update(|c| c.ws.handle_eof(Instant::now()));
    writer
        .join()
        .map_err(|_| io::Error::other("writer panicked"))??;
    result
}

fn read_loop(
    conn: ConnId,
    mut stream: TcpStream,
    remote_addr: SocketAddr,
    shared: &Arc<Shared>,
    hub: &SyncSender<Input>,
) -> io::Result<()> {
    let mut buf = vec![0; 16 * 1024];
    loop {
        // Decode everything buffered; decoding may queue a pong or a close
        // echo, which the writer sends.
        let events: Vec<Event> =
            shared.update(|c| std::iter::from_fn(|| c.ws.poll_event()).collect());
        let mut answered = false;
        for event in events {
            let command = match event {
                Event::Request(request) => {
                    answered = true;
                    if !answer_request(conn, &request, remote_addr, shared, hub)? {
                        return Ok(());
                    }
                    continue;
                }
                Event::Message(Message::Text(text)) => Command::Received {
                    conn,
                    data: text.into_bytes(),
                    is_text: true,
                },
                Event::Message(Message::Binary(data)) => Command::Received {
                    conn,
                    data,
                    is_text: false,
                },
                Event::Ping(_) | Event::Pong(_) => Command::Activity { conn },
                Event::Closed { .. } => return Ok(()),
                _ => continue,
            };
            hub.send(Input::Hub(command))
                .map_err(|_| io::Error::other("hub stopped"))?;
        }
        if answered {
            // Frames that came right behind the request wait in the
            // connection until it is answered: decode them now.
            continue;
        }
        let n = match stream.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // The writer shut the socket down, or the peer vanished.
            Err(_) | Ok(0) => return Ok(()),
            Ok(n) => n,
        };
        shared.update(|c| c.ws.handle_data(Instant::now(), &buf[..n]));
    }
}

/// Runs the application: an accept loop, the hub thread, and two threads
/// per connection, until [`shut_down`] sets `stopping`. Returns the hub's
/// metrics once every connection has ended and every sender of `inputs`
/// (`to_hub` and its clones) is gone.
fn serve(
    listener: &TcpListener,
    hub: Hub,
    stopping: &AtomicBool,
    to_hub: SyncSender<Input>,
    inputs: Receiver<Input>,
) -> Metrics {
    let config = hub.config().clone();
    thread::scope(|scope| {
        let hub_thread = scope.spawn(move || run_hub(hub, inputs));
        let mut next_id = 0;
        for stream in listener.incoming() {
            if stopping.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            next_id += 1;
            let (conn, to_hub, config) = (ConnId(next_id), to_hub.clone(), &config);
            scope.spawn(move || {
                if let Err(e) = connection(scope, conn, stream, to_hub, config) {
                    eprintln!("{conn}: {e}");
                }
            });
        }
        drop(to_hub);
        hub_thread.join().unwrap_or_default()
    })
}

/// Graceful shutdown: the hub closes every connection with 1001 (after
/// what is queued for it), and the accept loop of the server on `addr`
/// ends.
fn shut_down(to_hub: &SyncSender<Input>, stopping: &AtomicBool, addr: SocketAddr) {
    stopping.store(true, Ordering::SeqCst);
    let _ = to_hub.send(Input::Shutdown);
    // Wakes the accept loop, which then sees `stopping`.
    let _ = TcpStream::connect(addr);
}

/// A hub with a fresh session key from the OS and HMAC tokens.
fn new_hub(config: HubConfig, auth: HmacTokenAuth) -> io::Result<Hub> {
    let mut config = config;
    let mut secret = [0; 32];
    getrandom::fill(&mut secret).map_err(io::Error::other)?;
    let mut seed = [0; 8];
    getrandom::fill(&mut seed).map_err(io::Error::other)?;
    config.session_seed = u64::from_le_bytes(seed);
    Hub::new(config, SessionSecret::new(secret), auth, AllowAll).map_err(io::Error::other)
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let mut secret = [0; 32];
    getrandom::fill(&mut secret).map_err(io::Error::other)?;
    let auth = HmacTokenAuth::new(secret).allow_anonymous(true);
    let token = auth.issue("alice", unix_secs() + 3600);
    let hub = new_hub(HubConfig::default(), auth)?;
    let listener = TcpListener::bind(&addr)?;
    let addr = listener.local_addr()?;
    println!("hub on ws://{addr}/ (anonymous), or as alice: ws://{addr}/?token={token}");
    println!("press Enter (or close stdin) to shut down gracefully");
    let (to_hub, inputs) = sync_channel(1024);
    let stopping = AtomicBool::new(false);
    let control = to_hub.clone();
    let metrics = thread::scope(|scope| {
        scope.spawn(|| {
            let _ = io::stdin().lines().next();
            shut_down(&control, &stopping, addr);
            drop(control);
        });
        serve(&listener, hub, &stopping, to_hub, inputs)
    });
    println!("done: {metrics:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::Message as WsMessage;

    type Client = tungstenite::WebSocket<TcpStream>;

    /// Every read in the tests fails after this instead of hanging.
    const LIMIT: Duration = Duration::from_secs(10);

    fn open(addr: SocketAddr, query: &str) -> Result<Client, tungstenite::Error> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(LIMIT))?;
        let url = format!("ws://{addr}/{query}");
        tungstenite::client(url, stream)
            .map(|(ws, _)| ws)
            .map_err(|e| match e {
                tungstenite::HandshakeError::Failure(e) => e,
                tungstenite::HandshakeError::Interrupted(_) => {
                    io::Error::from(ErrorKind::WouldBlock).into()
                }
            })
    }

    /// The next text message, answering pings on the way.
    fn next_text(ws: &mut Client) -> String {
        loop {
            match ws.read().unwrap() {
                WsMessage::Text(text) => return text.as_str().to_owned(),
                WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn send(ws: &mut Client, json: &str) {
        ws.send(WsMessage::text(json)).unwrap();
    }

    /// Runs `conversation` against the application on a free loopback
    /// port; returns the hub's final metrics. The conversation gets a
    /// function that shuts the server down; if it panics, the server is
    /// shut down all the same before the panic goes on, so a failure never
    /// hangs.
    fn with_server(hub: Hub, conversation: impl FnOnce(SocketAddr, &dyn Fn())) -> Metrics {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (to_hub, inputs) = sync_channel(64);
        let control = to_hub.clone();
        let stopping = AtomicBool::new(false);
        thread::scope(|scope| {
            let server = scope.spawn(|| serve(&listener, hub, &stopping, to_hub, inputs));
            let stop = || shut_down(&control, &stopping, addr);
            let run = std::panic::AssertUnwindSafe(|| conversation(addr, &stop));
            let outcome = std::panic::catch_unwind(run);
            stop();
            drop(control);
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
            server.join().unwrap()
        })
    }

    #[test]
    fn clients_talk_through_the_embedded_hub() {
        let auth = HmacTokenAuth::new(*b"a test secret, not a real one!!!");
        let (alice, bob) = (auth.issue("alice", u64::MAX), auth.issue("bob", u64::MAX));
        let config = HubConfig {
            // Short, so the hub thread's real-clock timer fires in the test.
            ping_interval: Duration::from_millis(50),
            ..HubConfig::default()
        };
        let hub = new_hub(config, auth).unwrap();
        let metrics = with_server(hub, |addr, shut_down| {
            // A bad token never gets past the upgrade.
            match open(addr, "?token=forged") {
                Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
                other => panic!("expected 401, got {:?}", other.map(|_| ())),
            }

            let mut a = open(addr, &format!("?token={alice}")).unwrap();
            let mut b = open(addr, &format!("?token={bob}")).unwrap();
            for (ws, user) in [(&mut a, "alice"), (&mut b, "bob")] {
                let welcome = next_text(ws);
                assert!(welcome.starts_with(r#"{"type":"welcome""#), "{welcome}");
                assert!(
                    welcome.contains(&format!(r#""user":"{user}""#)),
                    "{welcome}"
                );
                send(ws, r#"{"type":"join","room":"lobby"}"#);
                assert_eq!(
                    next_text(ws),
                    r#"{"type":"ack","op":"join","room":"lobby"}"#
                );
            }

            send(
                &mut a,
                r#"{"type":"publish","room":"lobby","id":"m1","data":"hi"}"#,
            );
            let message =
                r#"{"type":"message","seq":1,"room":"lobby","id":"m1","from":"alice","data":"hi"}"#;
            assert_eq!(
                next_text(&mut a),
                r#"{"type":"ack","op":"publish","id":"m1"}"#
            );
            assert_eq!(next_text(&mut a), message);
            assert_eq!(next_text(&mut b), message);

            // Heartbeats: the hub's timer makes the writer send a ping.
            match b.read().unwrap() {
                WsMessage::Ping(_) => {}
                other => panic!("expected a ping, got {other:?}"),
            }

            // Graceful shutdown: every client gets close 1001.
            shut_down();
            for ws in [&mut a, &mut b] {
                loop {
                    match ws.read() {
                        Ok(WsMessage::Close(Some(frame))) => {
                            assert_eq!(u16::from(frame.code), 1001);
                            break;
                        }
                        Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => {}
                        other => panic!("expected close 1001, got {other:?}"),
                    }
                }
                // tungstenite answers the close; the server then ends it.
                while ws.read().is_ok() {}
            }
        });
        assert_eq!(metrics.connections, 0);
        assert_eq!(metrics.connections_total, 2);
        assert_eq!(metrics.publishes, 1);
    }
}
