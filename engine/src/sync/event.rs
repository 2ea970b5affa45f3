//! [`Event`]: a one-shot flag that tasks can wait for (Trio's `Event`).
//!
//! State: a `set` flag and one [`WaitQueue`]. [`Event::set`] flips the flag and
//! notifies every waiter; [`Event::wait`] completes at once if the flag is set,
//! otherwise queues. A notification is not a resource handed to one waiter (every
//! waiter gets one), so a waiter dropped after being notified has nothing to pass on.
//!
//! There is no reset: an event that can be cleared makes "did I miss it?" races easy
//! to write. Use a fresh `Event` per occurrence instead.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::wait_queue::{Stage, WaitQueue};

/// A flag that is set once; tasks can wait for it.
///
/// # Examples
///
/// ```ignore
/// let ready = Rc::new(Event::new());
/// let ready2 = ready.clone();
/// percore::spawn(async move {
///     ready2.wait().await; // returns once `set` was called, immediately if it was
///     serve().await
/// });
/// load_config().await;
/// ready.set();
/// ```
pub struct Event {
    set: Cell<bool>,
    waiters: WaitQueue,
}

impl Event {
    /// Creates an event that is not set.
    pub const fn new() -> Self {
        Self {
            set: Cell::new(false),
            waiters: WaitQueue::new(),
        }
    }

    /// Sets the event and wakes every waiting task. Setting it again does nothing.
    pub fn set(&self) {
        if !self.set.replace(true) {
            self.waiters.notify_all();
        }
    }

    /// Whether the event has been set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Waits until the event is set; completes immediately if it already is.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future removes its waiter in O(1); since `set` wakes
    /// every waiter, a dropped one never deprives another of its wake-up.
    pub fn wait(&self) -> WaitFuture<'_> {
        WaitFuture {
            event: self,
            stage: Stage::Idle,
        }
    }
}

impl Default for Event {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .field("waiters", &self.waiters.len())
            .finish()
    }
}

/// Future returned by [`Event::wait`] and [`Latch::wait`](super::Latch::wait).
///
/// # Panics
///
/// If polled again after it completed.
#[must_use = "futures do nothing unless polled"]
pub struct WaitFuture<'a> {
    event: &'a Event,
    stage: Stage,
}

impl Future for WaitFuture<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let waiters = &this.event.waiters;
        match mem::replace(&mut this.stage, Stage::Done) {
            Stage::Idle if this.event.is_set() => Poll::Ready(()),
            Stage::Idle => {
                this.stage = Stage::Waiting(waiters.register(cx.waker()));
                Poll::Pending
            }
            Stage::Waiting(key) if waiters.poll_notified(&key, cx.waker()) => {
                waiters.cancel(key);
                Poll::Ready(())
            }
            Stage::Waiting(key) => {
                this.stage = Stage::Waiting(key);
                Poll::Pending
            }
            Stage::Done => panic!("`WaitFuture` polled after completion"),
        }
    }
}

impl Drop for WaitFuture<'_> {
    fn drop(&mut self) {
        if let Stage::Waiting(key) = mem::replace(&mut self.stage, Stage::Done) {
            self.event.waiters.cancel(key); // nothing to pass on: `set` wakes everyone
        }
    }
}

impl fmt::Debug for WaitFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitFuture")
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_util::{poll_noop, CountingWaker};
    use std::pin::pin;

    #[test]
    fn wait_after_set_is_immediate() {
        let event = Event::default();
        event.set();
        event.set();
        assert!(event.is_set());
        assert!(poll_noop(pin!(event.wait())).is_ready());
    }

    #[test]
    fn set_wakes_every_waiter_once() {
        let event = Event::new();
        let w: Vec<_> = (0..3).map(|_| CountingWaker::new()).collect();
        let mut a = pin!(event.wait());
        let mut b = pin!(event.wait());
        let mut c = pin!(event.wait());
        assert!(w[0].poll(a.as_mut()).is_pending());
        assert!(w[1].poll(b.as_mut()).is_pending());
        assert!(w[2].poll(c.as_mut()).is_pending());
        assert!(w[1].poll(b.as_mut()).is_pending()); // spurious poll: still waiting
        event.set();
        event.set();
        assert!(w.iter().all(|w| w.count() == 1));
        assert!(w[2].poll(c.as_mut()).is_ready());
        assert!(w[0].poll(a.as_mut()).is_ready());
        assert!(w[1].poll(b.as_mut()).is_ready());
        assert!(event.waiters.is_empty());
    }

    #[test]
    fn dropped_waiters_leave_the_queue() {
        let event = Event::new();
        let w: Vec<_> = (0..3).map(|_| CountingWaker::new()).collect();
        let mut a = Box::pin(event.wait());
        let mut b = pin!(event.wait());
        let mut c = Box::pin(event.wait());
        assert!(w[0].poll(a.as_mut()).is_pending());
        assert!(w[1].poll(b.as_mut()).is_pending());
        assert!(w[2].poll(c.as_mut()).is_pending());
        drop(a);
        assert_eq!(event.waiters.len(), 2);
        event.set();
        let counts: Vec<_> = w.iter().map(CountingWaker::count).collect();
        assert_eq!(counts, [0, 1, 1]);
        drop(c); // dropped after being notified: b is unaffected
        assert!(w[1].poll(b.as_mut()).is_ready());
        assert!(format!("{event:?}").contains("set: true"));
    }
}
