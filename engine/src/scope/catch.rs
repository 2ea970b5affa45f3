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

/// Polls `future` catching panics, drops it, and resolves to what `finish` makes of its
/// outcome. Written out (not an `async` block awaiting a [`CatchUnwind`]) so that the inner
/// future is stored once, not once as a captured value and again as the awaited one: a scope's
/// child tasks (every connection of a service) are this, and an idle task is as large as its
/// future.
pub(crate) struct CatchMap<F, D> {
    future: Option<F>,
    finish: Option<D>,
}

impl<F, D> CatchMap<F, D> {
    pub(crate) fn new(future: F, finish: D) -> Self {
        CatchMap {
            future: Some(future),
            finish: Some(finish),
        }
    }
}

impl<F, D, T> Future for CatchMap<F, D>
where
    F: Future,
    D: FnOnce(std::thread::Result<F::Output>) -> T,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // SAFETY: `future` is structurally pinned: it is only polled through the pin built
        // below and dropped in place (by overwriting the Option), never moved; `finish` is not
        // pinned and is only taken out by value.
        let this = unsafe { self.get_unchecked_mut() };
        let future = this
            .future
            .as_mut()
            .expect("CatchMap polled after completion");
        // SAFETY: as above, the future stays where it is until it is dropped in place.
        let future = unsafe { Pin::new_unchecked(future) };
        let outcome = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(v)) => Ok(v),
            Err(p) => Err(p),
        };
        // Dropped in place before the outcome is used, as an awaited future would be. A panic
        // in its destructor counts as its panic.
        let outcome = match catch_unwind(AssertUnwindSafe(|| this.future = None)) {
            Ok(()) => outcome,
            Err(p) => Err(p),
        };
        let finish = this
            .finish
            .take()
            .expect("CatchMap polled after completion");
        Poll::Ready(finish(outcome))
    }
}
