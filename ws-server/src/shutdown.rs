//! Graceful shutdown: a signal that every task can wait for, and a count
//! of live connections to wait on before exiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use event_listener::{Event, EventListener};

/// The default upper bound on a graceful shutdown (`serve` and `echo`).
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

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
    ///
    /// The future is cheap to poll again and again (connection loops poll
    /// it before every message): after the first poll it only reads an
    /// atomic flag, and it takes the listener's lock again only when the
    /// task's waker changes.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            shutdown: self,
            listener: None,
            waker: None,
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

/// The future of [`Shutdown::wait`].
#[derive(Debug)]
pub struct Wait<'a> {
    shutdown: &'a Shutdown,
    listener: Option<Pin<Box<EventListener>>>,
    /// The waker the listener was last polled with.
    waker: Option<Waker>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Registered with this task already; a trigger wakes it.
            return Poll::Pending;
        }
        let listener = this
            .listener
            .get_or_insert_with(|| Box::pin(this.shutdown.trigger_event.listen()));
        // Re-check after listening: a trigger in between notified nobody.
        if this.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        if listener.as_mut().poll(cx).is_ready() {
            // Notified: the flag is set before every notification.
            this.listener = None;
            return Poll::Ready(());
        }
        this.waker = Some(cx.waker().clone());
        Poll::Pending
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
                // Trigger first: logging must not stand between a signal
                // and the shutdown (a write to a closed stderr can fail).
                shutdown.trigger();
                tracing::info!(signal, "shutting down");
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn wait_completes_on_trigger_whenever_it_comes() {
        let shutdown = Shutdown::new();
        let mut wait = Box::pin(shutdown.wait());
        // Pending, twice (the second poll takes the cheap path).
        assert!(block_on(poll_once(wait.as_mut())).is_none());
        assert!(block_on(poll_once(wait.as_mut())).is_none());
        let other = shutdown.clone();
        let trigger = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            other.trigger();
        });
        block_on(wait); // woken by the trigger, on another waker than before
        trigger.join().expect("trigger thread");
        block_on(shutdown.wait()); // already triggered: ready at once
    }

    #[test]
    fn drained_tracks_guards() {
        let shutdown = Shutdown::new();
        let a = shutdown.track();
        let b = shutdown.track();
        assert_eq!(shutdown.active(), 2);
        drop(a);
        assert!(block_on(poll_once(Box::pin(shutdown.drained()))).is_none());
        drop(b);
        block_on(shutdown.drained());
    }
}
