//! The TCP service: a handler per connection, its connections from a sharded listener or from
//! a hand-off.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use percore_engine::sync::Semaphore;
use percore_engine::{first, shutdown, First};

use crate::tcp::{Handoff, Inbox, TcpListener, TcpStream};
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

    /// Counts a connection that failed or panicked, and logs it while that is worth it (see
    /// `log`): `what` is only formatted then.
    fn trouble(&self, f: impl FnOnce(&mut ServiceStats), what: impl FnOnce() -> String) {
        self.bump(f);
        let s = self.stats.get();
        let n = s.failed + s.panicked;
        if crate::log::worth_logging(n) {
            crate::log::line(format_args!(
                "percore-net: {}: {} ({n} failed so far)",
                self.name,
                what()
            ));
        }
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

    /// Closes a connection whose peer sends nothing for `timeout`, or does not take a flush
    /// within it (its handler's read or flush fails with `TimedOut`; see
    /// [`BufStream::set_idle_timeout`]). A timeout too long for the clock (`Duration::MAX`)
    /// is none.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Serves `listener` until a graceful shutdown is requested and every connection ended.
    /// `handler` gets each connection as a [`BufStream`] (with the idle timeout set) and the
    /// peer's address. The same as [`TcpService::serve_with`] with [`Accept::Sharded`].
    ///
    /// # Errors
    ///
    /// The listener's fatal errors (running out of fds is not one: see
    /// [`TcpListener::accept`]).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels every connection's handler (their sockets close).
    pub async fn serve<H, Fut>(&self, listener: TcpListener, handler: H) -> io::Result<ServiceStats>
    where
        H: Fn(BufStream, SocketAddr) -> Fut + 'static,
        Fut: Future<Output = io::Result<()>> + 'static,
    {
        self.serve_with(Accept::Sharded(listener), handler).await
    }

    /// Serves the connections `accept` brings (see [`Accept`]) until a graceful shutdown is
    /// requested and every connection ended; otherwise as [`TcpService::serve`].
    ///
    /// In hand-off mode the core given the listener also runs the acceptor (as a task of the
    /// service's scope), and every core serves what its inbox receives. When the acceptor
    /// stops for good (its listener failed, or its core's service was dropped), the hand-off
    /// is closed: every core serves what it has, then its service ends (with the listener's
    /// error on the acceptor's core).
    ///
    /// # Errors
    ///
    /// The listener's fatal errors; `InvalidInput` when this core's hand-off inbox was taken
    /// already.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels every connection's handler (their sockets close) and
    /// closes the connections still queued for this core.
    pub async fn serve_with<H, Fut>(&self, accept: Accept, handler: H) -> io::Result<ServiceStats>
    where
        H: Fn(BufStream, SocketAddr) -> Fut + 'static,
        Fut: Future<Output = io::Result<()>> + 'static,
    {
        let (name, mut source, acceptor) = match accept {
            Accept::Sharded(listener) => (
                listener.local_addr().to_string(),
                Source::Listener(listener),
                None,
            ),
            Accept::Handoff { handoff, listener } => {
                let core = percore_engine::current_core().index;
                let inbox = handoff.inbox(core).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("hand-off inbox of core {core} missing or taken"),
                    )
                })?;
                // The acceptor passes this core no more than its cap: the rest wait in the
                // kernel's backlog, not in the inbox.
                inbox.limit_connections(self.max_connections);
                let name = match &listener {
                    Some(l) => format!("{} (hand-off)", l.local_addr()),
                    None => format!("hand-off core {core}"),
                };
                let acceptor = listener.map(|l| (l, handoff));
                (name, Source::Inbox(inbox), acceptor)
            }
        };
        let counters = Rc::new(Counters {
            stats: Cell::new(ServiceStats::default()),
            name,
        });
        let limit = Rc::new(Semaphore::new(self.max_connections));
        let handler = Rc::new(handler);
        let idle = self.idle_timeout;
        let c2 = counters.clone();
        // A listener that fails for good (an error that is not one connection's) stops the
        // accepting, not the serving: the connections in flight finish (the scope waits for
        // them), and the error is the service's result then. It is logged at once.
        let fatal: Rc<std::cell::RefCell<Option<io::Error>>> = Rc::default();
        let fatal_in = fatal.clone();
        let result = percore_engine::scope(|s| async move {
            if let Some((listener, handoff)) = acceptor {
                let fatal = fatal_in.clone();
                s.spawn(async move {
                    if let Err(e) = run_acceptor(listener, handoff).await {
                        *fatal.borrow_mut() = Some(e);
                    }
                    Ok::<(), io::Error>(())
                });
            }
            let handed_off = source.is_inbox();
            loop {
                // Wait for room under the cap, then for a connection or the shutdown. At the
                // cap the listener is paused: left armed, its multishot accept would go on
                // accepting into this process while nobody serves what it accepts.
                if limit.available() == 0 {
                    source.pause();
                }
                if !super::room_or_shutdown(&limit).await? {
                    break;
                }
                let accept = Box::pin(source.next());
                let (conn, peer) = match first(shutdown::requested(), accept).await {
                    First::B(Some(Ok(accepted)), _) => accepted,
                    First::B(Some(Err(e)), _) if handed_off => {
                        // One bad hand-off is that connection's problem, not the service's.
                        limit.add_permits(1);
                        crate::log::line(format_args!(
                            "percore-net: {}: handed-off connection: {e}",
                            c2.name
                        ));
                        continue;
                    }
                    First::B(Some(Err(e)), _) => {
                        limit.add_permits(1);
                        crate::log::line(format_args!(
                            "percore-net: {}: accepting failed ({e}); serving the connections \
                             in flight, accepting no more",
                            c2.name
                        ));
                        *fatal_in.borrow_mut() = Some(e);
                        break;
                    }
                    First::A((), _) | First::B(None, _) => {
                        limit.add_permits(1);
                        break;
                    }
                };
                let handed_to = source.handed_to();
                c2.bump(|s| s.accepted += 1);
                let (handler, counters, limit) = (handler.clone(), c2.clone(), limit.clone());
                let mut conn = BufStream::new(conn);
                conn.set_idle_timeout(idle);
                // No async block around the handler: its future is the task's, stored once.
                s.spawn_isolated(handler(conn, peer), move |outcome| {
                    limit.add_permits(1);
                    if let Some((handoff, core)) = handed_to {
                        handoff.finished(core);
                    }
                    match outcome {
                        Ok(Ok(())) => counters.bump(|s| s.completed += 1),
                        Ok(Err(e)) => counters.trouble(
                            |s| s.failed += 1,
                            || format!("connection from {peer} failed: {e}"),
                        ),
                        Err(join) => counters.trouble(
                            |s| s.panicked += 1,
                            || format!("handler for {peer} failed: {join}"),
                        ),
                    }
                    Ok(())
                });
            }
            // Stop taking hand-offs now: connections still queued for this core close.
            drop(source);
            Ok::<(), io::Error>(())
        })
        .await;
        if let Some(e) = fatal.borrow_mut().take() {
            return Err(e);
        }
        super::outcome(result, counters.stats.get())
    }
}

