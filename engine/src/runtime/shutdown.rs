//! Graceful shutdown: one request, seen by every core.
//!
//! A shutdown is requested by SIGINT/SIGTERM (through a signalfd read on the first core) or by
//! [`RuntimeHandle::shutdown`](super::RuntimeHandle::shutdown) from any thread. The request sets
//! a flag and wakes every core's ring; each core looks at the flag when it drains that wake (and
//! every 1,024 loop turns besides), not every turn: the flag's line is shared by every core, and
//! reading it once per turn was a cache miss per turn (3.8% of a busy relay core's user time).
//! The request's store and the wake's flag are sequentially consistent with the core's clear
//! and load (see `cross::remote`), so a wake coalesced with one already pending is drained after
//! the request is visible. The core then wakes the tasks awaiting [`requested`]: listeners stop
//! accepting, services drain. Each core's main future then has the runtime's grace period to
//! finish before it is cancelled (dropped), which cancels its scopes and their tasks.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::cross::remote::Remote;
use crate::runtime::context;
use crate::sync::{WaitQueue, WaiterKey};

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
        if self.requested.swap(true, Ordering::SeqCst) {
            return;
        }
        let remotes = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
        for remote in remotes.iter() {
            remote.notify();
        }
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// One core's view of the shutdown.
#[derive(Debug)]
pub(crate) struct CoreShutdown {
    shared: Arc<ShutdownShared>,
    seen: Cell<bool>,
    /// The tasks awaiting [`requested`]: one entry per live future, removed when it drops
    /// (a connection's handler races every read against the request, so the entries must
    /// not outlive the futures nor be searched per poll).
    waiters: WaitQueue,
}

impl CoreShutdown {
    pub(crate) fn new(shared: Arc<ShutdownShared>) -> CoreShutdown {
        CoreShutdown {
            shared,
            seen: Cell::new(false),
            waiters: WaitQueue::new(),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<ShutdownShared> {
        &self.shared
    }

    /// Called when the core drains its cross-thread wakes (and every 1,024 turns): wakes the
    /// waiters the first time the request is seen.
    #[inline]
    pub(crate) fn check(&self) {
        if !self.seen.get() && self.shared.is_requested() {
            self.seen.set(true);
            self.waiters.notify_all();
        }
    }

    /// Polls one [`ShutdownRequested`]: registers its waiter on the first poll, refreshes
    /// its waker on later ones (O(1) either way).
    fn poll_requested(&self, key: &mut Option<WaiterKey>, cx: &mut Context<'_>) -> Poll<()> {
        self.check();
        if self.seen.get() {
            if let Some(key) = key.take() {
                self.waiters.cancel(key);
            }
            return Poll::Ready(());
        }
        match key {
            Some(key) => self.waiters.update(key, cx.waker()),
            None => *key = Some(self.waiters.register(cx.waker())),
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
    ShutdownRequested { waiter: None }
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
    /// Its entry in the core's waiter queue, once polled, and that core's executor id.
    waiter: Option<(u16, WaiterKey)>,
}

impl Future for ShutdownRequested {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        context::with_core(|core| {
            let id = core.executor.id();
            // A future moved to another core leaves its entry in that core's queue (which is
            // not reachable from here) and registers afresh on this one.
            let mut key = match this.waiter.take() {
                Some((owner, key)) if owner == id => Some(key),
                _ => None,
            };
            let poll = core.shutdown.poll_requested(&mut key, cx);
            this.waiter = key.map(|key| (id, key));
            poll
        })
        .unwrap_or(Poll::Pending)
    }
}

impl Drop for ShutdownRequested {
    fn drop(&mut self) {
        let Some((owner, key)) = self.waiter.take() else {
            return;
        };
        let mut key = Some(key);
        context::with_core(|core| {
            if core.executor.id() == owner {
                if let Some(key) = key.take() {
                    core.shutdown.waiters.cancel(key);
                }
            }
        });
        // Off its core (or after the core ended) the entry cannot be reached: it goes with
        // that core's queue.
        let _unreachable = key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: every `requested()` future polled and then dropped (a connection's handler
    /// races each read against it) used to leave its waker in the core's list for good, and
    /// every poll searched that list.
    #[test]
    fn polled_then_dropped_waiters_leave_no_entry() {
        crate::block_on(async {
            for _ in 0..100 {
                let mut waiting = std::pin::pin!(requested());
                std::future::poll_fn(|cx| {
                    assert!(waiting.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
            }
            let left = context::with_core(|core| core.shutdown.waiters.len());
            assert_eq!(left, Some(0));
        });
    }
}
