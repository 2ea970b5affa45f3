//! [`Pool`]: the handle, and the checkout.
//!
//! A checkout runs in three steps, all under one deadline (the checkout timeout, started only
//! when the checkout first has to wait, so the fast path reads no clock and arms no timer):
//!
//! 1. get a slot: at once if one is free and nobody is queued, else queue (FIFO);
//! 2. with the slot, take the newest idle connection that has not expired and, if a health
//!    check is configured, check it (a failure discards it and takes the next);
//! 3. with no idle connection left, call the factory.
//!
//! Whatever the checkout holds when it fails, times out or is dropped (its slot, a connection
//! being checked or created) is released or closed by the owners' `Drop`s, so a cancelled
//! checkout never leaks a slot. See `inner.rs` for the slot invariant and the FIFO hand-off.

use std::fmt;
use std::future::Future;
use std::ops::AsyncFnOnce;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use percore_engine::time::{sleep, timeout_at};
use percore_engine::{first, First};

use crate::builder::{Builder, Config, Factory, HealthCheck};
use crate::conn::{PooledConn, Tracked};
use crate::error::PoolError;
use crate::inner::{Discard, Inner};
use crate::stats::{CounterCell, PoolStats};

/// A bounded pool of connections on one core; cheap to clone (the clones share the pool).
///
/// `!Send`: it lives on the core that built it, with the connections it holds.
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<percore_pool::Pool<std::net::TcpStream>>();
/// ```
///
/// # Examples
///
/// ```
/// use percore_net::tcp::{TcpListener, TcpStream};
/// use percore_pool::Pool;
///
/// percore_engine::block_on(async {
///     let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
///     let addr = listener.local_addr();
///     let _server = percore_engine::spawn(async move {
///         let mut open = Vec::new();
///         while let Ok((conn, _)) = listener.accept().await {
///             open.push(conn);
///         }
///     });
///     let pool = Pool::builder(2).build(move || TcpStream::connect(addr));
///     let first = pool.get().await.unwrap();
///     drop(first); // back into the pool
///     let again = pool.get().await.unwrap(); // the same connection
///     assert_eq!(pool.stats().created, 1);
///     drop(again);
///     pool.close();
///     assert_eq!(pool.stats().idle, 0);
/// });
/// ```
pub struct Pool<C> {
    inner: Rc<Inner<C>>,
}

