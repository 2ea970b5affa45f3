//! The pool's state on its core: slots, idle connections, counters.
//!
//! # Slots
//!
//! A [`Semaphore`] with `max` permits is the pool's capacity. A checkout holds one permit from
//! the moment it gets a slot until its connection comes back: while it creates or
//! health-checks a connection (a [`Slot`]) and while the holder uses it (a
//! [`PooledConn`]). Idle connections hold no permit. Invariant: idle + slots held <= `max`,
//! because an idle connection only appears when a holder returns its permit, and a slot
//! holder creates a connection only when it takes no idle one. So the number of connections
//! (created, being created, in use or idle) never exceeds `max`.
//!
//! A returned connection's slot is freed by a guard made first thing in
//! [`Inner::give_back`]: closing a connection runs its `Drop`, user code that may panic, and
//! the slot must come back all the same.
//!
//! # FIFO hand-off
//!
//! The semaphore serves waiters in arrival order and hands a returned permit to the oldest
//! waiter before it runs; newcomers cannot barge past it. A returned connection goes to the
//! idle list first and its permit to that waiter, which takes the newest idle connection when
//! it runs. Until then the connection is the waiter's: a checkout takes an idle connection
//! only while more rest than there are waiters handed a permit and not yet run
//! ([`Semaphore::granted`]), so a newcomer that finds a free slot (another holder's connection
//! was discarded) makes a new connection instead. A waiter dropped after the hand-off passes
//! the permit on (the semaphore's cancel safety), and the connection stays idle for the next
//! one: nothing is lost.
//!
//! # Idle list
//!
//! Returns are pushed at the back and checkouts take from the back (newest first, LIFO), so
//! the front holds the connections that rested longest. Each carries the instant it expires
//! (the earlier of its idle deadline and its end of life), or none; `Instant::now()` is read
//! only when a deadline is configured. Every checkout and return first closes the expired
//! connections at the front (each is popped once: amortised O(1)), so the surplus over a busy
//! period dies off in a pool in use, not only by [`Inner::reap`]. A return keeps at most
//! `max_idle` plus one per queued checkout (each will take one); past that the oldest idle
//! connections are closed, not the one just returned.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
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
    /// Marked broken, dropped after use without a release, or failed the health check.
    Broken,
    /// Idle or alive too long.
    Expired,
    /// More idle than `max_idle` plus the queued checkouts.
    Surplus,
    /// The pool is closed.
    Closed,
}

/// `Instant::now()`, read at most once and only if asked for.
#[derive(Default)]
struct Now(Option<Instant>);

impl Now {
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
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
    /// The error of the last failed health check, as text
    /// ([`Pool::last_check_error`](crate::Pool::last_check_error)).
    last_check_error: RefCell<Option<String>>,
    pub(crate) closed: Event,
}

