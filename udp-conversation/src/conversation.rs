//! [`Conversation`]: one peer's side of a conversation service, owned by that peer's task.
//!
//! # Design
//!
//! The demultiplexer and the conversation's task share one `Shared` per conversation: the
//! peer, the core's socket, the inbox, the tasks forked from the conversation, and what ends it
//! from outside the handler: the failures of forked tasks (every one, each goes to the failure
//! policy) and the idle sweep's verdict (dropped if a datagram came after it). The handler owns
//! the [`Conversation`] (the only receiver); any number of [`ConversationSender`]s send on it.
//! When the conversation ends (its task's end guard runs, in every case) the inbox closes and
//! lets go of what it queued, forked tasks are cancelled (their handles dropped) and senders
//! fail with `NotConnected` from then on.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use percore_engine::buf::IoBuf;
use percore_engine::time::Instant;
use percore_engine::JoinHandle;
use percore_net::udp::UdpSocket;

use crate::inbox::Inbox;
use crate::panic::CatchPanic;
use crate::stats::Counters;

/// How a conversation failed, as the service's failure policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The handler, or a task forked from it, returned this error (its `Display` text).
    Failed(String),
    /// The handler, or a task forked from it, panicked with this message.
    Panicked(String),
}

impl Failure {
    /// Whether it was a panic.
    pub fn is_panic(&self) -> bool {
        matches!(self, Failure::Panicked(_))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Failed(e) => write!(f, "failed: {e}"),
            Failure::Panicked(p) => write!(f, "panicked: {p}"),
        }
    }
}

/// What ends a conversation from outside its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndSignal {
    /// A forked task failed or panicked (its failure waits in `Shared::take_child_failures`).
    ChildFailed,
    /// No datagram for the idle timeout.
    Idle,
}

pub(crate) struct Shared {
    pub(crate) peer: SocketAddr,
    socket: Rc<UdpSocket>,
    pub(crate) inbox: Inbox,
    counters: Rc<Counters>,
    children: RefCell<Vec<JoinHandle<()>>>,
    /// Failures of forked tasks not yet reported, in the order they came.
    child_failures: RefCell<Vec<Failure>>,
    /// The idle sweep's verdict: the arrival count it saw when it found the peer quiet.
    idle_verdict: Cell<Option<u64>>,
    end_waker: RefCell<Option<Waker>>,
    ended: Cell<bool>,
    /// The idle sweep's view: the arrival count at its last look, and the time of the look
    /// that first saw that count (never earlier than the datagram that made it).
    idle_check: Cell<(u64, Instant)>,
}

impl Shared {
    /// `now` is the time the conversation is admitted (its first datagram already arrived).
    pub(crate) fn new(
        peer: SocketAddr,
        socket: Rc<UdpSocket>,
        inbox: Inbox,
        counters: Rc<Counters>,
        now: Instant,
    ) -> Shared {
        let arrivals = inbox.arrivals();
        Shared {
            peer,
            socket,
            inbox,
            counters,
            children: RefCell::new(Vec::new()),
            child_failures: RefCell::new(Vec::new()),
            idle_verdict: Cell::new(None),
            end_waker: RefCell::new(None),
            ended: Cell::new(false),
            idle_check: Cell::new((arrivals, now)),
        }
    }

