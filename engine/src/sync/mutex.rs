//! [`Mutex`]: an async lock with strict FIFO hand-off.
//!
//! State: a `locked` flag and one [`WaitQueue`]. Releasing the lock does not clear
//! the flag when somebody is waiting: ownership is handed to the head waiter, which
//! finds the lock already held on its behalf when it is next polled. Hence the
//! invariant `!locked ⇒ no waiter`, and a newcomer ([`Mutex::try_lock`] or the first
//! poll of a [`LockFuture`]) can never barge past a queued task.
//!
//! The data sits in a `RefCell`; the guard holds the `RefMut`, so no `unsafe` is
//! needed, and the borrow doubles as an assertion of the lock's invariants.

use std::cell::{Cell, RefCell, RefMut};
use std::fmt;
use std::future::Future;
use std::mem;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::wait_queue::{Stage, WaitQueue};

/// An async mutual-exclusion lock for tasks on one core, with FIFO hand-off.
///
/// Share it between tasks by reference (scoped tasks) or through an `Rc`.
///
/// # Examples
///
/// ```ignore
/// let counter = Rc::new(Mutex::new(0));
/// for _ in 0..10 {
///     let counter = counter.clone();
///     percore::spawn(async move {
///         let mut n = counter.lock().await;
///         *n += 1; // may .await while holding the guard
///     });
/// }
/// ```
pub struct Mutex<T: ?Sized> {
    state: LockState,
    value: RefCell<T>,
}

struct LockState {
    locked: Cell<bool>,
    waiters: WaitQueue,
}

impl LockState {
    /// Hands the lock to the oldest waiter, or unlocks if there is none.
    fn release(&self) {
        if !self.waiters.notify_one() {
            self.locked.set(false);
        }
    }
}

impl<T> Mutex<T> {
    /// Creates an unlocked mutex holding `value`.
    pub const fn new(value: T) -> Self {
        let state = LockState {
            locked: Cell::new(false),
            waiters: WaitQueue::new(),
        };
        Self {
            state,
            value: RefCell::new(value),
        }
    }

    /// Consumes the mutex, returning the data.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks the mutex, waiting behind every task already queued.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future while it waits removes it from the queue in
    /// O(1). If the lock had already been handed to it (it was woken but not polled
    /// again), the drop hands the lock on to the next waiter, or unlocks the mutex if
    /// there is none: no wake-up is lost and the mutex never stays locked by nobody.
    pub fn lock(&self) -> LockFuture<'_, T> {
        LockFuture {
            mutex: self,
            stage: Stage::Idle,
        }
    }

    /// Locks the mutex if it is free and nobody is queued for it, without waiting.
    ///
    /// Returns `None` if it is locked, including while it is being handed to a woken
    /// waiter that has not run yet (FIFO: no barging).
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        if self.state.locked.replace(true) {
            return None;
        }
        Some(self.guard())
    }

    /// Whether the mutex is locked (or being handed to a woken waiter).
    pub fn is_locked(&self) -> bool {
        self.state.locked.get()
    }

    /// Mutable access to the data; no locking needed since the borrow is exclusive.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    fn guard(&self) -> MutexGuard<'_, T> {
        MutexGuard {
            value: self.value.borrow_mut(),
            _release: Release(&self.state),
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        d.field("locked", &self.is_locked())
            .field("waiters", &self.state.waiters.len());
        match self.value.try_borrow() {
            Ok(value) if !self.is_locked() => d.field("value", &&*value),
            _ => d.field("value", &format_args!("<locked>")),
        };
        d.finish()
    }
}

/// Exclusive access to a [`Mutex`]'s data; dropping it hands the lock to the next
/// waiter.
#[must_use = "dropping the guard unlocks the mutex immediately"]
pub struct MutexGuard<'a, T: ?Sized> {
    // Field order matters: the borrow ends before the lock is handed on.
    value: RefMut<'a, T>,
    _release: Release<'a>,
}

struct Release<'a>(&'a LockState);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Future returned by [`Mutex::lock`].
///
/// # Panics
///
/// If polled again after it returned the guard.
#[must_use = "futures do nothing unless polled"]
pub struct LockFuture<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    stage: Stage,
}

impl<'a, T: ?Sized> Future for LockFuture<'a, T> {
    type Output = MutexGuard<'a, T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let state = &this.mutex.state;
        match mem::replace(&mut this.stage, Stage::Done) {
            // Free, hence nobody queued (`!locked ⇒ no waiter`): take it.
            Stage::Idle if !state.locked.replace(true) => {}
            Stage::Idle => {
                this.stage = Stage::Waiting(state.waiters.register(cx.waker()));
                return Poll::Pending;
            }
            // Notified: the lock was handed to us and is still marked locked.
            Stage::Waiting(key) if state.waiters.poll_notified(&key, cx.waker()) => {
                state.waiters.cancel(key);
            }
            Stage::Waiting(key) => {
                this.stage = Stage::Waiting(key);
                return Poll::Pending;
            }
            Stage::Done => panic!("`LockFuture` polled after completion"),
        }
        Poll::Ready(this.mutex.guard())
    }
}

impl<T: ?Sized> Drop for LockFuture<'_, T> {
    fn drop(&mut self) {
        if let Stage::Waiting(key) = mem::replace(&mut self.stage, Stage::Done) {
            let state = &self.mutex.state;
            if state.waiters.cancel(key) {
                state.release(); // we owned the lock without knowing it: pass it on
            }
        }
    }
}

