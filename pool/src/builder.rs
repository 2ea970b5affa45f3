//! [`Builder`]: a pool's limits and its two pieces of user code, the factory and the health
//! check.
//!
//! The hard maximum is the one required setting (it is the builder's argument); everything
//! else has a default that keeps a pool bounded: `max_idle` = `max`, a 30 s checkout timeout,
//! no idle expiry, no maximum lifetime, no health check. Both pieces of user code are boxed
//! once here, so `Pool<C>` names only the connection type.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use crate::pool::Pool;

/// The boxed factory: makes one connection.
pub(crate) type Factory<C> = Box<dyn Fn() -> Pin<Box<dyn Future<Output = io::Result<C>>>>>;

/// The boxed health check: gives the connection back if it is fit for use.
pub(crate) type HealthCheck<C> = Box<dyn Fn(C) -> Pin<Box<dyn Future<Output = io::Result<C>>>>>;

/// A pool's limits.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max: usize,
    pub(crate) max_idle: usize,
    pub(crate) checkout_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
}

/// Builds a [`Pool`]; made by [`Pool::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use percore_net::tcp::{TcpListener, TcpStream};
/// use percore_pool::Pool;
///
/// percore_engine::block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
///     let addr = listener.local_addr();
///     let pool: Pool<TcpStream> = Pool::builder(8)
///         .max_idle(2)
///         .checkout_timeout(Duration::from_secs(1))
///         .idle_timeout(Duration::from_secs(60))
///         .build(move || TcpStream::connect(addr));
///     assert_eq!(pool.stats().max, 8);
/// });
/// ```
pub struct Builder<C> {
    config: Config,
    check: Option<HealthCheck<C>>,
}

impl<C: 'static> Builder<C> {
    pub(crate) fn new(max: usize) -> Builder<C> {
        assert!(max > 0, "a connection pool needs a maximum of at least 1");
        Builder {
            config: Config {
                max,
                max_idle: max,
                checkout_timeout: Some(Duration::from_secs(30)),
                idle_timeout: None,
                max_lifetime: None,
            },
            check: None,
        }
    }

    /// Idle connections kept at most (diesel's `pool_size`; default and ceiling: `max`), plus
    /// one for each checkout queued (it will take one). When a return leaves more resting,
    /// the oldest are closed.
    pub fn max_idle(mut self, n: usize) -> Self {
        self.config.max_idle = n.min(self.config.max);
        self
    }

    /// How long [`Pool::get`] waits in all (for a slot, the factory and the health check)
    /// before it fails with [`PoolError::Timeout`](crate::PoolError::Timeout); `None` (or a
    /// limit too far to express as an `Instant`, such as `Duration::MAX`) waits forever.
    /// Default: 30 s.
    pub fn checkout_timeout(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.config.checkout_timeout = limit.into();
        self
    }

    /// Closes a connection that rested in the pool this long (checked on every checkout and
    /// return, for the oldest idle ones and the ones they take, and by [`Pool::reap`] for
    /// all). `Duration::MAX` is never. Default: never.
    pub fn idle_timeout(mut self, limit: Duration) -> Self {
        self.config.idle_timeout = Some(limit);
        self
    }

    /// Closes a connection this old, counted from its creation (checked on checkout and on
    /// return; a connection in use is never taken from its holder). `Duration::MAX` is never.
    /// Default: never.
    pub fn max_lifetime(mut self, limit: Duration) -> Self {
        self.config.max_lifetime = Some(limit);
        self
    }

    /// Runs `check` on every idle connection before handing it out. It gets the connection
    /// and gives it back if fit; a connection it fails is discarded (counted as broken and
    /// in [`PoolStats::check_failures`](crate::PoolStats::check_failures), the error kept as
    /// [`Pool::last_check_error`]) and the checkout goes on with the next idle one or a new
    /// one. Fresh connections are not checked. The check runs under the checkout's timeout
    /// and stops when the pool is closed.
    pub fn health_check<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn(C) -> Fut + 'static,
        Fut: Future<Output = io::Result<C>> + 'static,
    {
        self.check = Some(Box::new(move |conn| Box::pin(check(conn))));
        self
    }

    /// Builds the pool; `factory` makes a connection (it runs inside a checkout, under its
    /// timeout, and stops when the pool is closed). No connection is made until the first
    /// checkout.
    pub fn build<F, Fut>(self, factory: F) -> Pool<C>
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = io::Result<C>> + 'static,
    {
        let factory: Factory<C> = Box::new(move || Box::pin(factory()));
        Pool::from_parts(self.config, factory, self.check)
    }
}

impl<C> fmt::Debug for Builder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("health_check", &self.check.is_some())
            .finish()
    }
}
