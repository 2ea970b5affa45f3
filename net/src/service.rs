//! Services: a handler per connection, on every core, drained on shutdown (diesel's Service).
//!
//! # Design
//!
//! [`TcpService::serve`] runs on one core (call it on every core, each with its own sharded
//! [`TcpListener`]). It accepts in a loop and runs the handler for each connection as a task
//! inside a [`scope`](percore_engine::scope()), so no connection outlives the service. A
//! per-core [`Semaphore`] caps live connections: at the cap
//! the service stops accepting (the kernel's backlog holds newcomers) until one ends. A
//! handler's error or panic ends only its connection; it is counted and reported on stderr,
//! never silent. When a graceful shutdown is requested the service stops accepting and waits
//! for the connections to finish; the runtime's grace period bounds that wait.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use percore_engine::sync::Semaphore;
use percore_engine::{first, shutdown, First};

use crate::tcp::TcpListener;
use crate::BufStream;

/// What a service counted on this core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServiceStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections whose handler returned `Ok`.
    pub completed: u64,
    /// Connections whose handler returned an error (idle timeouts included).
    pub failed: u64,
    /// Connections whose handler panicked.
    pub panicked: u64,
}

/// A per-connection TCP service; see the module docs.
#[derive(Debug, Clone)]
pub struct TcpService {
    max_connections: usize,
    idle_timeout: Option<Duration>,
}

impl Default for TcpService {
    fn default() -> Self {
        TcpService {
            max_connections: 10_000,
            idle_timeout: None,
        }
    }
}

struct Counters {
    stats: Cell<ServiceStats>,
    name: String,
}

impl Counters {
    fn bump(&self, f: impl FnOnce(&mut ServiceStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters")
            .field("stats", &self.stats.get())
            .finish()
    }
}

impl TcpService {
    /// A service with the defaults: at most 10,000 live connections per core, no idle timeout.
    pub fn new() -> TcpService {
        TcpService::default()
    }

    /// Live connections per core at most (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Closes a connection whose peer sends nothing for `timeout` (its handler's read fails
    /// with `TimedOut`).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Serves `listener` until a graceful shutdown is requested and every connection ended.
    /// `handler` gets each connection as a [`BufStream`] (with the idle timeout set) and the
    /// peer's address.
    ///
    /// # Errors
    ///
    /// The listener's fatal errors (running out of fds is not one: see
    /// [`TcpListener::accept`]).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels every connection's handler (their sockets close).
    pub async fn serve<H, Fut>(
        &self,
        mut listener: TcpListener,
        handler: H,
    ) -> io::Result<ServiceStats>
    where
        H: Fn(BufStream, SocketAddr) -> Fut + 'static,
        Fut: Future<Output = io::Result<()>> + 'static,
    {
        let counters = Rc::new(Counters {
            stats: Cell::new(ServiceStats::default()),
            name: listener.local_addr().to_string(),
        });
        let limit = Rc::new(Semaphore::new(self.max_connections));
        let handler = Rc::new(handler);
        let idle = self.idle_timeout;
        let c2 = counters.clone();
        let result = percore_engine::scope(|s| async move {
            loop {
                // Wait for room under the cap, then for a connection or the shutdown.
                let permit_wait = Box::pin(limit.acquire(1));
                let permit = match first(shutdown::requested(), permit_wait).await {
                    First::A((), _) => break,
                    First::B(permit, _) => {
                        permit.map_err(|_| io::Error::other("service closed"))?
                    }
                };
                permit.forget();
                let accept = Box::pin(listener.accept());
                let (conn, peer) = match first(shutdown::requested(), accept).await {
                    First::A((), _) => {
                        limit.add_permits(1);
                        break;
                    }
                    First::B(accepted, _) => accepted?,
                };
                c2.bump(|s| s.accepted += 1);
                let (handler, counters, limit) = (handler.clone(), c2.clone(), limit.clone());
                s.spawn(async move {
                    let mut conn = BufStream::new(conn);
                    conn.set_idle_timeout(idle);
                    let outcome = percore_engine::spawn(handler(conn, peer)).await;
                    limit.add_permits(1);
                    match outcome {
                        Ok(Ok(())) => counters.bump(|s| s.completed += 1),
                        Ok(Err(e)) => {
                            counters.bump(|s| s.failed += 1);
                            eprintln!(
                                "percore-net: {}: connection from {peer} failed: {e}",
                                counters.name
                            );
                        }
                        Err(join) => {
                            counters.bump(|s| s.panicked += 1);
                            eprintln!(
                                "percore-net: {}: handler for {peer} failed: {join}",
                                counters.name
                            );
                        }
                    }
                    Ok(())
                });
            }
            Ok::<(), io::Error>(())
        })
        .await;
        match result {
            Ok(()) => Ok(counters.stats.get()),
            Err(e) => Err(e
                .into_error()
                .unwrap_or_else(|| io::Error::other("service task panicked"))),
        }
    }
}
