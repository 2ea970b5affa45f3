//! Cancel scopes: deadlines and a cancel button around a future.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::time::{sleep_until, Instant, Timeout};

// These are plain functions returning a future, not `async fn`s: an `async fn` keeps each
// argument it takes by value in its future for its whole life, so the future it wraps would
// be held twice (three times through `move_on_after`'s call of `move_on_at`).

/// Runs `future` for at most `duration` (from now, when this is called); `None` if the
/// deadline passed first (trio's `move_on_after`).
///
/// # Cancel safety
///
/// Dropping it drops `future`. At the deadline `future` is dropped, so it must be safe to
/// cancel (every engine op is).
pub fn move_on_after<F: Future>(duration: Duration, future: F) -> MoveOn<F> {
    move_on_at(
        crate::time::deadline_after(Instant::now(), duration),
        future,
    )
}

/// Like [`move_on_after`] with an absolute deadline.
///
/// # Cancel safety
///
/// As [`move_on_after`].
pub fn move_on_at<F: Future>(deadline: Instant, future: F) -> MoveOn<F> {
    MoveOn(crate::time::timeout_at(deadline, future))
}

/// The future of [`move_on_after`] and [`move_on_at`]: the inner future and its timer, no
/// more.
///
/// # Cancel safety
///
/// As [`move_on_after`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct MoveOn<F>(Timeout<F>);

impl<F: Future> Future for MoveOn<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: the one field is structurally pinned: it is never moved out of a pinned
        // `MoveOn`, which has no `Drop` and is `Unpin` only if the field is.
        let inner = unsafe { self.map_unchecked_mut(|m| &mut m.0) };
        inner.poll(cx).map(Result::ok)
    }
}

/// Runs `future` for at most `duration` (from now, when this is called); `Err(Elapsed)` if
/// the deadline passed first (trio's `fail_after`).
///
/// # Errors
///
/// [`Elapsed`](crate::time::Elapsed) when the deadline passed.
///
/// # Cancel safety
///
/// As [`move_on_after`].
pub fn fail_after<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    crate::time::timeout(duration, future)
}

/// Like [`fail_after`] with an absolute deadline.
///
/// # Errors
///
/// [`Elapsed`](crate::time::Elapsed) when the deadline passed.
///
/// # Cancel safety
///
/// As [`move_on_after`].
pub fn fail_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    crate::time::timeout_at(deadline, future)
}

struct CancelState {
    cancelled: Cell<bool>,
    deadline: Cell<Option<Instant>>,
    /// The wakers of the `run`s going on now (one per task: clones of a scope may run
    /// futures in several tasks at once, and a cancel must reach every one).
    wakers: RefCell<Vec<Waker>>,
}

/// A cancel scope with a movable deadline and a cancel button, shareable on one core.
///
/// [`CancelScope::run`] runs a future until it finishes, the scope is cancelled, or the
/// deadline passes, whichever is first; clones of the scope can cancel it or move its deadline
/// from elsewhere.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use percore_engine::scope::CancelScope;
///
/// percore_engine::block_on(async {
///     let scope = CancelScope::new();
///     let remote = scope.clone();
///     remote.cancel();
///     let r = scope.run(percore_engine::time::sleep(Duration::from_secs(60))).await;
///     assert!(r.is_none());
/// });
/// ```
#[derive(Clone)]
pub struct CancelScope {
    state: Rc<CancelState>,
}

impl fmt::Debug for CancelScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelScope")
            .field("cancelled", &self.state.cancelled.get())
            .field("deadline", &self.state.deadline.get())
            .finish()
    }
}

impl Default for CancelScope {
    fn default() -> Self {
        CancelScope::new()
    }
}

impl CancelScope {
    /// A scope with no deadline.
    pub fn new() -> CancelScope {
        CancelScope {
            state: Rc::new(CancelState {
                cancelled: Cell::new(false),
                deadline: Cell::new(None),
                wakers: RefCell::new(Vec::new()),
            }),
        }
    }

    /// A scope that cancels itself at `deadline`.
    pub fn with_deadline(deadline: Instant) -> CancelScope {
        let scope = CancelScope::new();
        scope.state.deadline.set(Some(deadline));
        scope
    }

    /// Cancels the scope: a running [`CancelScope::run`] drops its future and returns `None`.
    pub fn cancel(&self) {
        self.state.cancelled.set(true);
        self.wake();
    }

    /// Whether the scope is cancelled (by [`CancelScope::cancel`] or its deadline).
    pub fn is_cancelled(&self) -> bool {
        self.state.cancelled.get()
            || self
                .state
                .deadline
                .get()
                .is_some_and(|d| Instant::now() >= d)
    }

    /// Moves (or sets) the deadline.
    pub fn set_deadline(&self, deadline: Instant) {
        self.state.deadline.set(Some(deadline));
        self.wake();
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.state.deadline.get()
    }

    fn wake(&self) {
        let wakers = std::mem::take(&mut *self.state.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// Runs `future` inside the scope: `Some(output)` if it finished, `None` if the scope was
    /// cancelled first. The future is polled before the scope is checked, so a result that
    /// exists is returned even if the scope was cancelled at the same moment.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops `future`.
    #[allow(clippy::manual_async_fn)] // an `async fn` would hold `future` twice
    pub fn run<F: Future>(
        &self,
        mut future: F,
    ) -> impl Future<Output = Option<F::Output>> + use<'_, F> {
        // Not an `async fn`, which would keep `future` twice (see the top of this file).
        async move {
            // SAFETY: `future` lives in this block's state, pinned from its first poll on,
            // and is never moved out of it: pinned in place as `pin!` pins a local, without
            // the local's second copy (`pin!(future)` would keep the captured one too).
            let mut future = unsafe { Pin::new_unchecked(&mut future) };
            let mut timer = None::<(Instant, crate::time::Sleep)>;
            let registered = Registered {
                state: &self.state,
                waker: RefCell::new(None),
            };
            std::future::poll_fn(|cx| {
                if let Poll::Ready(out) = future.as_mut().poll(cx) {
                    return Poll::Ready(Some(out));
                }
                if self.state.cancelled.get() {
                    return Poll::Ready(None);
                }
                if let Some(deadline) = self.state.deadline.get() {
                    let sleep = match &mut timer {
                        Some((at, sleep)) if *at == deadline => sleep,
                        _ => {
                            timer = Some((deadline, sleep_until(deadline)));
                            &mut timer.as_mut().expect("just set").1
                        }
                    };
                    if std::pin::Pin::new(sleep).poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                }
                registered.register(cx.waker());
                Poll::Pending
            })
            .await
        }
    }
}

/// One `run`'s place among the scope's wakers, taken out when the run ends.
struct Registered<'a> {
    state: &'a CancelState,
    waker: RefCell<Option<Waker>>,
}

impl Registered<'_> {
    fn register(&self, waker: &Waker) {
        let mut wakers = self.state.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        *self.waker.borrow_mut() = Some(waker.clone());
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(own) = self.waker.get_mut().take() {
            self.state
                .wakers
                .borrow_mut()
                .retain(|w| !w.will_wake(&own));
        }
    }
}
