//! A future adapter that turns a panic during a poll into an `Err` with the payload.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls the inner future, catching panics.
pub(crate) struct CatchUnwind<F> {
    future: F,
}

impl<F> CatchUnwind<F> {
    pub(crate) fn new(future: F) -> Self {
        CatchUnwind { future }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of the pinned adapter.
        let future = unsafe { self.map_unchecked_mut(|s| &mut s.future) };
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}

/// Polls `future` catching panics, drops it, then hands its outcome to `done`. The one future
/// a scope's child task runs: written out (not an `async` block awaiting a [`CatchUnwind`])
/// so the child's future is stored once, not once as a captured value and again as the
/// awaited one.
pub(crate) struct CatchThen<F, D> {
    future: Option<F>,
    done: Option<D>,
}

impl<F, D> CatchThen<F, D> {
    pub(crate) fn new(future: F, done: D) -> Self {
        CatchThen {
            future: Some(future),
            done: Some(done),
        }
    }
}

impl<F: Future, D: FnOnce(std::thread::Result<F::Output>)> Future for CatchThen<F, D> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `future` is structurally pinned: it is only polled through the pin built
        // below and dropped in place (by overwriting the Option), never moved; `done` is not
        // pinned and is only taken out by value.
        let this = unsafe { self.get_unchecked_mut() };
        let Some(future) = this.future.as_mut() else {
            return Poll::Ready(());
        };
        // SAFETY: as above, the future stays where it is until it is dropped in place.
        let future = unsafe { Pin::new_unchecked(future) };
        let outcome = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(v)) => Ok(v),
            Err(p) => Err(p),
        };
        // Dropped in place before the outcome is reported, as an awaited future would be. A
        // panic in its destructor is the child's panic too.
        let outcome = match catch_unwind(AssertUnwindSafe(|| this.future = None)) {
            Ok(()) => outcome,
            Err(p) => Err(p),
        };
        if let Some(done) = this.done.take() {
            done(outcome);
        }
        Poll::Ready(())
    }
}
