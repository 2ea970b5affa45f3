//! [`PooledConn`]: the guard over a checked-out connection.
//!
//! The guard owns the connection and the slot it occupies. Dropping it gives both back: the
//! connection rests in the pool (or is closed: surplus, expired, pool closed) and the slot
//! goes to the oldest waiter. It is discarded instead when its holder said it broke
//! ([`PooledConn::mark_broken`]) or when the guard is dropped while the thread unwinds from a
//! panic: a connection whose holder failed half-way may hold half a request, and the next
//! holder must not inherit that. [`Pool::with`](crate::Pool::with) applies the same rule to
//! an `Err` and to a cancelled holder.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::inner::Inner;

/// A connection and its end of life (from the pool's `max_lifetime`).
pub(crate) struct Tracked<C> {
    pub(crate) conn: C,
    pub(crate) dies_at: Option<Instant>,
}

impl<C> Tracked<C> {
    /// A fresh connection that may live `max_lifetime`.
    pub(crate) fn new(conn: C, max_lifetime: Option<Duration>) -> Tracked<C> {
        Tracked {
            conn,
            dies_at: max_lifetime.map(|limit| Instant::now() + limit),
        }
    }
}

/// A connection checked out of a [`Pool`](crate::Pool); derefs to it and gives it back when
/// dropped.
///
/// # Examples
///
/// ```ignore
/// let mut conn = pool.get().await?;
/// if let Err(e) = conn.write_all(request).await {
///     conn.mark_broken(); // closed on drop, a new one is made for the next checkout
///     return Err(e);
/// }
/// ```
pub struct PooledConn<C> {
    pool: Rc<Inner<C>>,
    tracked: Option<Tracked<C>>,
    broken: bool,
}

impl<C> PooledConn<C> {
    pub(crate) fn new(pool: Rc<Inner<C>>, tracked: Tracked<C>) -> PooledConn<C> {
        PooledConn {
            pool,
            tracked: Some(tracked),
            broken: false,
        }
    }

    /// Marks the connection as unfit for reuse: it is closed when the guard drops (counted in
    /// [`PoolStats::broken`](crate::PoolStats::broken)) and its slot freed for a new one.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Whether [`mark_broken`](Self::mark_broken) was called.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Takes the connection out of the pool for good; its slot is freed (the pool may create
    /// another) and the pool no longer counts it.
    pub fn detach(mut self) -> C {
        let tracked = self.take();
        self.pool.forget_conn();
        tracked.conn
    }

    pub(crate) fn set_broken(&mut self, broken: bool) {
        self.broken = broken;
    }

    fn take(&mut self) -> Tracked<C> {
        self.tracked
            .take()
            .expect("a live guard holds its connection")
    }

    fn tracked(&self) -> &Tracked<C> {
        self.tracked
            .as_ref()
            .expect("a live guard holds its connection")
    }
}

impl<C> Deref for PooledConn<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.tracked().conn
    }
}

impl<C> DerefMut for PooledConn<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self
            .tracked
            .as_mut()
            .expect("a live guard holds its connection")
            .conn
    }
}

impl<C> Drop for PooledConn<C> {
    fn drop(&mut self) {
        if let Some(tracked) = self.tracked.take() {
            let failed = self.broken || std::thread::panicking();
            self.pool.give_back(tracked, failed);
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for PooledConn<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConn")
            .field("conn", &self.tracked.as_ref().map(|t| &t.conn))
            .field("broken", &self.broken)
            .finish()
    }
}
