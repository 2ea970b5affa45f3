//! Hand-off accepting: one listener, connections passed to the least-loaded core.
//!
//! # Design
//!
//! Sharded listeners leave the spread to the kernel's `SO_REUSEPORT` hash, which can balance
//! badly (few clients, one client with many connections). In hand-off mode one core owns the
//! only listening socket; each connection it accepts goes, as an `OwnedFd`, over a bounded
//! cross-core channel to the core that serves the fewest connections right now.
//!
//! Load is one atomic counter per core (on its own cache line): the acceptor adds one when it
//! hands a connection to a core, the serving core takes one off when the connection ends. That
//! is one atomic read-modify-write per connection on each side, never per request. Ties go
//! round-robin, so connections spread even when they come and go one at a time.
//!
//! A core may cap its connections ([`Inbox::limit_connections`]; a service sets its
//! per-core cap): the acceptor passes it none while its load (live plus queued) is at the cap.
//! When every live core is at its cap the acceptor waits for room, and while any dispatch waits
//! its caller should stop accepting
//! ([`TcpListener::pause_accepting`](super::TcpListener::pause_accepting)):
//! the service's acceptor does, so connections past the caps wait in the kernel's backlog,
//! not as fds in the process. Room is signalled by the core that ends a connection, through
//! a waker the acceptor leaves when it waits; a flag read after each end's counter update
//! keeps that to one extra atomic load per connection when nobody waits.
//!
//! A core takes its inbox with [`Handoff::inbox`] when it starts serving; when it stops, its
//! [`Inbox`] is dropped and every fd still queued in it is closed with it. The acceptor then
//! finds that core's channel closed and passes the connection to another live core; when no
//! core is left, it closes the connection (counted). No fd is leaked on either path.
//!
//! When the acceptor stops for good (its listener failed, or its core stopped serving), it
//! closes the hand-off ([`Handoff::close`]): the other cores serve what they have, then their
//! inboxes end, so no core waits for connections that can no longer come.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use percore_engine::cross::channel::{self, CrossReceiver, CrossSender};
use percore_engine::sync::channel::TrySendError;

use super::TcpStream;

/// Connections a core's inbox holds before the acceptor waits for it.
pub const INBOX_CAPACITY: usize = 1024;

/// Marks a core whose inbox is gone: it is never chosen again.
const GONE: usize = usize::MAX;

/// An accepted connection on its way to a core.
type Handed = (OwnedFd, SocketAddr);

/// One core's slot, on a cache line of its own: its connections (live plus queued in its
/// inbox) and the most it takes.
#[repr(align(64))]
struct Load {
    count: AtomicUsize,
    cap: AtomicUsize,
}

/// What the chooser found.
enum Choice {
    /// The live core with the fewest connections and room under its cap.
    Core(usize),
    /// Every live core is at its cap.
    Full,
    /// No core serves any more.
    NoneLive,
}

/// The shared state of hand-off accepting for one runtime: per-core inboxes and loads.
pub struct Handoff {
    loads: Vec<Load>,
    senders: Vec<CrossSender<Handed>>,
    receivers: Vec<Mutex<Option<CrossReceiver<Handed>>>>,
    next: AtomicUsize,
    dropped: AtomicU64,
    /// The waker of a dispatch waiting for room under the caps.
    room: Mutex<Option<Waker>>,
    /// Set while a dispatch waits for room (read by every connection's end).
    waiting: AtomicBool,
    /// Set by [`Handoff::close`]: no core is chosen any more.
    closed: AtomicBool,
}

