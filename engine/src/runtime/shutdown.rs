//! Graceful shutdown: one request, seen by every core.
//!
//! A shutdown is requested by SIGINT/SIGTERM (through a signalfd read on the first core) or by
//! [`RuntimeHandle::shutdown`](super::RuntimeHandle::shutdown) from any thread. The request sets
//! a flag and wakes every core's ring; each core notices it at its next loop turn (one relaxed
//! load per turn) and wakes the tasks awaiting [`requested`]: listeners stop accepting, services
//! drain. Each core's main future then has the runtime's grace period to finish before it is
//! cancelled (dropped), which cancels its scopes and their tasks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::cross::remote::Remote;
use crate::runtime::context;

/// The runtime-wide half: the flag and every core's remote.
#[derive(Debug, Default)]
pub(crate) struct ShutdownShared {
    requested: AtomicBool,
    remotes: Mutex<Vec<Arc<Remote>>>,
    pub(crate) grace: Duration,
}

impl ShutdownShared {
    pub(crate) fn new(grace: Duration) -> Arc<ShutdownShared> {
        Arc::new(ShutdownShared {
            grace,
            ..Default::default()
        })
    }

    pub(crate) fn add_core(&self, remote: Arc<Remote>) {
        let requested = {
            let mut remotes = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
            remotes.push(remote.clone());
            self.requested.load(Ordering::Acquire)
        };
        if requested {
            remote.notify();
        }
    }

    /// Forgets a finished core (its remote holds the core's eventfd and ring fd open).
    pub(crate) fn remove_core(&self, remote: &Arc<Remote>) {
        let removed = {
            let mut remotes = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
            let before = remotes.len();
            remotes.retain(|r| !Arc::ptr_eq(r, remote));
            before != remotes.len()
        };
        debug_assert!(removed, "a core is removed once");
    }

    /// Starts the graceful shutdown (idempotent).
    pub(crate) fn request(&self) {
        if self.requested.swap(true, Ordering::AcqRel) {
            return;
        }
        let remotes = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
        for remote in remotes.iter() {
            remote.notify();
        }
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }
}

/// One core's view of the shutdown.
#[derive(Debug)]
pub(crate) struct CoreShutdown {
    shared: Arc<ShutdownShared>,
    seen: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl CoreShutdown {
    pub(crate) fn new(shared: Arc<ShutdownShared>) -> CoreShutdown {
        CoreShutdown {
            shared,
            seen: Cell::new(false),
            waiters: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<ShutdownShared> {
        &self.shared
    }

    /// Called every loop turn: wakes the waiters the first time the request is seen.
    pub(crate) fn check(&self) {
        if !self.seen.get() && self.shared.is_requested() {
            self.seen.set(true);
            for w in self.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    fn poll_requested(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.check();
        if self.seen.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Resolves when a graceful shutdown of this runtime has been requested.
///
/// Servers await it (usually raced against their accept loop with
/// [`first`](crate::first)) to stop accepting and drain.
///
/// # Cancel safety
///
/// Cancel-safe: dropping it only forgets its waker; nothing is consumed.
pub fn requested() -> ShutdownRequested {
    ShutdownRequested { _private: () }
}

/// Whether a graceful shutdown of the current runtime has been requested.
pub fn is_requested() -> bool {
    context::with_core(|core| {
        core.shutdown.check();
        core.shutdown.seen.get()
    })
    .unwrap_or(false)
}

/// The future of [`requested`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct ShutdownRequested {
    _private: (),
}

impl Future for ShutdownRequested {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        context::with_core(|core| core.shutdown.poll_requested(cx)).unwrap_or(Poll::Pending)
    }
}
