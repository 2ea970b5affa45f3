//! [`Sender`]: the sending half of a bounded channel, and its [`SendFuture`].
//!
//! A send that finds no unreserved slot queues in the channel's sender queue; a slot
//! freed by a receiver is reserved for the head sender, which pushes its value when
//! it is next polled (see the `chan` notes). The value stays inside the future until
//! then, so a send is never half-done: the value is either in the channel (future
//! returned `Ok`), given back (`Err`), or dropped together with the future.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::chan::{Chan, SenderHandle};
use super::error::{SendError, TrySendError};
use crate::sync::WaiterKey;

/// The sending half of a [`bounded`](super::bounded) channel. Clone it for more
/// producers; the channel closes when the last sender is dropped.
///
/// # Examples
///
/// ```ignore
/// let (tx, rx) = channel::bounded(16);
/// percore::spawn(async move {
///     for i in 0..100 {
///         tx.send(i).await?; // waits while 16 messages are in flight
///     }
///     Ok::<_, SendError<i32>>(())
/// });
/// while let Some(i) = rx.recv().await {
///     println!("{i}");
/// }
/// ```
pub struct Sender<T> {
    chan: SenderHandle<T>,
}

impl<T> Sender<T> {
    pub(crate) fn new(chan: SenderHandle<T>) -> Self {
        Self { chan }
    }

    /// Sends `value`, waiting (FIFO among blocked senders) while the channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] holding `value` if the channel is closed, or closes while
    /// waiting.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops `value` with it: the value was
    /// not sent and no receiver will see it (it is never half-sent). The waiter leaves
    /// the queue in O(1); if a slot had already been reserved for it (woken but not
    /// polled again), the slot passes to the next blocked sender, or becomes free.
    /// To keep the value when giving up, use [`try_send`](Self::try_send).
    pub fn send(&self, value: T) -> SendFuture<'_, T> {
        SendFuture {
            chan: &self.chan,
            stage: SendStage::Idle(value),
        }
    }

    /// Sends `value` if there is a free slot, without waiting. Slots reserved for
    /// blocked senders are not free (FIFO: no barging).
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], holding `value`.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.chan.try_send(value)
    }

    /// Closes the channel for every handle: sends fail from now on (blocked senders
    /// are woken with an error), receivers still get the buffered messages.
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

    /// The capacity given to [`bounded`](super::bounded).
    pub fn capacity(&self) -> usize {
        self.chan
            .capacity()
            .expect("a Sender belongs to a bounded channel")
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            chan: self.chan.clone(),
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("chan", &*self.chan).finish()
    }
}

/// Future returned by [`Sender::send`].
///
/// # Panics
///
/// If polled again after it completed.
#[must_use = "futures do nothing unless polled; dropping this one drops the value unsent"]
pub struct SendFuture<'a, T> {
    chan: &'a Chan<T>,
    stage: SendStage<T>,
}

enum SendStage<T> {
    Idle(T),
    Waiting(WaiterKey, T),
    Done,
}

// The value is never pinned: it is moved into the channel or handed back.
impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let waiters = &this.chan.send_waiters;
        match mem::replace(&mut this.stage, SendStage::Done) {
            SendStage::Idle(value) => match this.chan.try_send(value) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(TrySendError::Closed(value)) => Poll::Ready(Err(SendError(value))),
                Err(TrySendError::Full(value)) => {
                    this.stage = SendStage::Waiting(waiters.register(cx.waker()), value);
                    Poll::Pending
                }
            },
            SendStage::Waiting(key, value) if waiters.poll_notified(&key, cx.waker()) => {
                waiters.cancel(key);
                Poll::Ready(this.chan.send_reserved(value).map_err(SendError))
            }
            SendStage::Waiting(key, value) => {
                this.stage = SendStage::Waiting(key, value);
                Poll::Pending
            }
            SendStage::Done => panic!("`SendFuture` polled after completion"),
        }
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        if let SendStage::Waiting(key, value) = mem::replace(&mut self.stage, SendStage::Done) {
            if self.chan.send_waiters.cancel(key) {
                self.chan.release_slot();
            }
            drop(value); // unsent; dropped after the slot was passed on
        }
    }
}

