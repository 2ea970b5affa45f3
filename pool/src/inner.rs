//! The pool's state on its core: slots, idle connections, counters.
//!
//! # Slots
//!
//! A [`Semaphore`] with `max` permits is the pool's capacity. A checkout holds one permit from
//! the moment it gets a slot until its connection comes back: while it creates or
//! health-checks a connection (a [`Slot`]) and while the holder uses it (a
//! [`PooledConn`]). Idle connections hold no permit. Invariant: idle + slots held <= `max`,
//! because an idle connection only appears when a holder returns its permit, and a slot
//! holder creates a connection only when it found no idle one. So the number of connections
//! (created, being created, in use or idle) never exceeds `max`.
//!
//! # FIFO hand-off
//!
//! The semaphore serves waiters in arrival order and hands a returned permit to the oldest
//! waiter before it runs; newcomers cannot barge past it. A returned connection goes to the
//! idle list first and its permit to that waiter, which takes the newest idle connection when
//! it runs (so the returned one, unless a newer one came back meanwhile). A waiter dropped
//! after the hand-off passes the permit on (the semaphore's cancel safety), and the
//! connection stays idle for the next one: nothing is lost.
//!
//! # Expiry
//!
//! Each idle connection carries the instant it expires (the earlier of its idle deadline and
//! its end of life), or none; `Instant::now()` is read only when a deadline is configured.
//! Idle connections are taken newest first (LIFO), so the oldest ones, at the front, are the
//! first to expire and the surplus over a busy period dies off.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::rc::Rc;
use std::time::Instant;

use percore_engine::sync::{Event, Semaphore, TryAcquireError};

use crate::builder::{Config, Factory, HealthCheck};
use crate::conn::{PooledConn, Tracked};
use crate::error::PoolError;
use crate::stats::{CounterCell, PoolStats};

/// Why the pool closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discard {
    /// Marked broken, holder failed or panicked, or failed the health check.
    Broken,
    /// Idle or alive too long.
    Expired,
    /// Returned while `max_idle` connections rested and nobody waited.
    Surplus,
    /// The pool is closed.
    Closed,
}

/// An idle connection and when it expires.
struct Idle<C> {
    tracked: Tracked<C>,
    expires_at: Option<Instant>,
}

/// The state shared by a pool's handles and guards.
pub(crate) struct Inner<C> {
    pub(crate) config: Config,
    pub(crate) factory: Factory<C>,
    pub(crate) check: Option<HealthCheck<C>>,
    slots: Semaphore,
    /// Slots held: connections in use plus pending checkouts.
    held: Cell<usize>,
    in_use: Cell<usize>,
    waiting: Cell<usize>,
    idle: RefCell<VecDeque<Idle<C>>>,
    pub(crate) counters: CounterCell,
    pub(crate) closed: Event,
}

/// One unit of capacity held by a checkout that has no connection yet; released on drop (the
/// checkout failed, timed out or was cancelled).
pub(crate) struct Slot<'a, C> {
    inner: &'a Inner<C>,
}

impl<C> Slot<'_, C> {
    /// Turns the slot into a guard over `tracked` (the permit moves into the guard).
    pub(crate) fn into_conn(self, pool: &Rc<Inner<C>>, tracked: Tracked<C>) -> PooledConn<C> {
        debug_assert!(std::ptr::eq(self.inner, &**pool));
        mem::forget(self);
        pool.in_use.set(pool.in_use.get() + 1);
        pool.counters.bump(|c| c.checkouts += 1);
        PooledConn::new(pool.clone(), tracked)
    }
}

impl<C> Drop for Slot<'_, C> {
    fn drop(&mut self) {
        self.inner.release_slot();
    }
}

/// Counts a checkout as waiting while it lives.
struct Queued<'a>(&'a Cell<usize>);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl<C> Inner<C> {
    pub(crate) fn new(config: Config, factory: Factory<C>, check: Option<HealthCheck<C>>) -> Self {
        Inner {
            slots: Semaphore::new(config.max),
            config,
            factory,
            check,
            held: Cell::new(0),
            in_use: Cell::new(0),
            waiting: Cell::new(0),
            idle: RefCell::new(VecDeque::new()),
            counters: CounterCell::default(),
            closed: Event::new(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_set()
    }

    pub(crate) fn ensure_open(&self) -> Result<(), PoolError> {
        match self.is_closed() {
            true => Err(PoolError::Closed),
            false => Ok(()),
        }
    }

    /// A slot if one is free and nobody is queued for one.
    pub(crate) fn try_slot(&self) -> Result<Option<Slot<'_, C>>, PoolError> {
        match self.slots.try_acquire(1) {
            Ok(permit) => {
                permit.forget();
                self.held.set(self.held.get() + 1);
                Ok(Some(Slot { inner: self }))
            }
            Err(TryAcquireError::Closed) => Err(PoolError::Closed),
            Err(TryAcquireError::NoPermits) => Ok(None),
        }
    }

    /// Queues for a slot (FIFO). Cancel safe: see the module docs.
    pub(crate) async fn wait_slot(&self) -> Result<Slot<'_, C>, PoolError> {
        self.waiting.set(self.waiting.get() + 1);
        let _queued = Queued(&self.waiting);
        let permit = self.slots.acquire(1).await.map_err(|_| PoolError::Closed)?;
        permit.forget();
        self.held.set(self.held.get() + 1);
        Ok(Slot { inner: self })
    }