    async fn send<B: IoBuf>(&self, buf: B) -> io::Result<()> {
        if self.ended.get() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the conversation has ended",
            ));
        }
        let (sent, _) = self.socket.send_to(buf, self.peer).await;
        if sent.is_err() {
            self.counters.send_error();
        }
        sent.map(drop)
    }

    /// One look of the idle sweep at `now`: true once no datagram arrived for `idle`. Time
    /// is counted from the look that first saw the latest arrival, so the verdict may come up
    /// to two sweep periods late, never early.
    pub(crate) fn idle_for(&self, idle: Duration, now: Instant) -> bool {
        let arrivals = self.inbox.arrivals();
        let (seen, since) = self.idle_check.get();
        if arrivals != seen {
            self.idle_check.set((arrivals, now));
            return false;
        }
        now.saturating_duration_since(since) >= idle
    }

    /// The idle sweep found the peer quiet: ends the conversation unless a datagram comes
    /// before its task sees this.
    pub(crate) fn signal_idle(&self) {
        if self.idle_verdict.get().is_none() {
            self.idle_verdict.set(Some(self.inbox.arrivals()));
            self.wake_task();
        }
    }

    /// A forked task failed: ends the conversation; every such failure is reported.
    fn child_failed(&self, failure: Failure) {
        self.child_failures.borrow_mut().push(failure);
        self.wake_task();
    }

    fn wake_task(&self) {
        let waker = self.end_waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// What ends the conversation from outside its handler, once there is something: a
    /// forked task's failure first; an idle verdict only if no datagram came since.
    pub(crate) fn poll_end_signal(&self, cx: &mut Context<'_>) -> Poll<EndSignal> {
        if !self.child_failures.borrow().is_empty() {
            return Poll::Ready(EndSignal::ChildFailed);
        }
        if let Some(seen) = self.idle_verdict.get() {
            if self.inbox.arrivals() == seen {
                return Poll::Ready(EndSignal::Idle);
            }
            // A datagram came after the verdict: the peer is not idle after all.
            self.idle_verdict.set(None);
        }
        let mut waker = self.end_waker.borrow_mut();
        match waker.as_ref() {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The forked tasks' failures not yet reported.
    pub(crate) fn take_child_failures(&self) -> Vec<Failure> {
        std::mem::take(&mut *self.child_failures.borrow_mut())
    }

    /// Ends the conversation: closes the inbox (what it still holds is let go; the caller
    /// counted it) and cancels every forked task.
    pub(crate) fn end(&self) {
        self.ended.set(true);
        self.inbox.close();
        self.inbox.clear();
        let children = std::mem::take(&mut *self.children.borrow_mut());
        // Dropping the handles cancels the tasks; no borrow is held meanwhile.
        drop(children);
        self.end_waker.borrow_mut().take();
    }
}

/// One peer's conversation, handed to the service's handler, which owns it.
///
/// Receives the peer's datagrams in arrival order ([`Conversation::recv`]), sends datagrams to
/// the peer ([`Conversation::send`]), and forks helper tasks that can send too and are cancelled
/// when the conversation ends ([`Conversation::fork_child`]). Timeouts inside a handler are the
/// engine's cancel scopes: `percore_engine::scope::fail_after(d, conv.recv())`.
pub struct Conversation {
    shared: Rc<Shared>,
}

impl fmt::Debug for Conversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conversation")
            .field("peer", &self.shared.peer)
            .field("inbox", &self.shared.inbox)
            .finish()
    }
}

impl Conversation {
    pub(crate) fn new(shared: Rc<Shared>) -> Conversation {
        Conversation { shared }
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.shared.peer
    }

    /// The peer's next datagram (a zero-length datagram is an empty `Vec`), waiting for one;
    /// `None` when the service is stopping and the inbox has been drained.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a datagram is taken from the inbox only when the future returns it.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        poll_fn(|cx| self.shared.inbox.poll_recv(cx)).await
    }

    /// The next datagram if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        self.shared.inbox.try_recv()
    }

    /// Sends `buf`'s bytes to the peer as one datagram.
    ///
    /// # Errors
    ///
    /// `NotConnected` once the conversation has ended; the kernel's error (`EMSGSIZE` for a
    /// datagram too large, ...), which the service also counts
    /// ([`ConversationStats::send_errors`](crate::ConversationStats)).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the send; the datagram may have gone out anyway.
    pub async fn send<B: IoBuf>(&self, buf: B) -> io::Result<()> {
        self.shared.send(buf).await
    }

    /// A handle that sends to the peer, for helper tasks.
    pub fn sender(&self) -> ConversationSender {
        ConversationSender {
            shared: self.shared.clone(),
        }
    }

    /// Runs `child` as a task tied to this conversation (the seed's `fork_child`): it is
    /// cancelled when the conversation ends, and its error or panic ends the conversation
    /// (reported to the service's failure policy like the handler's own). Give it a
    /// [`ConversationSender`] to let it send.
    ///
    /// # Panics
    ///
    /// Off a percore core.
    pub fn fork_child<F, E>(&self, child: F)
    where
        F: Future<Output = Result<(), E>> + 'static,
        E: fmt::Display + 'static,
    {
        if self.shared.ended.get() {
            return;
        }
        let shared = Rc::downgrade(&self.shared);
        let handle = percore_engine::spawn(async move {
            let failure = match CatchPanic::new(child).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => Failure::Failed(e.to_string()),
                Err(panic) => Failure::Panicked(panic),
            };
            if let Some(shared) = shared.upgrade() {
                shared.child_failed(failure);
            }
        });
        let mut children = self.shared.children.borrow_mut();
        children.retain(|c| !c.is_finished());
        children.push(handle);
    }
}

/// Sends to a conversation's peer; cheap to clone, usable from forked tasks.
#[derive(Clone)]
pub struct ConversationSender {
    shared: Rc<Shared>,
}

impl fmt::Debug for ConversationSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConversationSender")
            .field("peer", &self.shared.peer)
            .field("ended", &self.shared.ended.get())
            .finish()
    }
}

impl ConversationSender {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.shared.peer
    }

    /// Whether the conversation has ended.
    pub fn is_ended(&self) -> bool {
        self.shared.ended.get()
    }

    /// Sends `buf`'s bytes to the peer as one datagram.
    ///
    /// # Errors
    ///
    /// `NotConnected` once the conversation has ended; the kernel's errors.
    ///
    /// # Cancel safety
    ///
    /// As [`Conversation::send`].
    pub async fn send<B: IoBuf>(&self, buf: B) -> io::Result<()> {
        self.shared.send(buf).await
    }
}
