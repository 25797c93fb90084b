//! The per-connection mailbox between the hub task and a connection task:
//! the hub's bounded [`OutboundQueue`] plus pending ping and close orders.
//! The hub pushes; the connection task pops when its socket has room.

use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use ws_hub::{CloseReason, OutboundConfig, OutboundQueue, Payload, PushOutcome};

/// Work waiting for a connection task.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Messages are queued.
    pub(crate) messages: bool,
    /// A ping was ordered.
    pub(crate) ping: bool,
    /// A close was ordered.
    pub(crate) close: Option<(u16, CloseReason)>,
}

impl Pending {
    fn any(&self) -> bool {
        self.messages || self.ping || self.close.is_some()
    }
}

struct State {
    queue: OutboundQueue,
    ping: bool,
    close: Option<(u16, CloseReason)>,
    waker: Option<Waker>,
    /// The connection task has finished: nothing will be written any more.
    gone: bool,
}

/// One connection's mailbox.
pub(crate) struct Outbox {
    state: Mutex<State>,
}

impl Outbox {
    pub(crate) fn new(config: OutboundConfig) -> Self {
        Self {
            state: Mutex::new(State {
                queue: OutboundQueue::new(config),
                ping: false,
                close: None,
                waker: None,
                gone: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(state: &mut State) {
        if let Some(w) = state.waker.take() {
            w.wake();
        }
    }

    /// Queues a message (hub side). Once the connection has gone, the
    /// message is dropped: its `Disconnected` command is on the way to the
    /// hub, and a connection that has ended is not a slow consumer.
    pub(crate) fn push(&self, payload: Payload) -> PushOutcome {
        let mut s = self.lock();
        if s.gone {
            return PushOutcome::Queued;
        }
        let outcome = s.queue.push(payload);
        Self::wake(&mut s);
        outcome
    }

    /// Orders a ping (hub side). The hub pings a connection that has been
    /// quiet for a heartbeat interval, so this is also when a queue that
    /// kept its buffer between messages gives it back if drained.
    pub(crate) fn ping(&self) {
        let mut s = self.lock();
        s.queue.release_if_empty();
        s.ping = true;
        Self::wake(&mut s);
    }

    /// Orders a close after the queued messages (hub side).
    pub(crate) fn close(&self, code: u16, reason: CloseReason) {
        let mut s = self.lock();
        s.close.get_or_insert((code, reason));
        Self::wake(&mut s);
    }

    /// What is waiting (connection side). Always registers for a wake-up:
    /// the caller may leave a ready answer unused while its socket is full,
    /// and must still hear of a later order (a close for a peer that has
    /// stopped reading).
    pub(crate) fn poll_pending(&self, cx: &Context<'_>) -> Poll<Pending> {
        let mut s = self.lock();
        let pending = Pending {
            messages: !s.queue.is_empty(),
            ping: s.ping,
            close: s.close.clone(),
        };
        if s.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        if pending.any() {
            Poll::Ready(pending)
        } else {
            Poll::Pending
        }
    }

    /// Takes the ping order.
    pub(crate) fn take_ping(&self) -> bool {
        std::mem::take(&mut self.lock().ping)
    }

    /// Marks the connection as ended (connection side) and frees what was
    /// queued for it.
    pub(crate) fn detach(&self) {
        let mut s = self.lock();
        s.gone = true;
        s.queue = OutboundQueue::new(*s.queue.config());
        s.waker = None;
    }

    /// Takes the next queued message.
    pub(crate) fn pop(&self) -> Option<Payload> {
        self.lock().queue.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn orders_and_messages_are_reported_and_taken() {
        let outbox = Outbox::new(OutboundConfig::default());
        let waker = Waker::noop();
        let cx = Context::from_waker(waker);
        assert!(outbox.poll_pending(&cx).is_pending());
        assert_eq!(
            outbox.push(Payload::control(Bytes::from_static(b"{}"))),
            PushOutcome::Queued
        );
        outbox.ping();
        outbox.close(1001, "bye".into());
        outbox.close(1000, "later orders do not replace the first".into());
        let Poll::Ready(p) = outbox.poll_pending(&cx) else {
            panic!()
        };
        assert_eq!(
            p,
            Pending {
                messages: true,
                ping: true,
                close: Some((1001, "bye".into()))
            }
        );
        assert!(outbox.take_ping());
        assert!(outbox.pop().is_some());
        assert!(outbox.pop().is_none());
    }

    #[test]
    fn a_connection_that_has_gone_is_never_reported_as_overflowing() {
        let config = OutboundConfig {
            max_messages: 2,
            ..OutboundConfig::default()
        };
        let outbox = Outbox::new(config);
        let message = || Payload::control(Bytes::from_static(b"{}"));
        assert_eq!(outbox.push(message()), PushOutcome::Queued);
        assert_eq!(outbox.push(message()), PushOutcome::Queued);
        assert_eq!(outbox.push(message()), PushOutcome::Overflow);
        outbox.detach();
        assert!(outbox.pop().is_none(), "what was queued is freed");
        for _ in 0..10 {
            assert_eq!(outbox.push(message()), PushOutcome::Queued);
        }
        assert!(outbox.pop().is_none());
    }
}
