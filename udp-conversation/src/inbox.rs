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
//! Every inbox of a core also draws on one [`QueueBudget`] of bytes: a datagram that does not
//! fit is dropped (the newest; counted by the caller), so what a core's conversations hold
//! queued is bounded by the budget, not by conversations x capacity x datagram size.
//!
//! The inbox also counts arrivals, which the idle sweep reads (a counter, not a clock read per
//! datagram).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::stats::DropReason;

/// What a queued datagram costs the budget beyond its bytes: its `Vec` and its queue slot.
const DATAGRAM_OVERHEAD: usize = 32;

fn cost(datagram: &[u8]) -> usize {
    datagram.len() + DATAGRAM_OVERHEAD
}

/// The bytes one core's inboxes may hold queued, together.
#[derive(Debug)]
pub(crate) struct QueueBudget {
    max: usize,
    used: Cell<usize>,
}

impl QueueBudget {
    pub(crate) fn new(max: usize) -> QueueBudget {
        QueueBudget {
            max,
            used: Cell::new(0),
        }
    }

    fn try_take(&self, n: usize) -> bool {
        match self.used.get().checked_add(n) {
            Some(used) if used <= self.max => {
                self.used.set(used);
                true
            }
            _ => false,
        }
    }

    fn give(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
    }

    /// Bytes held now.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.get()
    }
}

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
    budget: Rc<QueueBudget>,
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
    /// An empty inbox holding at most `capacity` (at least 1) datagrams, drawing on `budget`.
    pub(crate) fn new(capacity: usize, budget: Rc<QueueBudget>) -> Inbox {
        Inbox {
            queue: RefCell::new(VecDeque::new()),
            capacity: capacity.max(1),
            budget,
            waker: RefCell::new(None),
            closed: Cell::new(false),
            arrivals: Cell::new(0),
        }
    }

    /// Queues `datagram` (never waits). `Err` names the one datagram that went instead: this
    /// one (closed inbox, or no room in the core's budget), or with a full inbox the one the
    /// policy chose. Every arrival, kept or not, counts as activity for the idle timeout.
    pub(crate) fn push(&self, datagram: Vec<u8>, policy: OverflowPolicy) -> Result<(), DropReason> {
        self.note_arrival();
        if self.closed.get() {
            return Err(DropReason::Unread);
        }
        let cost = cost(&datagram);
        if !self.budget.try_take(cost) {
            return Err(DropReason::OverBudget);
        }
        let outcome = {
            let mut queue = self.queue.borrow_mut();
            if queue.len() < self.capacity {
                queue.push_back(datagram);
                Ok(())
            } else {
                match policy {
                    OverflowPolicy::DropNewest => self.budget.give(cost),
                    OverflowPolicy::DropOldest => {
                        if let Some(oldest) = queue.pop_front() {
                            self.budget.give(self::cost(&oldest));
                        }
                        queue.push_back(datagram);
                    }
                }
                Err(DropReason::InboxFull)
            }
        };
        self.wake();
        outcome
    }

    /// Counts an arrival that is not queued (a datagram dropped before it got here).
    pub(crate) fn note_arrival(&self) {
        self.arrivals.set(self.arrivals.get() + 1);
    }

    /// Lets go of every queued datagram (the conversation ended; the caller counted them).
    pub(crate) fn clear(&self) {
        let queue = std::mem::take(&mut *self.queue.borrow_mut());
        self.budget.give(queue.iter().map(|d| cost(d)).sum());
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
        if let Some(d) = self.try_recv() {
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
        let d = self.queue.borrow_mut().pop_front()?;
        self.budget.give(cost(&d));
        Some(d)
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

    fn inbox(capacity: usize) -> Inbox {
        Inbox::new(capacity, Rc::new(QueueBudget::new(usize::MAX)))
    }

    fn poll(inbox: &Inbox) -> Poll<Option<Vec<u8>>> {
        inbox.poll_recv(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn keeps_order_and_drops_newest_when_full() {
        let inbox = inbox(2);
        assert_eq!(
            inbox.push(b"a".to_vec(), OverflowPolicy::DropNewest),
            Ok(())
        );
        assert_eq!(inbox.push(Vec::new(), OverflowPolicy::DropNewest), Ok(()));
        assert_eq!(
            inbox.push(b"c".to_vec(), OverflowPolicy::DropNewest),
            Err(DropReason::InboxFull)
        );
        assert_eq!(inbox.arrivals(), 3);
        assert_eq!(poll(&inbox), Poll::Ready(Some(b"a".to_vec())));
        assert_eq!(poll(&inbox), Poll::Ready(Some(Vec::new())), "empty is data");
        assert_eq!(poll(&inbox), Poll::Pending);
    }

    #[test]
    fn drop_oldest_keeps_the_freshest() {
        let inbox = inbox(2);
        for d in [b"a", b"b", b"c"] {
            let _ = inbox.push(d.to_vec(), OverflowPolicy::DropOldest);
        }
        assert_eq!(inbox.try_recv(), Some(b"b".to_vec()));
        assert_eq!(inbox.try_recv(), Some(b"c".to_vec()));
    }

    #[test]
    fn close_drains_then_ends() {
        let inbox = inbox(4);
        inbox
            .push(b"x".to_vec(), OverflowPolicy::DropNewest)
            .unwrap();
        inbox.close();
        assert_eq!(poll(&inbox), Poll::Ready(Some(b"x".to_vec())));
        assert_eq!(poll(&inbox), Poll::Ready(None));
        assert_eq!(
            inbox.push(b"y".to_vec(), OverflowPolicy::DropNewest),
            Err(DropReason::Unread)
        );
    }

    #[test]
    fn inboxes_share_the_budget_and_give_back_what_they_let_go() {
        let budget = Rc::new(QueueBudget::new(3 * (100 + DATAGRAM_OVERHEAD)));
        let a = Inbox::new(8, budget.clone());
        let b = Inbox::new(8, budget.clone());
        let d = vec![7u8; 100];
        for policy in [OverflowPolicy::DropNewest, OverflowPolicy::DropOldest] {
            assert_eq!(a.push(d.clone(), policy), Ok(()));
            assert_eq!(a.push(d.clone(), policy), Ok(()));
            assert_eq!(b.push(d.clone(), policy), Ok(()));
            assert_eq!(b.push(d.clone(), policy), Err(DropReason::OverBudget));
            assert_eq!(a.arrivals() + b.arrivals(), 4);
            assert_eq!(a.try_recv().map(|d| d.len()), Some(100));
            assert_eq!(
                b.push(d.clone(), policy),
                Ok(()),
                "a read gave its bytes back"
            );
            a.clear();
            let _ = b.try_recv();
            let _ = b.try_recv();
            assert_eq!(budget.used(), 0);
            a.arrivals.set(0);
            b.arrivals.set(0);
        }
    }

    #[test]
    fn drop_oldest_gives_the_oldest_bytes_back() {
        let budget = Rc::new(QueueBudget::new(usize::MAX));
        let inbox = Inbox::new(1, budget.clone());
        inbox.push(vec![0; 10], OverflowPolicy::DropOldest).unwrap();
        assert_eq!(
            inbox.push(vec![0; 50], OverflowPolicy::DropOldest),
            Err(DropReason::InboxFull)
        );
        assert_eq!(budget.used(), 50 + DATAGRAM_OVERHEAD);
    }
}
