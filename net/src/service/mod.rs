//! Services: a handler per connection or per datagram, on every core, drained on shutdown
//! (diesel's Service).
//!
//! # Design
//!
//! [`TcpService::serve`] runs on one core (call it on every core, each with its own sharded
//! [`TcpListener`](crate::tcp::TcpListener)). It accepts in a loop and runs the handler for each connection as a task
//! inside a [`scope`](percore_engine::scope()), so no connection outlives the service. A
//! per-core [`Semaphore`] caps live connections: at the cap the service pauses its listener
//! ([`TcpListener::pause_accepting`](crate::tcp::TcpListener::pause_accepting): cancels the
//! multishot accept, which left armed would go on accepting into the process with nobody to
//! serve what it accepts), so newcomers wait in the kernel's listen backlog until one ends; the
//! next accept re-arms it. In hand-off mode each core's inbox takes no more than the core's cap
//! ([`Inbox::limit_connections`](crate::tcp::Inbox::limit_connections)), and the acceptor
//! pauses the listener while no core has room. A
//! handler's error or panic ends only its connection; it is counted and reported on stderr,
//! never silent. When a graceful shutdown is requested the service stops accepting and waits
//! for the connections to finish; the runtime's grace period bounds that wait.
//!
//! [`UdpService::serve`] does the same for datagrams: each core's socket (bound with
//! `SO_REUSEPORT`) receives through a multishot `recvmsg` into a buffer ring, and the handler
//! runs per datagram as a task of the service's scope, at most a per-core number at a time
//! (at the cap the service stops taking datagrams; the kernel's socket buffer holds them).
//! Truncated datagrams are counted and reported, never handed on as if whole.

mod tcp;
mod udp;

pub use tcp::{Accept, ServiceStats, TcpService};
pub use udp::{UdpService, UdpServiceStats};

use std::io;

use percore_engine::sync::Semaphore;
use percore_engine::{first, shutdown, First, ScopeError};

/// Waits for room under a service's cap and takes it (the caller gives it back with
/// `add_permits(1)`); `Ok(false)` when a shutdown was requested first.
async fn room_or_shutdown(limit: &Semaphore) -> io::Result<bool> {
    let permit_wait = Box::pin(limit.acquire(1));
    match first(shutdown::requested(), permit_wait).await {
        First::A((), _) => Ok(false),
        First::B(permit, _) => {
            permit
                .map_err(|_| io::Error::other("service closed"))?
                .forget();
            Ok(true)
        }
    }
}

/// A service's result from its scope's: its stats, or the error that ended it.
fn outcome<T>(scope: Result<(), ScopeError<io::Error>>, stats: T) -> io::Result<T> {
    match scope {
        Ok(()) => Ok(stats),
        Err(e) => Err(e
            .into_error()
            .unwrap_or_else(|| io::Error::other("service task panicked"))),
    }
}
