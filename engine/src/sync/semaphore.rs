//! [`Semaphore`]: a counting semaphore with weighted, strictly FIFO acquisition.
//!
//! State: `available` permits, `granted` permits (reserved for woken waiters that have
//! not run yet), a `closed` flag, and one [`WaitQueue`] whose tag is the number of
//! permits each waiter asks for. Whenever permits come back (a [`Permit`] is dropped,
//! [`Semaphore::add_permits`], a waiter leaves), the semaphore *grants* them in queue
//! order: while the head's request fits, it is deducted from `available`, added to
//! `granted`, and the head is notified. A head that does not fit stops the loop, so
//! a large request is never starved by a stream of small ones, and newcomers
//! (`try_acquire`, first polls) only succeed when nobody is queued.
//!
//! Closing revokes grants: `granted` goes back to `available`, every waiter is woken
//! and fails, including one that had been granted permits but had not run yet.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::wait_queue::{Stage, WaitQueue};

/// A counting semaphore for tasks on one core.
///
/// # Examples
///
/// ```ignore
/// // At most 8 concurrent uploads, big ones taking more of the budget.
/// let budget = Rc::new(Semaphore::new(8));
/// let budget2 = budget.clone();
/// percore::spawn(async move {
///     let _permit = budget2.acquire(weight).await?;
///     upload().await
/// }); // the permits are released when `_permit` drops
/// ```
pub struct Semaphore {
    available: Cell<usize>,
    granted: Cell<usize>,
    closed: Cell<bool>,
    waiters: WaitQueue<usize>,
}

impl Semaphore {
    /// Creates a semaphore with `permits` available permits.
    pub const fn new(permits: usize) -> Self {
        Self {
            available: Cell::new(permits),
            granted: Cell::new(0),
            closed: Cell::new(false),
            waiters: WaitQueue::with_tags(),
        }
    }

    /// Acquires `n` permits, waiting behind every task already queued.
    ///
    /// Requests are served strictly in order: a request that does not fit blocks the
    /// smaller ones behind it (a request larger than will ever be available blocks
    /// the queue until it is dropped or the semaphore closed). `n = 0` also queues.
    ///
    /// # Errors
    ///
    /// [`AcquireError`] if the semaphore is closed before the permits are acquired.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future while it waits removes it from the queue in
    /// O(1) and re-runs the grant loop (it may have been the head blocking others).
    /// If permits had already been granted to it (it was woken but not polled again),
    /// they are given back and passed on to the next waiters that fit.
    pub fn acquire(&self, n: usize) -> AcquireFuture<'_> {
        AcquireFuture {
            semaphore: self,
            n,
            stage: Stage::Idle,
        }
    }

    /// Acquires `n` permits if they are available and nobody is queued.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::Closed`] if closed, [`TryAcquireError::NoPermits`] if fewer
    /// than `n` permits are available or other tasks are queued (FIFO: no barging).
    pub fn try_acquire(&self, n: usize) -> Result<Permit<'_>, TryAcquireError> {
        if self.closed.get() {
            Err(TryAcquireError::Closed)
        } else if !self.waiters.is_empty() || self.available.get() < n {
            Err(TryAcquireError::NoPermits)
        } else {
            self.available.set(self.available.get() - n);
            Ok(Permit { semaphore: self, n })
        }
    }

    /// Adds `n` permits, waking the queued tasks they satisfy (in order).
    ///
    /// # Panics
    ///
    /// If the number of permits would overflow `usize`.
    pub fn add_permits(&self, n: usize) {
        let available = self.available.get().checked_add(n);
        self.available
            .set(available.expect("Semaphore permit count overflowed usize"));
        self.grant();
    }

    /// Permits available right now (not counting those granted to woken waiters).
    pub fn available(&self) -> usize {
        self.available.get()
    }

    /// Permits set aside for woken waiters that have not run yet (0 once closed: closing
    /// revokes them). A user that hands a resource along with each permit (a connection
    /// pool's idle connections) keeps this many for those waiters, so a newcomer that finds
    /// a free permit does not take what was meant for them.
    pub fn granted(&self) -> usize {
        self.granted.get()
    }

    /// Closes the semaphore: every queued and future `acquire`/`try_acquire` fails.
    /// Permits granted to woken waiters that have not run yet are revoked. Existing
    /// [`Permit`]s stay valid and are still returned on drop.
    pub fn close(&self) {
        if !self.closed.replace(true) {
            self.available
                .set(self.available.get() + self.granted.replace(0));
            self.waiters.notify_all();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Grants permits to queued waiters, in order, while the head's request fits.
    fn grant(&self) {
        while let Some(n) = self.waiters.front_tag() {
            if self.closed.get() || n > self.available.get() {
                break;
            }
            self.available.set(self.available.get() - n);
            self.granted.set(self.granted.get() + n);
            self.waiters.notify_one();
        }
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available", &self.available.get())
            .field("granted", &self.granted.get())
            .field("closed", &self.closed.get())
            .field("waiters", &self.waiters.len())
            .finish()
    }
}

/// Permits acquired from a [`Semaphore`], released when dropped.
#[must_use = "dropping a Permit releases it immediately"]
pub struct Permit<'a> {
    semaphore: &'a Semaphore,
    n: usize,
}

