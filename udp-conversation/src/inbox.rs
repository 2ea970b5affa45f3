//! A conversation's inbox: a bounded FIFO of datagrams the demultiplexer fills without ever
//! waiting, and the conversation's one receiver drains.
//!
//! # Design
//!
//! One producer (the core's demultiplexer) and one consumer (the conversation's
//! [`Conversation::recv`](crate::Conversation::recv), which takes `&mut self`, so there is never
//! more than one waiting receiver and one stored waker is enough). The queue never holds more
//! than `capacity` datagrams: when it is full, the [`OverflowPolicy`] picks the datagram that
//! goes, and the caller counts it. Arrival order is kept. A zero-length datagram is an empty
//! `Vec`, data like any other; the end of the conversation's input is the inbox being closed.
//!
//! The inbox also counts arrivals, which the idle sweep reads (a counter, not a clock read per
//! datagram).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::task::{Context, Poll, Waker};

/// Which datagram goes when a conversation's inbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Drop the datagram that just arrived (the default): what was queued is kept.
    #[default]
    DropNewest,
    /// Drop the oldest queued datagram to make room: the freshest data is kept.
    DropOldest,
}

pub(crate) struct Inbox {
    queue: RefCell<VecDeque<Vec<u8>>>,
    capacity: usize,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    arrivals: Cell<u64>,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("queued", &self.queue.borrow().len())
            .field("capacity", &self.capacity)
            .field("closed", &self.closed.get())
            .finish()
    }
}

impl Inbox {
    /// An empty inbox holding at most `capacity` (at least 1) datagrams.
    pub(crate) fn new(capacity: usize) -> Inbox {
        Inbox {
            queue: RefCell::new(VecDeque::new()),
            capacity: capacity.max(1),
            waker: RefCell::new(None),
            closed: Cell::new(false),
            arrivals: Cell::new(0),
        }
    }

    /// Queues `datagram` (never waits); returns `false` if the policy dropped one datagram
    /// (this one or the oldest) to stay within the capacity. Every arrival, kept or not,
    /// counts as activity for the idle timeout.
    pub(crate) fn push(&self, datagram: Vec<u8>, policy: OverflowPolicy) -> bool {
        self.arrivals.set(self.arrivals.get() + 1);
        if self.closed.get() {
            return false;
        }
        let kept = {
            let mut queue = self.queue.borrow_mut();
            if queue.len() < self.capacity {
                queue.push_back(datagram);
                true
            } else {
                if policy == OverflowPolicy::DropOldest {
                    queue.pop_front();
                    queue.push_back(datagram);
                }
                false
            }
        };
        self.wake();
        kept
    }

    /// Ends the input: the receiver drains what is queued, then sees the end.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.wake();
    }

    fn wake(&self) {
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next datagram, `None` once closed and drained.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        if let Some(d) = self.queue.borrow_mut().pop_front() {
            return Poll::Ready(Some(d));
        }
        if self.closed.get() {
            return Poll::Ready(None);
        }
        let mut waker = self.waker.borrow_mut();
        match waker.as_ref() {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next datagram if one is queued.
    pub(crate) fn try_recv(&self) -> Option<Vec<u8>> {
        self.queue.borrow_mut().pop_front()
    }

    /// Datagrams queued now.
    pub(crate) fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Datagrams that arrived so far, kept or not.
    pub(crate) fn arrivals(&self) -> u64 {
        self.arrivals.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(inbox: &Inbox) -> Poll<Option<Vec<u8>>> {
        inbox.poll_recv(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn keeps_order_and_drops_newest_when_full() {
        let inbox = Inbox::new(2);
        assert!(inbox.push(b"a".to_vec(), OverflowPolicy::DropNewest));
        assert!(inbox.push(Vec::new(), OverflowPolicy::DropNewest));
        assert!(!inbox.push(b"c".to_vec(), OverflowPolicy::DropNewest));
        assert_eq!(inbox.arrivals(), 3);
        assert_eq!(poll(&inbox), Poll::Ready(Some(b"a".to_vec())));
        assert_eq!(poll(&inbox), Poll::Ready(Some(Vec::new())), "empty is data");
        assert_eq!(poll(&inbox), Poll::Pending);
    }

    #[test]
    fn drop_oldest_keeps_the_freshest() {
        let inbox = Inbox::new(2);
        for d in [b"a", b"b", b"c"] {
            inbox.push(d.to_vec(), OverflowPolicy::DropOldest);
        }
        assert_eq!(inbox.try_recv(), Some(b"b".to_vec()));
        assert_eq!(inbox.try_recv(), Some(b"c".to_vec()));
    }

    #[test]
    fn close_drains_then_ends() {
        let inbox = Inbox::new(4);
        inbox.push(b"x".to_vec(), OverflowPolicy::DropNewest);
        inbox.close();
        assert_eq!(poll(&inbox), Poll::Ready(Some(b"x".to_vec())));
        assert_eq!(poll(&inbox), Poll::Ready(None));
        assert!(!inbox.push(b"y".to_vec(), OverflowPolicy::DropNewest));
    }
}
