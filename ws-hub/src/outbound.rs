//! A bounded per-connection outbound queue with a slow-consumer policy.
//!
//! The hub emits [`Action::Deliver`](crate::Action::Deliver); an adapter's
//! connection task pushes each payload here and pops when the socket is
//! writable. The queue never grows beyond its limits: when full it either
//! reports [`PushOutcome::Overflow`] (policy [`SlowConsumerPolicy::Disconnect`];
//! the caller closes the connection, see [`OutboundQueue::CLOSE_CODE`]) or
//! drops its oldest non-essential messages
//! ([`SlowConsumerPolicy::DropOldest`]) and, before the next message it
//! hands out, injects a `{"type":"dropped","count":N}` notice so the client
//! knows. Essential payloads (acks, errors, notices) are never dropped.
//!
//! An empty queue holds no storage: its buffer is allocated by the first
//! push and freed again when the last message is taken, so the many idle
//! connections of a hub cost nothing here.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::action::Payload;

/// What to do when a connection's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Refuse the message; the caller closes the connection (the session
    /// stays resumable, so the client can reconnect and catch up).
    #[default]
    Disconnect,
    /// Drop the oldest non-essential messages to make room and tell the
    /// client how many were dropped.
    DropOldest,
}

/// Limits of an [`OutboundQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundConfig {
    /// Maximum queued messages. Default 1024.
    pub max_messages: usize,
    /// Maximum queued bytes. Default 1 MiB.
    pub max_bytes: usize,
    /// Behaviour when full. Default [`SlowConsumerPolicy::Disconnect`].
    pub policy: SlowConsumerPolicy,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            max_messages: 1024,
            max_bytes: 1 << 20,
            policy: SlowConsumerPolicy::Disconnect,
        }
    }
}

/// Result of [`OutboundQueue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum PushOutcome {
    /// The payload was queued.
    Queued,
    /// The payload was queued after dropping `n` older non-essential
    /// messages (policy `DropOldest`).
    DroppedOldest(usize),
    /// The queue is full and the payload was **not** queued. The caller
    /// MUST close the connection (code [`OutboundQueue::CLOSE_CODE`]) and
    /// SHOULD tell the hub with
    /// [`Command::Overflowed`](crate::Command::Overflowed).
    Overflow,
}

/// A bounded FIFO of [`Payload`]s for one connection.
#[derive(Debug)]
pub struct OutboundQueue {
    config: OutboundConfig,
    items: VecDeque<Payload>,
    bytes: usize,
    /// Messages dropped since the last `dropped` notice (saturating).
    dropped_pending: u32,
    /// Messages queued since the last [`release_if_empty`](Self::release_if_empty)
    /// (saturating): past one, the buffer is kept when the queue drains.
    recent: u32,
    dropped_total: u64,
}

impl OutboundQueue {
    /// Close code to use on [`PushOutcome::Overflow`]: 1013 "try again
    /// later" — the client may reconnect and resume its session.
    pub const CLOSE_CODE: u16 = 1013;
    /// Close reason to use on [`PushOutcome::Overflow`].
    pub const CLOSE_REASON: &'static str = "slow consumer";

    /// An empty queue.
    pub fn new(config: OutboundConfig) -> Self {
        Self {
            config,
            items: VecDeque::new(),
            bytes: 0,
            dropped_pending: 0,
            recent: 0,
            dropped_total: 0,
        }
    }

    fn fits(&self, extra: usize) -> bool {
        self.items.len() < self.config.max_messages
            && self.bytes.saturating_add(extra) <= self.config.max_bytes
    }