    pub(crate) fn release_slot(&self) {
        self.held.set(self.held.get() - 1);
        self.slots.add_permits(1);
    }

    /// The newest idle connection that has not expired; expired ones met on the way are
    /// closed.
    pub(crate) fn take_idle(&self) -> Option<Tracked<C>> {
        let mut now = None;
        loop {
            let idle = self.idle.borrow_mut().pop_back()?;
            match idle.expires_at {
                Some(at) if at <= *now.get_or_insert_with(Instant::now) => {
                    self.discard(idle.tracked.conn, Discard::Expired);
                }
                _ => return Some(idle.tracked),
            }
        }
    }

    /// Takes back a connection from a guard (`failed`: it must not be reused), then frees its
    /// slot. The connection is closed before the slot goes to a waiter.
    pub(crate) fn give_back(&self, tracked: Tracked<C>, failed: bool) {
        self.in_use.set(self.in_use.get() - 1);
        let verdict = if failed {
            Err(Discard::Broken)
        } else if self.is_closed() {
            Err(Discard::Closed)
        } else {
            self.keep_idle(tracked.dies_at)
        };
        match verdict {
            Ok(expires_at) => self.idle.borrow_mut().push_back(Idle {
                tracked,
                expires_at,
            }),
            Err(why) => self.discard(tracked.conn, why),
        }
        self.release_slot();
    }

    /// Whether a returned connection may rest (`Ok(its expiry)`), or why not.
    fn keep_idle(&self, dies_at: Option<Instant>) -> Result<Option<Instant>, Discard> {
        if self.idle.borrow().len() >= self.config.max_idle && self.waiting.get() == 0 {
            return Err(Discard::Surplus);
        }
        let Some(idle_timeout) = self.config.idle_timeout else {
            return match dies_at {
                Some(at) if at <= Instant::now() => Err(Discard::Expired),
                _ => Ok(dies_at),
            };
        };
        let now = Instant::now();
        match dies_at {
            Some(at) if at <= now => Err(Discard::Expired),
            Some(at) => Ok(Some(at.min(now + idle_timeout))),
            None => Ok(Some(now + idle_timeout)),
        }
    }

    /// Closes `conn` (drops it), counting why.
    pub(crate) fn discard(&self, conn: C, why: Discard) {
        self.counters.bump(|c| {
            c.discarded += 1;
            match why {
                Discard::Broken => c.broken += 1,
                Discard::Expired => c.expired += 1,
                Discard::Surplus | Discard::Closed => {}
            }
        });
        drop(conn);
    }

    /// Closes the idle connections that expired, and the surplus over `max_idle` when nobody
    /// waits (left by waiters that gave up after a hand-off). Returns how many it closed.
    pub(crate) fn reap(&self) -> usize {
        let now = Instant::now();
        let keep = match self.waiting.get() {
            0 => self.config.max_idle,
            _ => usize::MAX,
        };
        let doomed: Vec<(Tracked<C>, Discard)> = {
            let mut idle = self.idle.borrow_mut();
            let mut doomed = Vec::new();
            let mut kept = VecDeque::with_capacity(idle.len());
            // Newest last: walk from the back so the newest survive a surplus trim.
            while let Some(entry) = idle.pop_back() {
                if entry.expires_at.is_some_and(|at| at <= now) {
                    doomed.push((entry.tracked, Discard::Expired));
                } else if kept.len() >= keep {
                    doomed.push((entry.tracked, Discard::Surplus));
                } else {
                    kept.push_front(entry);
                }
            }
            *idle = kept;
            doomed
        };
        let closed = doomed.len();
        for (tracked, why) in doomed {
            self.discard(tracked.conn, why);
        }
        closed
    }

    /// Marks the pool closed, fails the waiters, closes the idle connections.
    pub(crate) fn close(&self) {
        if self.is_closed() {
            return;
        }
        self.closed.set();
        self.slots.close();
        let idle = mem::take(&mut *self.idle.borrow_mut());
        for entry in idle {
            self.discard(entry.tracked.conn, Discard::Closed);
        }
    }

    /// A connection taken out of the pool for good ([`PooledConn::detach`]).
    pub(crate) fn forget_conn(&self) {
        self.in_use.set(self.in_use.get() - 1);
        self.release_slot();
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let c = self.counters.get();
        PoolStats {
            max: self.config.max,
            in_use: self.in_use.get(),
            idle: self.idle.borrow().len(),
            pending: self.held.get() - self.in_use.get(),
            waiting: self.waiting.get(),
            checkouts: c.checkouts,
            created: c.created,
            discarded: c.discarded,
            broken: c.broken,
            expired: c.expired,
            create_failures: c.create_failures,
            timeouts: c.timeouts,
        }
    }
}

impl<C> fmt::Debug for Inner<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.config)
            .field("closed", &self.is_closed())
            .field("stats", &self.stats())
            .finish()
    }
}