impl<C> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<C> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<C: 'static> Pool<C> {
    /// Starts building a pool of at most `max` connections (in use, idle and being created).
    ///
    /// # Panics
    ///
    /// If `max` is 0.
    pub fn builder(max: usize) -> Builder<C> {
        Builder::new(max)
    }

    pub(crate) fn from_parts(
        config: Config,
        factory: Factory<C>,
        check: Option<HealthCheck<C>>,
    ) -> Pool<C> {
        Pool {
            inner: Rc::new(Inner::new(config, factory, check)),
        }
    }

    /// Checks out a connection, waiting at most the pool's checkout timeout.
    ///
    /// Serves checkouts in arrival order; reuses the newest idle connection (health-checked
    /// if the pool has a check) or creates one if the pool has room.
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] if the pool is or gets closed, [`PoolError::Timeout`] when the
    /// timeout passes, [`PoolError::Create`] with the factory's error (the slot is released;
    /// the next checkout tries again).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future releases everything it holds. Queued, it leaves the
    /// queue; if a slot had already been handed to it, the slot goes to the next waiter and
    /// the returned connection stays idle for it. Creating or health-checking, the connection
    /// in the making is dropped (closed) and the slot released.
    pub async fn get(&self) -> Result<PooledConn<C>, PoolError> {
        self.checkout(self.inner.config.checkout_timeout).await
    }

    /// [`get`](Self::get) with this timeout instead of the pool's.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    ///
    /// # Cancel safety
    ///
    /// As [`get`](Self::get).
    pub async fn get_timeout(&self, limit: Duration) -> Result<PooledConn<C>, PoolError> {
        self.checkout(Some(limit)).await
    }

    /// Checks out a connection, runs `f` on it and returns its result; a connection whose
    /// user failed is discarded: `f` returned `Err`, panicked, or was cancelled half-way.
    ///
    /// # Examples
    ///
    /// ```ignore
    /// let reply = pool.with(async |conn: &mut BufStream| -> io::Result<Vec<u8>> {
    ///     conn.write(b"holla\n").await?;
    ///     conn.flush().await?;
    ///     conn.read_line(1024).await?.ok_or(io::ErrorKind::UnexpectedEof.into())
    /// }).await?; // a failed exchange leaves its connection discarded, not back in the pool
    /// ```
    ///
    /// # Errors
    ///
    /// The checkout's [`PoolError`] (converted into `E`), or `f`'s error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it checks out is as [`get`](Self::get); while `f` runs, it
    /// drops `f`'s future and discards the connection (it may hold half an exchange).
    pub async fn with<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut C) -> Result<T, E>,
        E: From<PoolError>,
    {
        let mut conn = self.get().await?;
        conn.set_broken(true); // stays so if `f` panics or is dropped
        let result = f(&mut conn).await;
        conn.set_broken(result.is_err());
        result
    }

    /// Closes the pool: queued and future checkouts fail with [`PoolError::Closed`], idle
    /// connections are closed now, connections in use are closed when they come back.
    /// Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Closes idle connections that expired (and surplus ones over `max_idle`); returns how
    /// many. Checkouts and returns expire connections too; this is for a pool left alone.
    pub fn reap(&self) -> usize {
        self.inner.reap()
    }

    /// Calls [`reap`](Self::reap) every `period` until the pool is closed; run it as a task
    /// beside the pool's users.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it holds nothing between reaps.
    pub async fn maintain(&self, period: Duration) {
        while !self.is_closed() {
            let closed = pin!(self.inner.closed.wait());
            match first(closed, pin!(sleep(period))).await {
                First::A((), _) => return,
                First::B((), _) => {
                    self.reap();
                }
            }
        }
    }

    /// A snapshot of the pool's gauges and counters.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    async fn checkout(&self, limit: Option<Duration>) -> Result<PooledConn<C>, PoolError> {
        let inner = &*self.inner;
        let mut deadline = Deadline::new(limit, &inner.counters);
        let slot = match inner.try_slot()? {
            Some(slot) => slot,
            None => deadline.bound(inner.wait_slot()).await??,
        };
        while let Some(tracked) = inner.take_idle() {
            let Some(check) = &inner.check else {
                return Ok(slot.into_conn(&self.inner, tracked));
            };
            let Tracked { conn, dies_at } = tracked;
            // The check owns the connection: it is closed if the check fails or is dropped.
            match deadline.bound(check(conn)).await {
                Ok(Ok(conn)) if inner.is_closed() => {
                    inner.discard(conn, Discard::Closed);
                    return Err(PoolError::Closed);
                }
                Ok(Ok(conn)) => return Ok(slot.into_conn(&self.inner, Tracked { conn, dies_at })),
                Ok(Err(_unfit)) => inner.counters.bump(|c| {
                    c.discarded += 1;
                    c.broken += 1;
                }),
                Err(timeout) => {
                    inner.counters.bump(|c| c.discarded += 1);
                    return Err(timeout);
                }
            }
        }
        inner.ensure_open()?;
        let conn = deadline.bound((inner.factory)()).await?.map_err(|e| {
            inner.counters.bump(|c| c.create_failures += 1);
            PoolError::Create(e)
        })?;
        inner.counters.bump(|c| c.created += 1);
        if inner.is_closed() {
            inner.discard(conn, Discard::Closed);
            return Err(PoolError::Closed);
        }
        let tracked = Tracked::new(conn, inner.config.max_lifetime);
        Ok(slot.into_conn(&self.inner, tracked))
    }
}

/// A checkout's deadline, started when the checkout first has to wait.
struct Deadline<'a> {
    limit: Option<Duration>,
    at: Option<Instant>,
    counters: &'a CounterCell,
}

impl<'a> Deadline<'a> {
    fn new(limit: Option<Duration>, counters: &'a CounterCell) -> Self {
        Deadline {
            limit,
            at: None,
            counters,
        }
    }

    /// Runs `step` until the deadline; a timeout is counted.
    async fn bound<F: Future>(&mut self, step: F) -> Result<F::Output, PoolError> {
        let Some(limit) = self.limit else {
            return Ok(step.await);
        };
        let at = *self.at.get_or_insert_with(|| Instant::now() + limit);
        timeout_at(at, step).await.map_err(|_elapsed| {
            self.counters.bump(|c| c.timeouts += 1);
            PoolError::Timeout(limit)
        })
    }
}