impl Permit<'_> {
    /// Number of permits held.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Consumes the permit without releasing it: the permits are gone for good.
    pub fn forget(mut self) {
        self.n = 0;
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            self.semaphore.add_permits(self.n);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("n", &self.n).finish()
    }
}

/// Future returned by [`Semaphore::acquire`].
///
/// # Panics
///
/// If polled again after it completed.
#[must_use = "futures do nothing unless polled"]
pub struct AcquireFuture<'a> {
    semaphore: &'a Semaphore,
    n: usize,
    stage: Stage,
}

impl<'a> Future for AcquireFuture<'a> {
    type Output = Result<Permit<'a>, AcquireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let sem = this.semaphore;
        match mem::replace(&mut this.stage, Stage::Done) {
            Stage::Idle => match sem.try_acquire(this.n) {
                Ok(permit) => Poll::Ready(Ok(permit)),
                Err(TryAcquireError::Closed) => Poll::Ready(Err(AcquireError(()))),
                Err(TryAcquireError::NoPermits) => {
                    let key = sem.waiters.register_tagged(cx.waker(), this.n);
                    this.stage = Stage::Waiting(key);
                    Poll::Pending
                }
            },
            Stage::Waiting(key) if sem.waiters.poll_notified(&key, cx.waker()) => {
                sem.waiters.cancel(key);
                if sem.closed.get() {
                    return Poll::Ready(Err(AcquireError(()))); // any grant was revoked
                }
                sem.granted.set(sem.granted.get() - this.n);
                Poll::Ready(Ok(Permit {
                    semaphore: sem,
                    n: this.n,
                }))
            }
            Stage::Waiting(key) => {
                this.stage = Stage::Waiting(key);
                Poll::Pending
            }
            Stage::Done => panic!("`AcquireFuture` polled after completion"),
        }
    }
}

impl Drop for AcquireFuture<'_> {
    fn drop(&mut self) {
        if let Stage::Waiting(key) = mem::replace(&mut self.stage, Stage::Done) {
            let sem = self.semaphore;
            if sem.waiters.cancel(key) && !sem.closed.get() {
                sem.granted.set(sem.granted.get() - self.n);
                sem.available.set(sem.available.get() + self.n);
            }
            sem.grant(); // we may have been the head blocking smaller requests
        }
    }
}

impl fmt::Debug for AcquireFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireFuture")
            .field("n", &self.n)
            .field("stage", &self.stage)
            .finish()
    }
}

/// Error of [`Semaphore::acquire`]: the semaphore was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquireError(());

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("semaphore closed")
    }
}

impl std::error::Error for AcquireError {}

/// Error of [`Semaphore::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryAcquireError {
    /// The semaphore was closed.
    Closed,
    /// Not enough permits available, or other tasks are queued first.
    NoPermits,
}

impl fmt::Display for TryAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "semaphore closed",
            Self::NoPermits => "no permits available",
        })
    }
}

