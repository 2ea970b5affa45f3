//! [`Pool`]: the handle. The checkout is in `checkout.rs`; the state it shares with the
//! guards (slots, idle list, counters) in `inner.rs`.

use std::fmt;
use std::ops::AsyncFnOnce;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use percore_engine::time::sleep;
use percore_engine::{first, First};

use crate::builder::{Builder, Config, Factory, HealthCheck};
use crate::checkout::checkout;
use crate::conn::PooledConn;
use crate::error::PoolError;
use crate::inner::Inner;
use crate::stats::PoolStats;

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
///     first.release(); // back into the pool
///     let again = pool.get().await.unwrap(); // the same connection
///     assert_eq!(pool.stats().created, 1);
///     drop(again); // never used through `&mut`: also goes back
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
    /// Call [`PooledConn::release`] when the exchange is complete. A guard used through
    /// `&mut` and dropped without `release` is discarded, not returned: its holder may have
    /// stopped mid-exchange (an error returned with `?`, a timeout, cancellation, a panic)
    /// and left half a request or an unread reply on it. A guard never used mutably goes back
    /// on drop. [`with`](Self::with) does the releasing for you.
    ///
    /// ```ignore
    /// let mut conn = pool.get().await?;
    /// conn.write(b"holla\n").await?; // `?` drops the guard after use: discarded
    /// conn.flush().await?;
    /// let reply = conn.read_line(1024).await?.ok_or(io::ErrorKind::UnexpectedEof)?;
    /// conn.release(); // complete: back into the pool
    /// ```
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] if the pool is or gets closed (also while the checkout creates
    /// or health-checks a connection: the close stops it), [`PoolError::Timeout`] when the
    /// timeout passes, [`PoolError::Create`] with the factory's error (the slot is released;
    /// the next checkout tries again).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future releases everything it holds. Queued, it leaves the
    /// queue; if a slot had already been handed to it, the slot goes to the next waiter and
    /// the returned connection stays idle for it. Creating or health-checking, the connection
    /// in the making is dropped (closed; a checked one is counted as discarded) and the slot
    /// released.
    pub async fn get(&self) -> Result<PooledConn<C>, PoolError> {
        checkout(&self.inner, self.inner.config.checkout_timeout).await
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
        checkout(&self.inner, Some(limit)).await
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
        // `&mut` marks the guard in use: dropped by a panic or cancellation, it discards.
        let result = f(&mut conn).await;
        match result {
            Ok(_) => conn.release(),
            Err(_) => conn.mark_broken(),
        }
        result
    }

    /// Closes the pool: queued and future checkouts fail with [`PoolError::Closed`], and so
    /// do checkouts creating or health-checking a connection (the factory or check is
    /// stopped, its connection closed); idle connections are closed now, connections in use
    /// when they come back. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Closes idle connections that expired (and the oldest over `max_idle` plus the queued
    /// checkouts); returns how many. Checkouts and returns expire the oldest idle connections
    /// too; this is for a pool left alone, and for expired ones behind a younger one.
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

    /// The error of the last health check that failed (as text), if one did; how many failed
    /// is [`PoolStats::check_failures`].
    pub fn last_check_error(&self) -> Option<String> {
        self.inner.last_check_error()
    }
}
