//! [`Latch`]: a countdown latch, built on [`Event`].
//!
//! State: a count and an [`Event`] that is set when the count reaches zero, so the
//! waiting side (queueing, FIFO wake-up, cancellation) is exactly the event's.

use std::cell::Cell;
use std::fmt;

use super::event::{Event, WaitFuture};

/// A countdown latch: [`wait`](Self::wait) completes once
/// [`count_down`](Self::count_down) has been called `count` times.
///
/// # Examples
///
/// ```ignore
/// let workers = 4;
/// let done = Rc::new(Latch::new(workers));
/// for _ in 0..workers {
///     let done = done.clone();
///     percore::spawn(async move {
///         work().await;
///         done.count_down();
///     });
/// }
/// done.wait().await; // all four finished
/// ```
pub struct Latch {
    count: Cell<usize>,
    released: Event,
}

impl Latch {
    /// Creates a latch that opens after `count` calls to
    /// [`count_down`](Self::count_down); `Latch::new(0)` is open from the start.
    pub fn new(count: usize) -> Self {
        let latch = Self {
            count: Cell::new(count),
            released: Event::new(),
        };
        if count == 0 {
            latch.released.set();
        }
        latch
    }

    /// Decrements the count, waking every waiter when it reaches zero. Does nothing
    /// once the count is zero.
    pub fn count_down(&self) {
        match self.count.get() {
            0 => {}
            1 => {
                self.count.set(0);
                self.released.set();
            }
            n => self.count.set(n - 1),
        }
    }

    /// The remaining count.
    pub fn count(&self) -> usize {
        self.count.get()
    }

    /// Whether the count has reached zero.
    pub fn is_released(&self) -> bool {
        self.released.is_set()
    }

    /// Waits until the count reaches zero; completes immediately if it has.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: as for [`Event::wait`], dropping the future removes its waiter in
    /// O(1) and cannot take a wake-up away from another waiter.
    pub fn wait(&self) -> WaitFuture<'_> {
        self.released.wait()
    }
}

impl fmt::Debug for Latch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latch")
            .field("count", &self.count())
            .field("released", &self.released)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_util::{poll_noop, CountingWaker};
    use std::pin::pin;

    #[test]
    fn zero_count_is_open() {
        let latch = Latch::new(0);
        assert!(latch.is_released());
        assert!(poll_noop(pin!(latch.wait())).is_ready());
        latch.count_down();
        assert_eq!(latch.count(), 0);
    }

    #[test]
    fn opens_on_the_last_count_down() {
        let latch = Latch::new(3);
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = pin!(latch.wait());
        let mut b = pin!(latch.wait());
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        latch.count_down();
        latch.count_down();
        assert_eq!((latch.count(), wa.count(), wb.count()), (1, 0, 0));
        assert!(wa.poll(a.as_mut()).is_pending());
        latch.count_down();
        assert_eq!((wa.count(), wb.count()), (1, 1));
        latch.count_down(); // no-op at zero
        assert_eq!(latch.count(), 0);
        assert!(wb.poll(b.as_mut()).is_ready());
        assert!(wa.poll(a.as_mut()).is_ready());
        assert!(poll_noop(pin!(latch.wait())).is_ready());
    }

    #[test]
    fn dropped_waiter_does_not_block_the_others() {
        let latch = Latch::new(1);
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = Box::pin(latch.wait());
        let mut b = pin!(latch.wait());
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        drop(a);
        latch.count_down();
        assert_eq!((wa.count(), wb.count()), (0, 1));
        assert!(wb.poll(b.as_mut()).is_ready());
        assert!(format!("{latch:?}").starts_with("Latch { count: 0"));
    }
}
