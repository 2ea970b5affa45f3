//! [`ConversationService`]: one UDP port, many peers, one task per peer.
//!
//! # Design
//!
//! Sharded per core. Each core binds its own `SO_REUSEPORT` socket on the shared port
//! ([`UdpSocket::bind_sharded`]) and runs [`ConversationService::serve`] on it; the kernel's
//! 4-tuple hash sends all of a peer's datagrams to one core, so a conversation lives on one core
//! and never moves. Per core there is:
//!
//! - one demultiplexer: a receive loop on the core's socket (one multishot `recvmsg` into a
//!   ring of receive buffers) and a table peer -> conversation. A known peer's datagram is
//!   copied into its conversation's bounded inbox (never waiting: when the inbox is full, the
//!   [`OverflowPolicy`] drops one and it is counted). An unknown peer's first datagram passes
//!   admission (tombstone, cap, rate, hook: see [`Admission`]) before anything is allocated
//!   for it;
//! - one task per conversation, running the handler inside a scope owned by `serve`, so
//!   stopping the service cancels them all. The conversation ends when the handler returns,
//!   fails, panics, when a task forked from it fails, when the peer is idle for the idle
//!   timeout, or when it is cancelled; in every case its entry is removed. Failures go to the
//!   service's failure policy (logged on stderr by default) and every end is counted by reason.
//!
//! # Caps are per core
//!
//! [`ConversationService::max_conversations`] and
//! [`ConversationService::max_new_per_second`] hold for each core's table: a service on `n`
//! cores has at most `n x max_conversations` live conversations and admits at most
//! `n x max_new_per_second` new ones per second. Per-core caps need no cross-core traffic and
//! match the sharding (each core defends its own memory).
//!
//! # Memory bound
//!
//! Per core: at most `max_conversations` entries, whose inboxes hold at most `inbox_capacity`
//! datagrams each and `max_queued_bytes` together, plus at most `max_conversations`
//! tombstones, plus the receive ring: [`ConversationService::receive_buffers`] buffers of `max_datagram` plus 44
//! bytes (allocated once; the kernel writes only as much of each as a datagram needs, so with
//! small datagrams most of its pages are never touched). Inboxes hold copies, never ring
//! buffers, so the ring does not grow with the conversations. A flood of datagrams from
//! spoofed sources can use up the cap, not grow memory past it.
//!
//! # Stopping
//!
//! When a graceful shutdown of the runtime is requested, `serve` stops receiving and closes
//! every conversation's inbox: handlers drain it, see `recv` return `None`, and return; `serve`
//! returns once they all have (the runtime's grace period bounds the wait). The idle sweep
//! stops with the receive loop. Dropping the `serve` future cancels every conversation at once.

mod demux;
mod table;
mod task;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use percore_engine::{first, First};
use percore_net::udp::UdpSocket;

use crate::admission::Admission;
use crate::conversation::{Conversation, Failure};
use crate::inbox::OverflowPolicy;
use crate::panic::CatchPanic;
use crate::receive::DatagramSource;
use crate::stats::{ConversationStats, Counters};
use table::Table;

/// Receive buffers per core unless [`ConversationService::receive_buffers`] says otherwise.
const DEFAULT_RECEIVE_BUFFERS: u16 = 64;

/// A peer quiet this long ends its conversation unless [`ConversationService::idle_timeout`]
/// says otherwise: without one, a burst of spoofed sources would hold the cap for good.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes queued in a core's inboxes, together, unless
/// [`ConversationService::max_queued_bytes`] says otherwise.
const DEFAULT_MAX_QUEUED_BYTES: usize = 64 << 20;

pub(crate) type AdmitHook = Rc<dyn Fn(SocketAddr, &[u8]) -> Admission>;
pub(crate) type FailurePolicy = Rc<dyn Fn(SocketAddr, SocketAddr, &Failure)>;

/// The numeric limits of a service.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_conversations: usize,
    pub(crate) max_new_per_second: Option<u32>,
    pub(crate) inbox_capacity: usize,
    pub(crate) overflow: OverflowPolicy,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) tombstone: Option<Duration>,
    pub(crate) max_datagram: usize,
    pub(crate) max_queued_bytes: usize,
    pub(crate) receive_buffers: u16,
}