/// Where a service's connections come from.
#[derive(Debug)]
pub enum Accept {
    /// This core's own `SO_REUSEPORT` listener (the kernel spreads connections).
    Sharded(TcpListener),
    /// Hand-off: connections arrive in this core's inbox of `handoff`; the one core given the
    /// `listener` also accepts them and passes each to the least-loaded core.
    Handoff {
        /// The runtime's shared hand-off state.
        handoff: Arc<Handoff>,
        /// The listener, on exactly one core; `None` on the others.
        listener: Option<TcpListener>,
    },
}

/// The per-core end of an [`Accept`].
enum Source {
    Listener(TcpListener),
    Inbox(Inbox),
}

impl Source {
    async fn next(&mut self) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        match self {
            Source::Listener(l) => Some(l.accept().await),
            Source::Inbox(inbox) => inbox.next().await,
        }
    }

    /// Stops accepting until the next `next` (a hand-off inbox is bounded already: its
    /// acceptor pauses when it cannot pass connections on).
    fn pause(&mut self) {
        if let Source::Listener(l) = self {
            l.pause_accepting();
        }
    }

    fn is_inbox(&self) -> bool {
        matches!(self, Source::Inbox(_))
    }

    /// For a handed-off connection: whose count to take it off when it ends.
    fn handed_to(&self) -> Option<(Arc<Handoff>, usize)> {
        match self {
            Source::Inbox(inbox) => Some((inbox.handoff().clone(), inbox.core())),
            Source::Listener(_) => None,
        }
    }
}

/// The hand-off acceptor: accepts until a shutdown is requested, passing each connection on.
/// While a connection waits for a core with room (every core at its cap, or an inbox full),
/// the listener is paused, so the kernel's backlog holds the newcomers.
///
/// Whenever it stops (shutdown, failure, or its core's service dropped) it closes the
/// hand-off, so the other cores' inboxes end instead of waiting for connections that can no
/// longer come.
async fn run_acceptor(mut listener: TcpListener, handoff: Arc<Handoff>) -> io::Result<()> {
    let name = listener.local_addr();
    let _close = CloseOnDrop(handoff.clone());
    let accepting = Box::pin(async move {
        loop {
            let (fd, peer) = listener.accept_fd().await?;
            let mut dispatch = std::pin::pin!(handoff.dispatch(fd, peer));
            let first_try =
                std::future::poll_fn(|cx| Poll::Ready(dispatch.as_mut().poll(cx))).await;
            let core = match first_try {
                Poll::Ready(core) => core,
                Poll::Pending => {
                    listener.pause_accepting();
                    dispatch.await
                }
            };
            if core.is_none() {
                crate::log::line(format_args!(
                    "percore-net: {name}: no core left to serve {peer}; closed"
                ));
            }
        }
    });
    match first(shutdown::requested(), accepting).await {
        First::A((), _) => Ok(()),
        First::B(result, _) => {
            if let Err(e) = &result {
                crate::log::line(format_args!(
                    "percore-net: {name}: accepting failed ({e}); the cores serve the \
                     connections in flight, then stop"
                ));
            }
            result
        }
    }
}

/// Closes a hand-off when dropped.
struct CloseOnDrop(Arc<Handoff>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}
