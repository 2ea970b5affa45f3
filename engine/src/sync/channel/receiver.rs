//! [`Receiver`]: the receiving half of both channel flavours, and its
//! [`RecvFuture`].
//!
//! A receive that finds no unclaimed message queues in the channel's receiver queue;
//! a message pushed while receivers are queued is claimed for the head receiver,
//! which pops it when next polled. Until then the message stays in the buffer, so a
//! receive future that is dropped never consumes anything.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::chan::{Chan, ReceiverHandle};
use super::error::TryRecvError;
use crate::sync::wait_queue::Stage;

/// The receiving half of a channel ([`bounded`](super::bounded) or
/// [`unbounded`](super::unbounded)).
///
/// Clonable: every clone receives from the same queue (multi-consumer) and each
/// message goes to exactly one receiver, blocked receivers being served FIFO. When
/// the last receiver is dropped the channel closes and buffered messages are dropped.
///
/// # Examples
///
/// ```ignore
/// let (tx, rx) = channel::bounded::<Job>(64);
/// for _ in 0..4 {
///     let rx = rx.clone(); // a pool of workers sharing one queue
///     percore::spawn(async move {
///         while let Some(job) = rx.recv().await {
///             job.run().await;
///         }
///     });
/// }
/// ```
pub struct Receiver<T> {
    chan: ReceiverHandle<T>,
}

impl<T> Receiver<T> {
    pub(crate) fn new(chan: ReceiverHandle<T>) -> Self {
        Self { chan }
    }

    /// Receives the next message, waiting (FIFO among blocked receivers) while the
    /// channel is empty. Returns `None` once the channel is closed (explicitly or by
    /// dropping every sender) and its buffer drained.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future never loses a message. The waiter leaves the
    /// queue in O(1); if a message had already been claimed for it (woken but not
    /// polled again), the message stays in the channel and the claim passes to the
    /// next blocked receiver, or the message becomes free for anyone.
    pub fn recv(&self) -> RecvFuture<'_, T> {
        RecvFuture {
            chan: &self.chan,
            stage: Stage::Idle,
        }
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Elapsed`](crate::time::Elapsed) if no message came in time. `Ok(None)` means the
    /// channel is closed and drained, as with [`Receiver::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, like [`Receiver::recv`]: a message is taken only when returned; at the
    /// deadline the pending receive is dropped without consuming anything.
    ///
    /// # Panics
    ///
    /// Polling it off a percore core panics (the deadline needs the core's timers).
    pub async fn recv_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Option<T>, crate::time::Elapsed> {
        crate::time::timeout(timeout, self.recv()).await
    }

    /// Receives a message if one is available, without waiting. Messages claimed by
    /// woken receivers that have not run yet are not available (FIFO: no barging).
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if no message is available, [`TryRecvError::Closed`]
    /// if the channel is closed and drained.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.chan.try_recv()
    }

    /// Closes the channel for every handle: sends fail from now on (blocked senders
    /// are woken with an error), buffered messages can still be received.
    pub fn close(&self) {
        self.chan.close();
    }

    /// Whether the channel is closed.
    pub fn is_closed(&self) -> bool {
        self.chan.is_closed()
    }

    /// Number of buffered messages.
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// Whether no message is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity of a bounded channel, `None` for an unbounded one.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Self {
            chan: self.chan.clone(),
        }
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("chan", &*self.chan)
            .finish()
    }
}

/// Future returned by [`Receiver::recv`].
///
/// # Panics
///
/// If polled again after it completed.
#[must_use = "futures do nothing unless polled"]
pub struct RecvFuture<'a, T> {
    chan: &'a Chan<T>,
    stage: Stage,
}

impl<T> Future for RecvFuture<'_, T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        let waiters = &this.chan.recv_waiters;
        match mem::replace(&mut this.stage, Stage::Done) {
            Stage::Idle => match this.chan.try_recv() {
                Ok(value) => Poll::Ready(Some(value)),
                Err(TryRecvError::Closed) => Poll::Ready(None),
                Err(TryRecvError::Empty) => {
                    this.stage = Stage::Waiting(waiters.register(cx.waker()));
                    Poll::Pending
                }
            },
            Stage::Waiting(key) if waiters.poll_notified(&key, cx.waker()) => {
                waiters.cancel(key);
                Poll::Ready(this.chan.recv_claimed())
            }
            Stage::Waiting(key) => {
                this.stage = Stage::Waiting(key);
                Poll::Pending
            }
            Stage::Done => panic!("`RecvFuture` polled after completion"),
        }
    }
}