/// A UDP conversation service on one core; see the module docs.
///
/// Build one on each core (it is `!Send`: its counters are core-local) and call
/// [`ConversationService::serve`] with that core's sharded socket.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use percore_net::udp::UdpSocket;
/// use percore_udp_conversation::{ClientConversation, ConversationService};
///
/// percore_engine::block_on(async {
///     let socket = UdpSocket::bind_sharded("127.0.0.1:0".parse().unwrap()).unwrap();
///     let addr = socket.local_addr();
///     let service = ConversationService::new().idle_timeout(Duration::from_secs(5));
///     let server = percore_engine::spawn(async move {
///         service
///             .serve(socket, |mut conv| async move {
///                 // This peer's context lives here, across its datagrams.
///                 let mut seen = 0u64;
///                 while let Some(d) = conv.recv().await {
///                     seen += 1;
///                     conv.send(format!("{seen}:{}", d.len()).into_bytes()).await?;
///                 }
///                 Ok::<(), std::io::Error>(())
///             })
///             .await
///     });
///     let client = ClientConversation::connect(addr).unwrap();
///     let timeout = Duration::from_secs(2);
///     assert_eq!(client.request(b"abc", timeout, 2).await.unwrap(), b"1:3");
///     assert_eq!(client.request(b"", timeout, 2).await.unwrap(), b"2:0");
///     drop(server); // cancels the service and its conversations
/// });
/// ```
pub struct ConversationService {
    limits: Limits,
    admit: Option<AdmitHook>,
    on_failure: FailurePolicy,
    counters: Rc<Counters>,
}

impl fmt::Debug for ConversationService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConversationService")
            .field("limits", &self.limits)
            .field("admission_hook", &self.admit.is_some())
            .field("stats", &self.counters.get())
            .finish()
    }
}

impl Default for ConversationService {
    fn default() -> Self {
        ConversationService::new()
    }
}

impl ConversationService {
    /// A service with the defaults: at most 10,000 live conversations per core, no rate cap,
    /// inboxes of 64 datagrams dropping the newest when full and 64 MiB queued per core in
    /// all, a 60 s idle timeout, no tombstones, datagrams up to 65,535 bytes, 64 receive
    /// buffers, every peer admitted, failures logged on stderr.
    pub fn new() -> ConversationService {
        ConversationService {
            limits: Limits {
                max_conversations: 10_000,
                max_new_per_second: None,
                inbox_capacity: 64,
                overflow: OverflowPolicy::DropNewest,
                idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
                tombstone: None,
                max_datagram: 65_535,
                max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
                receive_buffers: DEFAULT_RECEIVE_BUFFERS,
            },
            admit: None,
            on_failure: Rc::new(log_failure),
            counters: Rc::new(Counters::default()),
        }
    }

    /// Live conversations per core at most (at least 1); a new peer beyond it gets no
    /// conversation and its datagram is dropped ([`DropReason::OverCap`](crate::DropReason)).
    pub fn max_conversations(mut self, n: usize) -> Self {
        self.limits.max_conversations = n.max(1);
        self
    }

    /// New conversations per second per core at most (token bucket, burst of one second's
    /// worth); beyond it, [`DropReason::OverRate`](crate::DropReason).
    pub fn max_new_per_second(mut self, n: u32) -> Self {
        self.limits.max_new_per_second = Some(n.max(1));
        self
    }

    /// Datagrams queued per conversation at most (at least 1).
    pub fn inbox_capacity(mut self, n: usize) -> Self {
        self.limits.inbox_capacity = n.max(1);
        self
    }

    /// Which datagram goes when an inbox is full (default: the newest).
    pub fn overflow_policy(mut self, policy: OverflowPolicy) -> Self {
        self.limits.overflow = policy;
        self
    }