impl<T> fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            SendStage::Idle(_) => "Idle",
            SendStage::Waiting(..) => "Waiting",
            SendStage::Done => "Done",
        };
        f.debug_struct("SendFuture")
            .field("stage", &stage)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crate::sync::channel::{bounded, SendError, TryRecvError, TrySendError};
    use crate::sync::test_util::{poll_noop, CountingWaker};
    use std::pin::pin;
    use std::rc::Rc;
    use std::task::Poll;

    #[test]
    fn try_send_respects_capacity() {
        let (tx, rx) = bounded(2);
        assert_eq!((tx.capacity(), rx.capacity()), (2, Some(2)));
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert!(poll_noop(pin!(tx.send(3))).is_pending());
        assert_eq!((tx.len(), rx.len()), (2, 2));
        assert_eq!(rx.try_recv(), Ok(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert!(tx.is_empty());
    }

    #[test]
    fn blocked_senders_are_served_fifo_without_barging() {
        let (tx, rx) = bounded(1);
        tx.try_send(0).unwrap();
        let w: Vec<_> = (0..3).map(|_| CountingWaker::new()).collect();
        let mut s1 = pin!(tx.send(1));
        let mut s2 = pin!(tx.send(2));
        let mut s3 = pin!(tx.send(3));
        assert!(w[0].poll(s1.as_mut()).is_pending());
        assert!(w[1].poll(s2.as_mut()).is_pending());
        assert!(w[2].poll(s3.as_mut()).is_pending());
        assert_eq!(rx.try_recv(), Ok(0));
        let counts: Vec<_> = w.iter().map(CountingWaker::count).collect();
        assert_eq!(counts, [1, 0, 0]);
        // The free slot is reserved for s1: newcomers and later senders must wait.
        assert_eq!(tx.try_send(9), Err(TrySendError::Full(9)));
        assert!(w[2].poll(s3.as_mut()).is_pending());
        assert!(w[1].poll(s2.as_mut()).is_pending());
        assert_eq!(w[0].poll(s1.as_mut()), Poll::Ready(Ok(())));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!((w[1].count(), w[2].count()), (1, 0));
        assert_eq!(w[1].poll(s2.as_mut()), Poll::Ready(Ok(())));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(w[2].poll(s3.as_mut()), Poll::Ready(Ok(())));
        assert_eq!(rx.try_recv(), Ok(3));
    }

    #[test]
    fn dropping_a_blocked_send_drops_its_value_unsent() {
        let (tx, rx) = bounded(1);
        let value = Rc::new(7);
        tx.try_send(Rc::new(0)).unwrap();
        let mut send = Box::pin(tx.send(value.clone()));
        assert!(poll_noop(send.as_mut()).is_pending());
        assert_eq!(Rc::strong_count(&value), 2);
        drop(send);
        assert_eq!(Rc::strong_count(&value), 1);
        assert_eq!(tx.send_waiters_len(), 0);
        assert_eq!(*rx.try_recv().unwrap(), 0);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn dropping_a_notified_send_passes_the_slot_on() {
        let (tx, rx) = bounded(1);
        tx.try_send(0).unwrap();
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = Box::pin(tx.send(1));
        let mut b = pin!(tx.send(2));
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        assert_eq!(rx.try_recv(), Ok(0));
        assert_eq!((wa.count(), wb.count()), (1, 0));
        drop(a);
        assert_eq!(wb.count(), 1);
        assert_eq!(wb.poll(b.as_mut()), Poll::Ready(Ok(())));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn dropping_the_last_notified_send_frees_the_slot() {
        let (tx, rx) = bounded(1);
        tx.try_send(0).unwrap();
        let mut a = Box::pin(tx.send(1));
        assert!(poll_noop(a.as_mut()).is_pending());
        assert_eq!(rx.try_recv(), Ok(0));
        assert_eq!(
            tx.try_send(5),
            Err(TrySendError::Full(5)),
            "slot reserved for a"
        );
        drop(a);
        tx.try_send(5).unwrap();
        assert_eq!(rx.try_recv(), Ok(5));
    }

    #[test]
    fn close_fails_blocked_senders_with_their_value() {
        let (tx, rx) = bounded(1);
        tx.try_send(0).unwrap();
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = pin!(tx.send(1));
        let mut b = pin!(tx.send(2));
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        assert_eq!(rx.try_recv(), Ok(0)); // slot reserved for a...
        tx.close(); // ...and revoked
        assert_eq!((wa.count(), wb.count()), (1, 1));
        assert_eq!(wa.poll(a.as_mut()), Poll::Ready(Err(SendError(1))));
        assert_eq!(wb.poll(b.as_mut()), Poll::Ready(Err(SendError(2))));
        assert_eq!(poll_noop(pin!(tx.send(3))), Poll::Ready(Err(SendError(3))));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
        assert!(format!("{tx:?}").starts_with("Sender { chan: Chan { len: Some(0)"));
    }

    impl<T> super::Sender<T> {
        fn send_waiters_len(&self) -> usize {
            self.chan.send_waiters.len()
        }
    }
}
