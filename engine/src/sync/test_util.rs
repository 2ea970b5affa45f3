//! Test helpers: a waker that counts its wake-ups, and hand-polling.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A waker that counts how often it (or any clone of it) was woken.
pub(crate) struct CountingWaker {
    count: Arc<Count>,
    waker: Waker,
}

impl CountingWaker {
    pub(crate) fn new() -> Self {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        Self { count, waker }
    }

    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Wake-ups so far.
    pub(crate) fn count(&self) -> usize {
        self.count.0.load(Ordering::Relaxed)
    }

    /// Polls `fut` once with this waker.
    pub(crate) fn poll<F: Future + ?Sized>(&self, fut: Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(&self.waker))
    }
}

/// Polls `fut` once with a waker that does nothing.
pub(crate) fn poll_noop<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}
