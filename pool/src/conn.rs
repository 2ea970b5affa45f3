//! [`PooledConn`]: the guard over a checked-out connection.
//!
//! The guard owns the connection and the slot it occupies. Giving it back frees both: the
//! connection rests in the pool (or is closed: surplus, expired, pool closed) and the slot
//! goes to the oldest waiter.
//!
//! # Telling a finished exchange from an abandoned one
//!
//! A connection whose holder stopped half-way (an error returned with `?`, a timeout, a
//! cancelled task, a panic) may hold half a request or an unread reply, and the next holder
//! must not inherit that. A guard cannot see why it is dropped, so it tracks use instead:
//!
//! - taking `&mut C` ([`DerefMut`]) marks the connection *in use*;
//! - [`PooledConn::release`] says the exchange is complete: the connection goes back;
//! - a guard dropped after mutable use without `release` is discarded (counted as broken);
//! - a guard never used mutably goes back on drop (nothing was started on it);
//! - [`PooledConn::mark_broken`], or a drop while the thread panics, always discards.
//!
//! [`Pool::with`](crate::Pool::with) releases on `Ok` and discards on `Err`, panic and
//! cancellation.

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
            // A lifetime past what an `Instant` can hold (`Duration::MAX`) is none.
            dies_at: max_lifetime.and_then(|limit| Instant::now().checked_add(limit)),
        }
    }
}

/// A connection checked out of a [`Pool`](crate::Pool); derefs to it. Call
/// [`release`](Self::release) when an exchange is complete.
///
/// The guard cannot tell why it is dropped, so it goes by use: once the connection was used
/// through `&mut C` ([`DerefMut`]), dropping the guard without [`release`](Self::release)
/// *discards* the connection (closes it, counted in
/// [`PoolStats::broken`](crate::PoolStats::broken)): its holder may have stopped mid-exchange
/// (an error returned with `?`, a timeout, a cancelled task, a panic) and left half a request
/// or an unread reply on it. A guard never used mutably goes back into the pool on drop.
/// [`mark_broken`](Self::mark_broken), or a drop during a panic, always discards.
///
/// Only `&mut` use is seen: for a connection type whose I/O takes `&self` (such as
/// `percore_net::tcp::TcpStream`), start the exchange through `&mut *conn` (or use
/// [`Pool::with`](crate::Pool::with)), or a holder that stops half-way returns it as healthy.
///
/// # Examples
///
/// ```ignore
/// let mut conn = pool.get().await?;
/// conn.write(b"PING\r\n").await?; // an error here drops `conn`: discarded
/// conn.flush().await?;
/// let reply = conn.read_line(1024).await?; // so is a timeout or cancellation here
/// conn.release(); // complete: back into the pool
/// ```
pub struct PooledConn<C> {
    pool: Rc<Inner<C>>,
    tracked: Option<Tracked<C>>,
    broken: bool,
    /// Used through `&mut C` since checkout: an exchange may be half done.
    used: bool,
}

impl<C> PooledConn<C> {
    pub(crate) fn new(pool: Rc<Inner<C>>, tracked: Tracked<C>) -> PooledConn<C> {
        PooledConn {
            pool,
            tracked: Some(tracked),
            broken: false,
            used: false,
        }
    }

    /// Gives the connection back after a complete exchange: it rests in the pool for the
    /// next checkout (unless [marked broken](Self::mark_broken), surplus, expired or the pool
    /// closed).
    ///
    /// Call it once the exchange that used the connection is finished; a guard used mutably
    /// and dropped without it is discarded.
    pub fn release(mut self) {
        let tracked = self.take();
        self.pool.give_back(tracked, self.broken);
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
        self.used = true;
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
            // Not released: after mutable use the holder may have stopped mid-exchange.
            let failed = self.broken || self.used || std::thread::panicking();
            self.pool.give_back(tracked, failed);
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for PooledConn<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConn")
            .field("conn", &self.tracked.as_ref().map(|t| &t.conn))
            .field("broken", &self.broken)
            .field("used", &self.used)
            .finish()
    }
}