impl fmt::Debug for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handoff")
            .field("loads", &self.loads())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Handoff {
    /// Hand-off state for `cores` cores (indexes `0..cores`, as
    /// [`current_core`](percore_engine::current_core) numbers them).
    ///
    /// # Panics
    ///
    /// Panics if `cores` is 0.
    pub fn new(cores: usize) -> Arc<Handoff> {
        assert!(cores > 0, "hand-off needs at least one core");
        let (senders, receivers) = (0..cores)
            .map(|_| {
                let (tx, rx) = channel::bounded(INBOX_CAPACITY);
                (tx, Mutex::new(Some(rx)))
            })
            .unzip();
        Arc::new(Handoff {
            loads: (0..cores)
                .map(|_| Load {
                    count: AtomicUsize::new(0),
                    cap: AtomicUsize::new(usize::MAX),
                })
                .collect(),
            senders,
            receivers,
            next: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            room: Mutex::new(None),
            waiting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// How many cores take part.
    pub fn cores(&self) -> usize {
        self.loads.len()
    }

    /// Live connections per core now (`usize::MAX` for a core that stopped serving).
    pub fn loads(&self) -> Vec<usize> {
        self.loads
            .iter()
            .map(|l| l.count.load(Ordering::Relaxed))
            .collect()
    }

    /// Ends the hand-off: no connection is passed on any more (a dispatch, waiting or not,
    /// closes its connection and counts it as dropped), and each core's [`Inbox::next`] gives
    /// what is queued for it, then `None`, so every core's service ends once its connections
    /// have. The acceptor does this when it stops for good, for whatever reason.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for sender in &self.senders {
            sender.close();
        }
        // A dispatch waiting for room looks again, and finds no core.
        self.room_changed();
    }

    /// Connections closed because no core was left to take them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Takes core `core`'s inbox; a core serves what arrives there. `None` if it was taken
    /// already or there is no such core.
    pub fn inbox(self: &Arc<Self>, core: usize) -> Option<Inbox> {
        let rx = self
            .receivers
            .get(core)?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some(Inbox {
            handoff: self.clone(),
            core,
            rx,
        })
    }

    /// The live core with the fewest connections and room under its cap (ties round-robin).
    fn least_loaded(&self) -> Choice {
        if self.closed.load(Ordering::Relaxed) {
            return Choice::NoneLive;
        }
        let n = self.loads.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut live = false;
        let best = (0..n)
            .map(|i| (start + i) % n)
            .map(|core| {
                let load = &self.loads[core];
                let count = load.count.load(Ordering::Relaxed);
                (core, count, load.cap.load(Ordering::Relaxed))
            })
            .filter(|&(_, count, _)| count != GONE)
            .inspect(|_| live = true)
            .filter(|&(_, count, cap)| count < cap)
            .min_by_key(|&(_, count, _)| count);
        match best {
            Some((core, _, _)) => Choice::Core(core),
            None if live => Choice::Full,
            None => Choice::NoneLive,
        }
    }

    /// Says one connection handed to core `core` ended, so the acceptor's count stays true.
    pub fn finished(&self, core: usize) {
        let Some(load) = self.loads.get(core) else {
            return;
        };
        // Never below zero, never out of GONE (the count is a hint for the chooser).
        let freed = load
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n != 0 && n != GONE).then(|| n - 1)
            })
            .is_ok();
        if freed {
            self.room_changed();
        }
    }

    /// Wakes a dispatch waiting for room, if one is.
    fn room_changed(&self) {
        // Pairs with the fence in `wait_for_room`: either the waiter's re-check sees this
        // change, or this sees its flag (the store-buffering case both fences rule out).
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) {
            if let Some(waker) = self.lock_room().take() {
                waker.wake();
            }
        }
    }

    fn lock_room(&self) -> MutexGuard<'_, Option<Waker>> {
        self.room.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a live core has room under its cap (or none is live) and says which.
    async fn wait_for_room(&self) -> Choice {
        std::future::poll_fn(|cx| {
            *self.lock_room() = Some(cx.waker().clone());
            self.waiting.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            match self.least_loaded() {
                Choice::Full => Poll::Pending,
                choice => {
                    self.waiting.store(false, Ordering::Relaxed);
                    Poll::Ready(choice)
                }
            }
        })
        .await
    }

    /// Passes an accepted connection to the least-loaded live core with room under its cap
    /// ([`Inbox::limit_connections`]); waits while every live core is at its cap, or while the
    /// chosen core's inbox is full. Returns the core, or `None` when no core is left (the
    /// connection is then closed and counted).
    ///
    /// While this waits, the caller should not go on accepting: pause the listener
    /// ([`TcpListener::pause_accepting`](super::TcpListener::pause_accepting)) when a first
    /// poll of this future is pending, or the kernel keeps accepting connections nobody takes.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it waits closes the connection (the fd drops with the
    /// future) and takes its count off the core again; nothing leaks.
    pub async fn dispatch(&self, fd: OwnedFd, peer: SocketAddr) -> Option<usize> {
        let mut handed = (fd, peer);
        loop {
            let choice = match self.least_loaded() {
                Choice::Full => self.wait_for_room().await,
                choice => choice,
            };
            let core = match choice {
                Choice::Core(core) => core,
                // Every core was full and now none is live: the wait ended on the last one.
                Choice::Full | Choice::NoneLive => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            };
            self.loads[core].count.fetch_add(1, Ordering::Relaxed);
            // Counted before it is sent (so a burst spreads); if this future is dropped while
            // the inbox is full, the guard takes the count back off.
            let counted = Counted {
                handoff: self,
                core,
            };
            let sent = match self.senders[core].try_send(handed) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(h)) => {
                    self.senders[core].send(h).await.map_err(|e| e.into_inner())
                }
                Err(TrySendError::Closed(h)) => Err(h),
            };
            std::mem::forget(counted);
            match sent {
                Ok(()) => return Some(core),
                // That core stopped serving: never choose it again, try another.
                Err(h) => {
                    self.loads[core].count.store(GONE, Ordering::Relaxed);
                    handed = h;
                }
            }
        }
    }
}