    /// Ends a conversation whose peer sent nothing for `timeout` (default 60 s; every
    /// datagram resets it, kept or dropped); one sweep per core checks every eighth of the
    /// timeout (at least every 1 ms, at most every 1 s), so the end comes at most two such
    /// periods late (one to see the last datagram, one to see the time up), never early.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.limits.idle_timeout = Some(timeout);
        self
    }

    /// No idle timeout: a conversation lasts until its handler ends it. A peer that goes
    /// quiet then holds its place under the cap until the service stops.
    pub fn no_idle_timeout(mut self) -> Self {
        self.limits.idle_timeout = None;
        self
    }

    /// Bytes a core's inboxes may hold queued, together (default 64 MiB; each datagram counts
    /// its length plus 32). A datagram that does not fit is dropped
    /// ([`DropReason::OverBudget`](crate::DropReason)).
    pub fn max_queued_bytes(mut self, n: usize) -> Self {
        self.limits.max_queued_bytes = n;
        self
    }

    /// After a conversation ends, drops its peer's datagrams for `ttl` instead of starting a
    /// new conversation (late datagrams of an ended exchange); at most `max_conversations`
    /// tombstones are kept per core.
    pub fn tombstone(mut self, ttl: Duration) -> Self {
        self.limits.tombstone = Some(ttl);
        self
    }

    /// Longest datagram accepted (at least 1; default 65,535); a longer one is dropped and
    /// counted ([`DropReason::Truncated`](crate::DropReason)).
    pub fn max_datagram(mut self, n: usize) -> Self {
        self.limits.max_datagram = n.max(1);
        self
    }

    /// Buffers in the core's receive ring (at least 1, rounded up to a power of two; default
    /// 64), each `max_datagram` plus 44 bytes. The demultiplexer gives each back as soon as it
    /// has copied the datagram out, so they only need to cover the datagrams that arrive
    /// between two of its turns; when more arrive, the rest wait in the socket and the receive
    /// is re-armed (counted in [`ConversationStats::ring_dry`]).
    pub fn receive_buffers(mut self, n: u16) -> Self {
        self.limits.receive_buffers = n.clamp(1, 32_768);
        self
    }

    /// Asks `hook` about each new peer, with its first datagram, after the cap and rate checks
    /// and before any state exists for the peer.
    pub fn admit(mut self, hook: impl Fn(SocketAddr, &[u8]) -> Admission + 'static) -> Self {
        self.admit = Some(Rc::new(hook));
        self
    }

    /// Replaces the failure policy (default: a line on stderr). It gets the service's local
    /// address, the peer and the failure of each conversation whose handler (or forked task)
    /// failed or panicked; the failure is counted in [`ConversationStats::ended`] either way.
    pub fn on_failure(
        mut self,
        policy: impl Fn(SocketAddr, SocketAddr, &Failure) + 'static,
    ) -> Self {
        self.on_failure = Rc::new(policy);
        self
    }

    /// This core's counters so far (readable while `serve` runs).
    pub fn stats(&self) -> ConversationStats {
        self.counters.get()
    }

    /// Serves `socket` (this core's, usually from [`UdpSocket::bind_sharded`]): `handler` runs
    /// once per admitted peer with its [`Conversation`]. Returns this core's counters when a
    /// graceful shutdown has stopped the service and every conversation has ended.
    ///
    /// # Errors
    ///
    /// Setting up the receive ring (a kernel without buffer rings), or the socket's error
    /// after 100 receive errors in a row (each is logged and counted).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels every conversation (their tasks are dropped, their entries
    /// removed, counted as [`EndReason::Cancelled`](crate::EndReason)).
    pub async fn serve<H, Fut, E>(
        &self,
        socket: UdpSocket,
        handler: H,
    ) -> io::Result<ConversationStats>
    where
        H: Fn(Conversation) -> Fut + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: fmt::Display + 'static,
    {
        let socket = Rc::new(socket);
        let table = Rc::new(Table::new(
            socket.clone(),
            self.limits.clone(),
            self.admit.clone(),
            self.on_failure.clone(),
            self.counters.clone(),
        ));
        let source = DatagramSource::new(
            &socket,
            self.limits.max_datagram,
            self.limits.receive_buffers,
        )?;
        let idle_timeout = self.limits.idle_timeout;
        let result = percore_engine::scope(|s| async move {
            let start: demux::Starter = {
                let (table, handler) = (table.clone(), Rc::new(handler));
                Box::new(move |shared| {
                    let handler = handler.clone();
                    let conversation = Conversation::new(shared.clone());
                    // Made now and moved into the task: dropped unpolled, it still removes the
                    // entry and counts the end.
                    let guard = task::EndGuard::new(shared, table.clone());
                    s.spawn(async move {
                        // The handler is called inside the task, so that even a panic in the
                        // call itself (before its future exists) ends only this conversation.
                        // Boxed before it starts: the task holds a pointer to it, not
                        // a copy of it too (see `task::run`).
                        let run = CatchPanic::new(async move { handler(conversation).await });
                        task::run(guard, run).await;
                        Ok(())
                    });
                })
            };
            let receive = pin!(demux::receive_loop(source, table.clone(), start));
            match idle_timeout {
                None => receive.await,
                Some(idle) => {
                    // The sweep stops with the receive loop.
                    let sweep = pin!(demux::sweep_idle(table, idle));
                    match first(receive, sweep).await {
                        First::A(received, _) => received,
                        First::B(never, _) => match never {},
                    }
                }
            }
        })
        .await;
        match result {
            Ok(()) => Ok(self.counters.get()),
            Err(e) => Err(e
                .into_error()
                .unwrap_or_else(|| io::Error::other("conversation service panicked"))),
        }
    }
}

/// The default failure policy: one line on stderr (lost, never a panic, if stderr fails).
fn log_failure(local: SocketAddr, peer: SocketAddr, failure: &Failure) {
    percore_net::log::line(format_args!(
        "percore-udp-conversation: {local}: conversation with {peer} {failure}"
    ));
}