    /// Queues `payload`, applying the slow-consumer policy when full.
    pub fn push(&mut self, payload: Payload) -> PushOutcome {
        let len = payload.len();
        if self.fits(len) {
            self.enqueue(payload);
            return PushOutcome::Queued;
        }
        if self.config.policy == SlowConsumerPolicy::Disconnect {
            return PushOutcome::Overflow;
        }
        // A single message bigger than the whole budget can never fit.
        if len > self.config.max_bytes {
            if payload.essential {
                return PushOutcome::Overflow;
            }
            self.dropped_pending = self.dropped_pending.saturating_add(1);
            self.dropped_total += 1;
            return PushOutcome::DroppedOldest(1);
        }
        let mut dropped = 0;
        while !self.fits(len) {
            let Some(pos) = self.items.iter().position(|p| !p.essential) else {
                break;
            };
            if let Some(old) = self.items.remove(pos) {
                self.bytes -= old.len();
                dropped += 1;
            }
        }
        let pending = u32::try_from(dropped).unwrap_or(u32::MAX);
        self.dropped_pending = self.dropped_pending.saturating_add(pending);
        self.dropped_total += dropped as u64;
        if self.fits(len) {
            self.enqueue(payload);
            PushOutcome::DroppedOldest(dropped)
        } else if payload.essential {
            // Only essential messages are queued and they fill the budget.
            PushOutcome::Overflow
        } else {
            self.dropped_pending = self.dropped_pending.saturating_add(1);
            self.dropped_total += 1;
            PushOutcome::DroppedOldest(dropped + 1)
        }
    }

    fn enqueue(&mut self, payload: Payload) {
        self.bytes += payload.len();
        self.items.push_back(payload);
        self.recent = self.recent.saturating_add(1);
    }

    /// The next payload to write. If messages were dropped since the last
    /// pop, a `dropped` notice comes first.
    pub fn pop(&mut self) -> Option<Payload> {
        if self.dropped_pending > 0 {
            let n = self.dropped_pending;
            self.dropped_pending = 0;
            return Some(Payload::control(Bytes::from(format!(
                r#"{{"type":"dropped","count":{n}}}"#
            ))));
        }
        let p = self.items.pop_front()?;
        self.bytes -= p.len();
        if self.items.is_empty() && self.recent <= 1 {
            // Drained after a single message (a welcome, an answer): give
            // the buffer back, so an idle connection keeps none. A
            // connection that is sent messages one after another keeps it
            // until [`release_if_empty`](Self::release_if_empty): an
            // allocation per heartbeat, not one per message.
            self.items = VecDeque::new();
        }
        Some(p)
    }

    /// Gives the buffer back if nothing is queued. Adapters call this when
    /// the connection has been quiet for a while (at each heartbeat ping),
    /// so that a connection that was busy holds no buffer once idle.
    pub fn release_if_empty(&mut self) {
        if self.items.is_empty() {
            self.items = VecDeque::new();
        }
        self.recent = 0;
    }

