//! [`UnboundedSender`]: the sending half of an unbounded channel. Sending never
//! waits, so it is a plain function and there is no sender queue to speak of.

use std::fmt;

use super::chan::SenderHandle;
use super::error::SendError;

/// The sending half of an [`unbounded`](super::unbounded) channel. Clone it for
/// more producers; the channel closes when the last sender is dropped.
///
/// # Examples
///
/// ```
/// # use percore_engine::sync::channel;
/// let (tx, rx) = channel::unbounded();
/// tx.send("hello").unwrap(); // never waits
/// assert_eq!(rx.try_recv(), Ok("hello"));
/// drop(rx);
/// assert_eq!(tx.send("anyone?").unwrap_err().into_inner(), "anyone?");
/// ```
pub struct UnboundedSender<T> {
    chan: SenderHandle<T>,
}

impl<T> UnboundedSender<T> {
    pub(crate) fn new(chan: SenderHandle<T>) -> Self {
        Self { chan }
    }

    /// Sends `value` at once; the buffer grows as needed.
    ///
    /// # Errors
    ///
    /// [`SendError`] holding `value` if the channel is closed (closed explicitly, or
    /// every receiver is gone).
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.chan
            .try_send(value)
            .map_err(|err| SendError(err.into_inner()))
    }

    /// Closes the channel for every handle: sends fail from now on, receivers still
    /// get the buffered messages.
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
}

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        Self {
            chan: self.chan.clone(),
        }
    }
}

impl<T> fmt::Debug for UnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnboundedSender")
            .field("chan", &*self.chan)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::sync::channel::{unbounded, TryRecvError};
    use crate::sync::test_util::CountingWaker;
    use std::pin::pin;
    use std::task::Poll;

    #[test]
    fn never_blocks_and_keeps_order() {
        let (tx, rx) = unbounded();
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
        assert_eq!((tx.len(), rx.capacity()), (1000, None));
        let received: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(received, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn wakes_a_blocked_receiver_and_closes_on_last_sender() {
        let (tx, rx) = unbounded();
        let tx2 = tx.clone();
        let waker = CountingWaker::new();
        let mut recv = pin!(rx.recv());
        assert!(waker.poll(recv.as_mut()).is_pending());
        tx2.send(7).unwrap();
        assert_eq!(waker.count(), 1);
        assert_eq!(waker.poll(recv.as_mut()), Poll::Ready(Some(7)));
        drop(tx);
        assert!(!rx.is_closed());
        drop(tx2);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn close_rejects_sends() {
        let (tx, rx) = unbounded();
        tx.send(1).unwrap();
        tx.close();
        assert!(tx.send(2).is_err() && tx.is_closed());
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
        assert!(format!("{tx:?}").contains("closed: true"));
    }
}
