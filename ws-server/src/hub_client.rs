//! The `hub-client` subcommand: the hub client (`ws-hub-client`) for
//! scripts and for checks from outside.
//!
//! It joins one room, publishes each stdin line as `data` (a JSON string),
//! prints every delivered `message` object as one JSON line on stdout and
//! every gap as one JSON line on stderr, reconnecting and resuming on its
//! own. At the end of stdin it waits for every publish to be answered,
//! closes with 1000 and exits 0 (1 if a publish was refused or the client
//! stopped for good, with the reason on stderr).

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use futures_lite::future;
use ws_async::{Runtime, WsConfig};
use ws_hub_client::{ClientError, ClientOptions, HubEvent, Reply, State};

/// Publishes waiting for their answer at most (well below the client's
/// pending buffer, so a fast stdin never fills it).
const WINDOW: usize = 256;

/// Runs the subcommand; returns the exit code.
pub async fn run_hub_client<R: Runtime>(
    rt: R,
    url: &str,
    room: &str,
    token: Option<String>,
    tls: Option<Arc<ws_async::tls::rustls::ClientConfig>>,
    ws: WsConfig,
) -> Result<i32, ClientError> {
    let mut options = ClientOptions::default();
    options.token = token;
    options.tls = tls;
    options.ws = ws;
    let client = ws_hub_client::connect(rt, url, options)?;
    // Without a stdin thread there is no input: only the join happens.
    let lines = crate::task::stdin_lines().unwrap_or_else(|_| async_channel::bounded(1).1);
    // Why the client stopped for good, if it did.
    let stopped: Arc<Mutex<Option<String>>> = Arc::default();
    let printer = {
        let (events, stopped) = (client.events(), stopped.clone());
        async move {
            let mut stdout = std::io::stdout();
            while let Ok(event) = events.recv().await {
                // A closed stdout or stderr must not stop the client.
                match event {
                    HubEvent::Message(m) => {
                        let _ = writeln!(stdout, "{}", m.text).and_then(|()| stdout.flush());
                    }
                    HubEvent::Gap(g) => eprintln!("{}", g.to_json()),
                    HubEvent::RejoinFailed { room, reason } => {
                        eprintln!("rejoining {room} refused: {reason}");
                    }
                    HubEvent::State(s) if s.to == State::Closed => {
                        let code = s.code.map(|c| format!("{c} ")).unwrap_or_default();
                        if let Ok(mut st) = stopped.lock() {
                            *st = Some(format!("{code}{}", s.reason));
                        }
                    }
                    _ => {}
                }
            }
        }
    };
    let work = async {
        let mut failures = report("join", client.join(room).await);
        let mut window: VecDeque<Reply> = VecDeque::new();
        while failures == 0 {
            let Ok(line) = lines.recv().await else { break };
            window.push_back(client.publish(room, &line)?);
            if window.len() >= WINDOW
                && let Some(reply) = window.pop_front()
            {
                failures += report("publish", reply.await);
            }
        }
        for reply in window {
            failures += report("publish", reply.await);
        }
        client.close().await;
        Ok::<_, ClientError>(failures)
    };
    let ((), failures) = future::zip(printer, work).await;
    let failures = failures?;
    if let Some(reason) = stopped.lock().ok().and_then(|s| s.clone())
        && failures > 0
    {
        eprintln!("client stopped: {reason}");
    }
    Ok(if failures == 0 { 0 } else { 1 })
}

/// Prints a failed request on stderr; 1 if it failed.
fn report(what: &str, result: Result<ws_hub_client::Ack, ClientError>) -> usize {
    match result {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("error: {what}: {e}");
            1
        }
    }
}