impl<T: ?Sized> fmt::Debug for LockFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockFuture")
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
    fn try_lock_and_guard_drop() {
        let mutex = Mutex::new(1);
        let mut guard = mutex.try_lock().unwrap();
        *guard += 1;
        assert!(mutex.try_lock().is_none());
        assert!(format!("{mutex:?}").contains("<locked>"));
        drop(guard);
        assert!(!mutex.is_locked());
        assert_eq!(
            format!("{mutex:?}"),
            "Mutex { locked: false, waiters: 0, value: 2 }"
        );
        assert_eq!(mutex.into_inner(), 2);
    }

    #[test]
    fn uncontended_lock_is_ready_at_once() {
        let mut mutex = Mutex::new(String::new());
        mutex.lock_ready().push('x');
        *mutex.get_mut() += "y";
        assert_eq!(*mutex.try_lock().unwrap(), "xy");
    }

    impl<T: ?Sized> Mutex<T> {
        fn lock_ready(&self) -> MutexGuard<'_, T> {
            match poll_noop(pin!(self.lock())) {
                Poll::Ready(guard) => guard,
                Poll::Pending => panic!("lock should be free"),
            }
        }
    }

    #[test]
    fn fifo_hand_off_without_barging() {
        let mutex = Mutex::new(Vec::new());
        let guard = mutex.try_lock().unwrap();
        let (wa, wb, wc) = (
            CountingWaker::new(),
            CountingWaker::new(),
            CountingWaker::new(),
        );
        let mut a = pin!(mutex.lock());
        let mut b = pin!(mutex.lock());
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        drop(guard);
        assert_eq!((wa.count(), wb.count()), (1, 0));
        // Handed to `a`, which has not run yet: newcomers must queue.
        assert!(mutex.is_locked() && mutex.try_lock().is_none());
        let mut c = pin!(mutex.lock());
        assert!(wc.poll(c.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        let Poll::Ready(mut guard) = wa.poll(a.as_mut()) else {
            panic!("a owns the lock")
        };
        guard.push('a');
        drop(guard);
        assert_eq!((wb.count(), wc.count()), (1, 0));
        let Poll::Ready(mut guard) = wb.poll(b.as_mut()) else {
            panic!("b owns the lock")
        };
        guard.push('b');
        drop(guard);
        let Poll::Ready(mut guard) = wc.poll(c.as_mut()) else {
            panic!("c owns the lock")
        };
        guard.push('c');
        drop(guard);
        assert!(!mutex.is_locked());
        assert_eq!(*mutex.try_lock().unwrap(), ['a', 'b', 'c']);
    }

    #[test]
    fn dropping_a_waiting_future_leaves_the_queue() {
        let mutex = Mutex::new(());
        let guard = mutex.try_lock().unwrap();
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = Box::pin(mutex.lock());
        let mut b = pin!(mutex.lock());
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        drop(a);
        assert_eq!(mutex.state.waiters.len(), 1);
        drop(guard);
        assert_eq!((wa.count(), wb.count()), (0, 1));
        assert!(wb.poll(b.as_mut()).is_ready());
    }

    #[test]
    fn dropping_a_notified_future_passes_the_lock_on() {
        let mutex = Mutex::new(());
        let guard = mutex.try_lock().unwrap();
        let (wa, wb) = (CountingWaker::new(), CountingWaker::new());
        let mut a = Box::pin(mutex.lock());
        let mut b = pin!(mutex.lock());
        assert!(wa.poll(a.as_mut()).is_pending());
        assert!(wb.poll(b.as_mut()).is_pending());
        drop(guard);
        assert_eq!((wa.count(), wb.count()), (1, 0));
        drop(a); // owned the lock without having run
        assert_eq!(wb.count(), 1);
        let Poll::Ready(guard) = wb.poll(b.as_mut()) else {
            panic!("lost wake-up")
        };
        drop(guard);
        assert!(!mutex.is_locked());
    }

    #[test]
    fn dropping_the_last_notified_future_unlocks() {
        let mutex = Mutex::new(());
        let guard = mutex.try_lock().unwrap();
        let mut a = Box::pin(mutex.lock());
        assert!(poll_noop(a.as_mut()).is_pending());
        drop(guard);
        assert!(mutex.is_locked());
        drop(a);
        assert!(!mutex.is_locked() && mutex.try_lock().is_some());
    }

    #[test]
    fn repoll_with_a_new_waker_wakes_the_new_one() {
        let mutex = Mutex::new(());
        let guard = mutex.try_lock().unwrap();
        let (old, new) = (CountingWaker::new(), CountingWaker::new());
        let mut a = pin!(mutex.lock());
        assert!(old.poll(a.as_mut()).is_pending());
        assert!(new.poll(a.as_mut()).is_pending());
        drop(guard);
        assert_eq!((old.count(), new.count()), (0, 1));
        assert!(new.poll(a.as_mut()).is_ready());
    }

    #[test]
    #[should_panic(expected = "polled after completion")]
    fn poll_after_completion_panics() {
        let mutex = Mutex::new(());
        let mut a = pin!(mutex.lock());
        let _guard = poll_noop(a.as_mut());
        let _ = poll_noop(a.as_mut());
    }
}