impl std::error::Error for TryAcquireError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_util::{poll_noop, CountingWaker};
    use std::pin::pin;

    #[test]
    fn try_acquire_and_release() {
        let sem = Semaphore::new(3);
        let a = sem.try_acquire(2).unwrap();
        assert_eq!((a.count(), sem.available()), (2, 1));
        assert_eq!(sem.try_acquire(2).unwrap_err(), TryAcquireError::NoPermits);
        let b = sem.try_acquire(1).unwrap();
        drop(a);
        assert_eq!(sem.available(), 2);
        b.forget();
        assert_eq!(sem.available(), 2);
        let Poll::Ready(Ok(c)) = poll_noop(pin!(sem.acquire(2))) else {
            panic!()
        };
        assert_eq!((c.count(), sem.available()), (2, 0));
    }

    #[test]
    fn big_head_blocks_smaller_requests_behind_it() {
        let sem = Semaphore::new(2);
        let held = sem.try_acquire(2).unwrap();
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = pin!(sem.acquire(2));
        let mut b = pin!(sem.acquire(1));
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        sem.add_permits(1);
        assert_eq!((wa.count(), wb.count(), sem.available()), (0, 0, 1));
        // No barging past the queue either.
        assert_eq!(sem.try_acquire(1).unwrap_err(), TryAcquireError::NoPermits);
        drop(held); // 3 available: a gets 2, b gets 1
        assert_eq!((wa.count(), wb.count(), sem.available()), (1, 1, 0));
        let Poll::Ready(Ok(pa)) = wa.poll(a.as_mut()) else {
            panic!()
        };
        let Poll::Ready(Ok(pb)) = wb.poll(b.as_mut()) else {
            panic!()
        };
        assert_eq!((pa.count(), pb.count()), (2, 1));
    }

    #[test]
    fn add_permits_serves_waiters_in_order() {
        let sem = Semaphore::new(0);
        let w: Vec<_> = (0..3).map(|_| CountingWaker::new()).collect();
        let mut a = pin!(sem.acquire(1));
        let mut b = pin!(sem.acquire(2));
        let mut c = pin!(sem.acquire(1));
        assert!(w[0].poll(a.as_mut()).is_pending());
        assert!(w[1].poll(b.as_mut()).is_pending());
        assert!(w[2].poll(c.as_mut()).is_pending());
        sem.add_permits(3);
        let counts: Vec<_> = w.iter().map(CountingWaker::count).collect();
        assert_eq!(counts, [1, 1, 0]);
        assert!(w[2].poll(c.as_mut()).is_pending());
        assert!(w[0].poll(a.as_mut()).is_ready()); // permit dropped at once...
        assert_eq!(w[2].count(), 1); // ...and granted to c
    }

    #[test]
    fn dropping_the_blocking_head_unblocks_the_rest() {
        let sem = Semaphore::new(2);
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = Box::pin(sem.acquire(3));
        let mut b = pin!(sem.acquire(1));
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        drop(a);
        assert_eq!((wa.count(), wb.count(), sem.available()), (0, 1, 1));
        assert!(wb.poll(b.as_mut()).is_ready());
    }

    #[test]
    fn dropping_a_granted_future_passes_the_permits_on() {
        let sem = Semaphore::new(1);
        let held = sem.try_acquire(1).unwrap();
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = Box::pin(sem.acquire(1));
        let mut b = pin!(sem.acquire(1));
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        drop(held);
        assert_eq!((wa.count(), wb.count()), (1, 0));
        drop(a);
        assert_eq!(wb.count(), 1);
        let Poll::Ready(Ok(permit)) = wb.poll(b.as_mut()) else {
            panic!("lost wake-up")
        };
        drop(permit);
        assert_eq!((sem.available(), sem.granted.get()), (1, 0));
    }

    #[test]
    fn dropping_the_last_granted_future_returns_the_permits() {
        let sem = Semaphore::new(0);
        let mut a = Box::pin(sem.acquire(2));
        assert!(poll_noop(a.as_mut()).is_pending());
        sem.add_permits(2);
        assert_eq!((sem.available(), sem.granted.get()), (0, 2));
        drop(a);
        assert_eq!((sem.available(), sem.granted.get()), (2, 0));
    }

    #[test]
    fn close_fails_waiters_and_revokes_grants() {
        let sem = Semaphore::new(0);
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = pin!(sem.acquire(1));
        let mut b = pin!(sem.acquire(5));
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        sem.add_permits(1); // granted to a, which has not run yet
        assert_eq!((sem.granted(), sem.available()), (1, 0));
        sem.close();
        assert_eq!(sem.granted(), 0);
        assert_eq!((wa.count(), wb.count(), sem.available()), (1, 1, 1));
        assert!(matches!(
            wa.poll(a.as_mut()),
            Poll::Ready(Err(AcquireError(())))
        ));
        assert!(matches!(wb.poll(b.as_mut()), Poll::Ready(Err(_))));
        assert_eq!(sem.try_acquire(1).unwrap_err(), TryAcquireError::Closed);
        assert!(matches!(
            poll_noop(pin!(sem.acquire(0))),
            Poll::Ready(Err(_))
        ));
        assert_eq!(AcquireError(()).to_string(), "semaphore closed");
    }

    #[test]
    fn permits_outliving_close_are_still_returned() {
        let sem = Semaphore::new(1);
        let permit = sem.try_acquire(1).unwrap();
        sem.close();
        drop(permit);
        assert_eq!(sem.available(), 1);
        assert!(sem.is_closed());
    }
}
