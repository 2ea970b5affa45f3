//! The state shared by all handles of one channel, and the handle counting.
//!
//! Two [`WaitQueue`]s: blocked senders (channel full) and blocked receivers (channel
//! empty). Both sides use hand-off, mirrored:
//!
//! - when a message is pushed and a receiver is queued, the message is *claimed* for
//!   the head receiver (`claimed += 1`) and that receiver is notified;
//! - when a message is popped and a sender is queued, the freed slot is *reserved*
//!   for the head sender (`reserved += 1`) and that sender is notified.
//!
//! Newcomers only see unclaimed messages (`len > claimed`) and unreserved slots
//! (`len + reserved < capacity`), so they never overtake queued tasks. Invariants:
//! receivers are queued only when `len == claimed`; senders only when
//! `len + reserved == capacity`. A notified waiter that is dropped gives its claim or
//! reservation back, which is passed to the next queued waiter if any.
//!
//! Closing (explicitly, or when the last sender or the last receiver goes) wakes
//! everyone and revokes all claims and reservations: woken senders fail, woken
//! receivers take whatever is still buffered, first come first served.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::ops::Deref;
use std::rc::Rc;

use super::error::{TryRecvError, TrySendError};
use crate::sync::WaitQueue;

pub(crate) struct Chan<T> {
    buffer: RefCell<VecDeque<T>>,
    /// `None` for an unbounded channel.
    capacity: Option<usize>,
    /// Free slots reserved for notified senders that have not run yet.
    reserved: Cell<usize>,
    /// Buffered messages claimed by notified receivers that have not run yet.
    claimed: Cell<usize>,
    pub(crate) send_waiters: WaitQueue,
    pub(crate) recv_waiters: WaitQueue,
    senders: Cell<usize>,
    receivers: Cell<usize>,
    closed: Cell<bool>,
}

impl<T> Chan<T> {
    pub(crate) fn len(&self) -> usize {
        self.buffer.borrow().len()
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Pushes `value` if the channel is open and has an unreserved free slot.
    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        if self.closed.get() {
            return Err(TrySendError::Closed(value));
        }
        if matches!(self.capacity, Some(cap) if self.len() + self.reserved.get() >= cap) {
            return Err(TrySendError::Full(value));
        }
        self.push(value);
        Ok(())
    }

    /// Completes the send of a notified sender, using its reserved slot; gives the
    /// value back if the channel was closed meanwhile (the reservation was revoked).
    pub(crate) fn send_reserved(&self, value: T) -> Result<(), T> {
        if self.closed.get() {
            return Err(value);
        }
        self.reserved.set(self.reserved.get() - 1);
        self.push(value);
        Ok(())
    }

    /// A notified sender gave up: pass its reserved slot on (or free it).
    pub(crate) fn release_slot(&self) {
        if !self.closed.get() {
            self.reserved.set(self.reserved.get() - 1);
            self.offer_slot();
        }
    }

    /// Pops the oldest unclaimed message.
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let popped = {
            let mut buffer = self.buffer.borrow_mut();
            if buffer.len() > self.claimed.get() {
                buffer.pop_front()
            } else {
                None
            }
        };
        match popped {
            Some(value) => {
                self.offer_slot();
                Ok(value)
            }
            None if self.closed.get() => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Completes the receive of a notified receiver, using its claim; after a close
    /// (claims revoked) it takes whatever is left, if anything.
    pub(crate) fn recv_claimed(&self) -> Option<T> {
        if self.closed.get() {
            return self.try_recv().ok();
        }
        self.claimed.set(self.claimed.get() - 1);
        let value = self.buffer.borrow_mut().pop_front();
        self.offer_slot();
        Some(value.expect("a claimed message is buffered"))
    }

    /// A notified receiver gave up: pass its claim on (or leave the message free).
    pub(crate) fn release_claim(&self) {
        if !self.closed.get() {
            self.claimed.set(self.claimed.get() - 1);
            self.offer_message();
        }
    }

    pub(crate) fn close(&self) {
        if !self.closed.replace(true) {
            self.reserved.set(0);
            self.claimed.set(0);
            self.send_waiters.notify_all();
            self.recv_waiters.notify_all();
        }
    }

    fn push(&self, value: T) {
        self.buffer.borrow_mut().push_back(value);
        self.offer_message();
    }

    /// Hands the newest unclaimed message to the head receiver, if one is queued.
    fn offer_message(&self) {
        if !self.recv_waiters.is_empty() {
            self.claimed.set(self.claimed.get() + 1);
            self.recv_waiters.notify_one();
        }
    }

    /// Hands a free slot to the head sender, if one is queued.
    fn offer_slot(&self) {
        if !self.send_waiters.is_empty() {
            self.reserved.set(self.reserved.get() + 1);
            self.send_waiters.notify_one();
        }
    }
}

impl<T> fmt::Debug for Chan<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chan")
            .field("len", &self.buffer.try_borrow().map(|b| b.len()).ok())
            .field("capacity", &self.capacity)
            .field("closed", &self.closed.get())
            .field("senders", &self.senders.get())
            .field("receivers", &self.receivers.get())
            .field("blocked_senders", &self.send_waiters.len())
            .field("blocked_receivers", &self.recv_waiters.len())
            .finish()
    }
}

/// Creates the shared state and its first two handles.
pub(crate) fn chan<T>(capacity: Option<usize>) -> (SenderHandle<T>, ReceiverHandle<T>) {
    let chan = Rc::new(Chan {
        buffer: RefCell::new(VecDeque::with_capacity(capacity.unwrap_or(0).min(1024))),
        capacity,
        reserved: Cell::new(0),
        claimed: Cell::new(0),
        send_waiters: WaitQueue::new(),
        recv_waiters: WaitQueue::new(),
        senders: Cell::new(1),
        receivers: Cell::new(1),
        closed: Cell::new(false),
    });
    (SenderHandle(chan.clone()), ReceiverHandle(chan))
}

/// A counted reference from the sending side; the last one closes the channel.
pub(crate) struct SenderHandle<T>(Rc<Chan<T>>);

/// A counted reference from the receiving side; the last one closes the channel and
/// drops the buffered messages (nobody can receive them any more).
pub(crate) struct ReceiverHandle<T>(Rc<Chan<T>>);

impl<T> Clone for SenderHandle<T> {
    fn clone(&self) -> Self {
        self.0.senders.set(self.0.senders.get() + 1);
        Self(self.0.clone())
    }
}

impl<T> Clone for ReceiverHandle<T> {
    fn clone(&self) -> Self {
        self.0.receivers.set(self.0.receivers.get() + 1);
        Self(self.0.clone())
    }
}

impl<T> Drop for SenderHandle<T> {
    fn drop(&mut self) {
        self.0.senders.set(self.0.senders.get() - 1);
        if self.0.senders.get() == 0 {
            self.0.close();
        }
    }
}

impl<T> Drop for ReceiverHandle<T> {
    fn drop(&mut self) {
        self.0.receivers.set(self.0.receivers.get() - 1);
        if self.0.receivers.get() == 0 {
            self.0.close();
            // Dropped outside the borrow: a message's destructor may use the channel.
            let orphans = mem::take(&mut *self.0.buffer.borrow_mut());
            drop(orphans);
        }
    }
}

impl<T> Deref for SenderHandle<T> {
    type Target = Chan<T>;

    fn deref(&self) -> &Chan<T> {
        &self.0
    }
}

impl<T> Deref for ReceiverHandle<T> {
    type Target = Chan<T>;

    fn deref(&self) -> &Chan<T> {
        &self.0
    }
}
