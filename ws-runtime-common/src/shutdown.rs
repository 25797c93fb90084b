//! Graceful shutdown: a signal that every task can wait for, and a count
//! of live connections to wait on before exiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use event_listener::Event;

/// A shutdown switch shared by the accept loop and every connection.
#[derive(Debug, Default)]
pub struct Shutdown {
    triggered: AtomicBool,
    trigger_event: Event,
    active: AtomicUsize,
    drained_event: Event,
}

impl Shutdown {
    /// A new, untriggered switch.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts the shutdown; every `wait` completes.
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        self.trigger_event.notify(usize::MAX);
    }

    /// Whether the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Completes once the shutdown has started.
    pub async fn wait(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.trigger_event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }

    /// Counts a live connection until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> ConnectionGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        ConnectionGuard(self.clone())
    }

    /// Live connections.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Completes once no connection is live.
    pub async fn drained(&self) {
        loop {
            if self.active() == 0 {
                return;
            }
            let listener = self.drained_event.listen();
            if self.active() == 0 {
                return;
            }
            listener.await;
        }
    }
}

/// Keeps a connection counted as live (see [`Shutdown::track`]).
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Shutdown>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.drained_event.notify(usize::MAX);
        }
    }
}

/// Triggers `shutdown` on SIGINT or SIGTERM (a second signal exits at
/// once with status 130). Runs a small thread; works under any runtime.
pub fn on_signals(shutdown: Arc<Shutdown>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    tracing::warn!(signal, "second signal: exiting now");
                    std::process::exit(130);
                }
                tracing::info!(signal, "shutting down");
                shutdown.trigger();
            }
        })?;
    Ok(())
}
