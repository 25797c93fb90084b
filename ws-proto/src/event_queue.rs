//! The queue of events waiting for `poll_event`.
//!
//! Frames are decoded one event at a time, so the queue almost always holds
//! zero or one event: that one lives in a slot inside the connection, and
//! the heap-allocated overflow is only touched when several events pile up
//! (an error followed by its close, say).

use std::collections::VecDeque;

use crate::message::Event;

#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    /// The oldest event, if any.
    first: Option<Event>,
    /// Later events, in order. Boxed on purpose (against clippy's
    /// `box_collection`): an idle connection then pays one pointer, not a
    /// 32-byte `VecDeque`, and the extra allocation only happens when
    /// events pile up.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Event>>>,
}

impl EventQueue {
    pub(crate) fn push(&mut self, event: Event) {
        if self.first.is_none() {
            self.first = Some(event);
        } else {
            self.rest.get_or_insert_with(Box::default).push_back(event);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        let event = self.first.take()?;
        self.first = self.rest.as_mut().and_then(|rest| rest.pop_front());
        Some(event)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Frees the overflow's memory when it is empty.
    pub(crate) fn release_if_empty(&mut self) {
        if self.rest.as_ref().is_some_and(|rest| rest.is_empty()) {
            self.rest = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_slot_and_overflow() {
        let mut q = EventQueue::default();
        assert!(q.is_empty());
        for i in 0..5u8 {
            q.push(Event::Ping(vec![i].into()));
        }
        for i in 0..3u8 {
            assert_eq!(q.pop(), Some(Event::Ping(vec![i].into())));
        }
        q.push(Event::Ping(vec![9].into()));
        let rest: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, [3u8, 4, 9].map(|i| Event::Ping(vec![i].into())));
        assert!(q.is_empty());
        q.release_if_empty();
    }
}