impl<T> Drop for RecvFuture<'_, T> {
    fn drop(&mut self) {
        if let Stage::Waiting(key) = mem::replace(&mut self.stage, Stage::Done) {
            if self.chan.recv_waiters.cancel(key) {
                self.chan.release_claim();
            }
        }
    }
}

impl<T> fmt::Debug for RecvFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFuture")
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crate::sync::channel::{bounded, TryRecvError};
    use crate::sync::test_util::{poll_noop, CountingWaker};
    use std::pin::pin;
    use std::task::Poll;

    #[test]
    fn blocked_receivers_are_served_fifo_without_barging() {
        let (tx, rx) = bounded(4);
        let other = rx.clone();
        let w: Vec<_> = (0..3).map(|_| CountingWaker::new()).collect();
        let mut r1 = pin!(rx.recv());
        let mut r2 = pin!(other.recv());
        let mut r3 = pin!(rx.recv());
        assert!(w[0].poll(r1.as_mut()).is_pending());
        assert!(w[1].poll(r2.as_mut()).is_pending());
        assert!(w[2].poll(r3.as_mut()).is_pending());
        tx.try_send('a').unwrap();
        let counts: Vec<_> = w.iter().map(CountingWaker::count).collect();
        assert_eq!(counts, [1, 0, 0]);
        // 'a' is claimed for r1: other receivers cannot take it.
        assert_eq!(other.try_recv(), Err(TryRecvError::Empty));
        assert!(poll_noop(pin!(other.recv())).is_pending());
        assert!(w[1].poll(r2.as_mut()).is_pending());
        tx.try_send('b').unwrap();
        assert_eq!((w[1].count(), w[2].count()), (1, 0));
        assert_eq!(w[0].poll(r1.as_mut()), Poll::Ready(Some('a')));
        assert_eq!(w[1].poll(r2.as_mut()), Poll::Ready(Some('b')));
        assert!(w[2].poll(r3.as_mut()).is_pending());
        assert_eq!(rx.len(), 0);
    }

    #[test]
    fn dropping_a_notified_recv_leaves_the_message_for_the_next() {
        let (tx, rx) = bounded(1);
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = Box::pin(rx.recv());
        let mut b = pin!(rx.recv());
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        tx.try_send(1).unwrap();
        assert_eq!((wa.count(), wb.count()), (1, 0));
        drop(a);
        assert_eq!((wb.count(), rx.len()), (1, 1));
        assert_eq!(wb.poll(b.as_mut()), Poll::Ready(Some(1)));
    }

    #[test]
    fn dropping_the_last_notified_recv_frees_the_message() {
        let (tx, rx) = bounded(1);
        let mut a = Box::pin(rx.recv());
        assert!(poll_noop(a.as_mut()).is_pending());
        tx.try_send(1).unwrap();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "claimed for a");
        drop(a);
        assert_eq!(rx.try_recv(), Ok(1));
    }

    #[test]
    fn dropping_a_waiting_recv_leaves_the_queue() {
        let (tx, rx) = bounded(1);
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = Box::pin(rx.recv());
        let mut b = pin!(rx.recv());
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        drop(a);
        assert_eq!(rx.chan.recv_waiters.len(), 1);
        tx.try_send(1).unwrap();
        assert_eq!((wa.count(), wb.count()), (0, 1));
        assert_eq!(wb.poll(b.as_mut()), Poll::Ready(Some(1)));
    }

    #[test]
    fn a_received_message_unblocks_the_oldest_sender() {
        let (tx, rx) = bounded(1);
        tx.try_send(1).unwrap();
        let waker = CountingWaker::new();
        let mut send = pin!(tx.send(2));
        assert!(waker.poll(send.as_mut()).is_pending());
        assert_eq!(poll_noop(pin!(rx.recv())), Poll::Ready(Some(1)));
        assert_eq!(waker.count(), 1);
        assert_eq!(waker.poll(send.as_mut()), Poll::Ready(Ok(())));
        assert_eq!(rx.try_recv(), Ok(2));
    }

    #[test]
    fn repoll_with_a_new_waker_wakes_the_new_one() {
        let (tx, rx) = bounded(1);
        let (old, new) = (CountingWaker::new(), CountingWaker::new());
        let mut recv = pin!(rx.recv());
        assert!(old.poll(recv.as_mut()).is_pending());
        assert!(new.poll(recv.as_mut()).is_pending());
        tx.try_send(()).unwrap();
        assert_eq!((old.count(), new.count()), (0, 1));
        assert!(format!("{rx:?}").contains("blocked_receivers: 0"));
        assert_eq!(new.poll(recv.as_mut()), Poll::Ready(Some(())));
    }
}