/// One unit of capacity held by a checkout that has no connection yet, or by a connection on
/// its way back; released on drop (the checkout failed, timed out or was cancelled; the
/// return finished or panicked).
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
            last_check_error: RefCell::new(None),
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

    /// The newest idle connection that has not expired and is not kept for a waiter handed a
    /// slot; expired ones met on the way (and at the front) are closed.
    pub(crate) fn take_idle(&self) -> Option<Tracked<C>> {
        let mut now = Now::default();
        self.expire_front(&mut now);
        loop {
            let idle = {
                let mut idle = self.idle.borrow_mut();
                // The rest are for the waiters handed a slot that have not run yet.
                if idle.len() <= self.slots.granted() {
                    return None;
                }
                idle.pop_back()?
            };
            match idle.expires_at {
                Some(at) if at <= now.get() => self.discard(idle.tracked.conn, Discard::Expired),
                _ => return Some(idle.tracked),
            }
        }
    }

    /// Takes back a connection from a guard (`failed`: it must not be reused), then frees its
    /// slot. Connections are closed before the slot goes to a waiter.
    pub(crate) fn give_back(&self, tracked: Tracked<C>, failed: bool) {
        // Frees the slot when this returns or unwinds: closing a connection runs its `Drop`.
        let _slot = Slot { inner: self };
        self.in_use.set(self.in_use.get() - 1);
        let mut now = Now::default();
        let verdict = if failed {
            Err(Discard::Broken)
        } else if self.is_closed() {
            Err(Discard::Closed)
        } else {
            self.idle_expiry(tracked.dies_at, &mut now)
        };
        match verdict {
            Ok(expires_at) => self.idle.borrow_mut().push_back(Idle {
                tracked,
                expires_at,
            }),
            Err(why) => self.discard(tracked.conn, why),
        }
        self.expire_front(&mut now);
        self.trim_surplus();
    }

    /// When a returned connection expires if it rests (`Ok`), or `Err` if it already has. A
    /// deadline past what an `Instant` can hold (a limit of `Duration::MAX`) is no deadline.
    fn idle_expiry(
        &self,
        dies_at: Option<Instant>,
        now: &mut Now,
    ) -> Result<Option<Instant>, Discard> {
        if dies_at.is_some_and(|at| at <= now.get()) {
            return Err(Discard::Expired);
        }
        let idle_deadline = self
            .config
            .idle_timeout
            .and_then(|limit| now.get().checked_add(limit));
        Ok(match (dies_at, idle_deadline) {
            (Some(dies), Some(idle)) => Some(dies.min(idle)),
            (dies, idle) => dies.or(idle),
        })
    }

    /// Closes the expired idle connections at the front (the oldest), up to the first that
    /// has not expired.
    fn expire_front(&self, now: &mut Now) {
        loop {
            let expired = {
                let mut idle = self.idle.borrow_mut();
                match idle.front() {
                    Some(Idle {
                        expires_at: Some(at),
                        ..
                    }) if *at <= now.get() => idle.pop_front(),
                    _ => None,
                }
            };
            let Some(entry) = expired else { return };
            self.discard(entry.tracked.conn, Discard::Expired);
        }
    }

    /// Idle connections kept: `max_idle`, plus one for each queued checkout (a waiter handed
    /// a slot takes one when it runs; the others will be handed the next returns').
    fn idle_quota(&self) -> usize {
        self.config.max_idle.saturating_add(self.waiting.get())
    }

    /// Closes the oldest idle connections over the quota.
    fn trim_surplus(&self) {
        let keep = self.idle_quota();
        loop {
            let surplus = {
                let mut idle = self.idle.borrow_mut();
                match idle.len() > keep {
                    true => idle.pop_front(),
                    false => None,
                }
            };
            let Some(entry) = surplus else { return };
            self.discard(entry.tracked.conn, Discard::Surplus);
        }
    }

    /// Counts a connection closed for `why` (before it is dropped, so a `Drop` that panics
    /// still leaves it counted).
    fn count_discard(&self, why: Discard) {
        self.counters.bump(|c| {
            c.discarded += 1;
            match why {
                Discard::Broken => c.broken += 1,
                Discard::Expired => c.expired += 1,
                Discard::Surplus | Discard::Closed => {}
            }
        });
    }

    /// Closes `conn` (drops it), counting why.
    pub(crate) fn discard(&self, conn: C, why: Discard) {
        self.count_discard(why);
        drop(conn);
    }

    /// A health check failed: its connection is gone (the check consumed it); counted as
    /// broken, and the error kept so the failure is never silent.
    pub(crate) fn check_failed(&self, error: &io::Error) {
        self.count_discard(Discard::Broken);
        self.counters.bump(|c| c.check_failures += 1);
        *self.last_check_error.borrow_mut() = Some(error.to_string());
    }

    pub(crate) fn last_check_error(&self) -> Option<String> {
        self.last_check_error.borrow().clone()
    }

    /// Closes the idle connections that expired, and the oldest over the quota (left by
    /// waiters that gave up after a hand-off). Returns how many it closed.
    pub(crate) fn reap(&self) -> usize {
        let now = Instant::now();
        let keep = self.idle_quota();
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
        // All counted before any is dropped: a `Drop` that panics leaves none uncounted.
        for (_, why) in &doomed {
            self.count_discard(*why);
        }
        let closed = doomed.len();
        drop(doomed);
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
        // All counted before any is dropped: a `Drop` that panics leaves none uncounted.
        for _ in &idle {
            self.count_discard(Discard::Closed);
        }
        drop(idle);
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
            check_failures: c.check_failures,
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