    /// Queued messages (not counting a pending drop notice).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing (not even a drop notice) is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.dropped_pending == 0
    }

    /// Queued bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of buffer storage the queue holds (0 when empty).
    pub fn storage_bytes(&self) -> usize {
        self.items.capacity() * size_of::<Payload>()
    }

    /// Messages dropped over the queue's lifetime.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// The limits.
    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Payload {
        Payload {
            head: Bytes::new(),
            body: Bytes::from(vec![b'x'; n]),
            essential: false,
        }
    }

    fn ctl(n: usize) -> Payload {
        Payload::control(Bytes::from(vec![b'c'; n]))
    }

    #[test]
    fn a_busy_queue_keeps_its_buffer_until_released_and_an_idle_one_keeps_none() {
        let mut q = OutboundQueue::new(OutboundConfig::default());
        // A single message (a welcome): drained, the buffer goes back.
        assert_eq!(q.push(ctl(5)), PushOutcome::Queued);
        assert!(q.pop().is_some());
        assert_eq!(q.items.capacity(), 0);
        // Messages one after another: the buffer stays between them.
        for _ in 0..3 {
            assert_eq!(q.push(msg(5)), PushOutcome::Queued);
            assert!(q.pop().is_some());
            assert!(q.items.capacity() > 0);
        }
        assert!(q.pop().is_none());
        // Quiet for a while: released, and counting starts again.
        q.release_if_empty();
        assert_eq!(q.items.capacity(), 0);
        assert_eq!(q.push(msg(5)), PushOutcome::Queued);
        assert!(q.pop().is_some());
        assert_eq!(q.items.capacity(), 0);
        // A release with messages queued keeps them, in order.
        for n in [1, 2] {
            assert_eq!(q.push(msg(n)), PushOutcome::Queued);
        }
        q.release_if_empty();
        assert_eq!(q.pop().map(|p| p.len()), Some(1));
        assert_eq!(q.pop().map(|p| p.len()), Some(2));
        assert!(q.is_empty());
    }

    fn cfg(policy: SlowConsumerPolicy) -> OutboundConfig {
        OutboundConfig {
            max_messages: 3,
            max_bytes: 100,
            policy,
        }
    }

    #[test]
    fn disconnect_policy_by_count_and_bytes() {
        let mut q = OutboundQueue::new(cfg(SlowConsumerPolicy::Disconnect));
        assert_eq!(q.push(msg(10)), PushOutcome::Queued);
        assert_eq!(q.push(msg(10)), PushOutcome::Queued);
        assert_eq!(q.push(msg(10)), PushOutcome::Queued);
        assert_eq!(q.push(msg(1)), PushOutcome::Overflow);
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some(msg(10)));
        assert_eq!(q.push(msg(81)), PushOutcome::Overflow);
        assert_eq!(q.push(msg(80)), PushOutcome::Queued);
        assert_eq!(q.bytes(), 100);
    }

    #[test]
    fn storage_is_held_only_while_messages_wait() {
        let mut q = OutboundQueue::new(cfg(SlowConsumerPolicy::Disconnect));
        assert_eq!(q.storage_bytes(), 0);
        assert_eq!(q.push(msg(10)), PushOutcome::Queued);
        assert_eq!(q.push(msg(10)), PushOutcome::Queued);
        assert!(q.storage_bytes() > 0);
        assert_eq!(q.pop(), Some(msg(10)));
        assert!(q.storage_bytes() > 0, "one message still waits");
        assert_eq!(q.pop(), Some(msg(10)));
        assert!(q.storage_bytes() > 0, "kept between messages while busy");
        assert_eq!(q.pop(), None);
        q.release_if_empty();
        assert_eq!(q.storage_bytes(), 0, "quiet and drained: nothing held");
    }

    #[test]
    fn drop_oldest_policy_injects_notice_and_keeps_essentials() {
        let mut q = OutboundQueue::new(cfg(SlowConsumerPolicy::DropOldest));
        assert_eq!(q.push(msg(10)), PushOutcome::Queued);
        assert_eq!(q.push(ctl(10)), PushOutcome::Queued);
        assert_eq!(q.push(msg(11)), PushOutcome::Queued);
        assert_eq!(q.push(msg(12)), PushOutcome::DroppedOldest(1));
        assert_eq!(q.push(msg(13)), PushOutcome::DroppedOldest(1));
        assert_eq!(q.len(), 3);
        // Notice first, then the essential message, then the newest.
        assert_eq!(
            q.pop().map(|p| p.to_vec()),
            Some(br#"{"type":"dropped","count":2}"#.to_vec())
        );
        assert_eq!(q.pop(), Some(ctl(10)));
        assert_eq!(q.pop(), Some(msg(12)));
        assert_eq!(q.pop(), Some(msg(13)));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
        assert_eq!(q.dropped_total(), 2);
    }

    #[test]
    fn drop_oldest_by_bytes_and_oversized() {
        let mut q = OutboundQueue::new(cfg(SlowConsumerPolicy::DropOldest));
        assert_eq!(q.push(msg(40)), PushOutcome::Queued);
        assert_eq!(q.push(msg(40)), PushOutcome::Queued);
        assert_eq!(q.push(msg(50)), PushOutcome::DroppedOldest(1));
        assert_eq!(q.bytes(), 90);
        // Larger than the whole budget: dropped itself, queue untouched.
        assert_eq!(q.push(msg(101)), PushOutcome::DroppedOldest(1));
        assert_eq!(q.bytes(), 90);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn essentials_alone_overflow() {
        let mut q = OutboundQueue::new(cfg(SlowConsumerPolicy::DropOldest));
        for _ in 0..3 {
            assert_eq!(q.push(ctl(1)), PushOutcome::Queued);
        }
        assert_eq!(q.push(ctl(1)), PushOutcome::Overflow);
        // A non-essential message is dropped rather than overflowing.
        assert_eq!(q.push(msg(1)), PushOutcome::DroppedOldest(1));
        assert!(q.len() <= 3 && q.bytes() <= 100);
    }
}