/// A connection counted on a core but not yet in its inbox; dropped (the dispatch was
/// cancelled), it takes the count back off.
struct Counted<'a> {
    handoff: &'a Handoff,
    core: usize,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.handoff.finished(self.core);
    }
}

/// One core's end of the hand-off: the connections passed to it. Dropping it (the core stops
/// serving) closes every connection still queued and takes the core out of the choice.
pub struct Inbox {
    handoff: Arc<Handoff>,
    core: usize,
    rx: CrossReceiver<Handed>,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("core", &self.core)
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl Inbox {
    /// The next connection passed to this core; `None` once the hand-off is closed
    /// ([`Handoff::close`]) or gone and nothing is queued here.
    ///
    /// Call [`Inbox::finished`] (or [`Handoff::finished`]) when the connection ends, so the
    /// acceptor's count stays true.
    ///
    /// # Errors
    ///
    /// Never for the hand-off itself; a connection whose fd is not a socket is closed,
    /// counted as finished, and reported as the error.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a connection leaves the inbox only when returned.
    pub async fn next(&self) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        let (fd, peer) = self.rx.recv().await?;
        match TcpStream::from_owned_fd(fd) {
            Ok(stream) => Some(Ok((stream, peer))),
            Err(e) => {
                self.finished();
                Some(Err(e))
            }
        }
    }

    /// This core serves at most `max` connections at once: the acceptor passes it none while
    /// it has `max` (live plus queued here), and waits when every core is at its cap. Until
    /// this is called a core has no cap. A service sets it to its per-core cap.
    pub fn limit_connections(&self, max: usize) {
        self.handoff.loads[self.core]
            .cap
            .store(max.max(1), Ordering::Relaxed);
        // A raised cap is room.
        self.handoff.room_changed();
    }

    /// Says one connection handed to this core ended (the same as [`Handoff::finished`]).
    pub fn finished(&self) {
        self.handoff.finished(self.core);
    }

    /// The core this inbox belongs to.
    pub fn core(&self) -> usize {
        self.core
    }

    /// The hand-off this inbox belongs to.
    pub fn handoff(&self) -> &Arc<Handoff> {
        &self.handoff
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Mark the core gone before the receiver closes its queue (dropping every fd in it).
        self.handoff.loads[self.core]
            .count
            .store(GONE, Ordering::Relaxed);
        // A dispatch waiting for room looks again (this may have been the last live core).
        self.handoff.room_changed();
    }
}
