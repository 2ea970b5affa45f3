//! What a conversation service counted on one core: conversations live, created and ended
//! (by reason), and datagrams dropped (by reason). Every datagram the service does not deliver
//! is counted under one reason; nothing is dropped silently.

use std::cell::RefCell;
use std::fmt;

/// Why a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its handler returned `Ok`.
    Completed,
    /// Its handler (or a task forked from it) returned an error.
    Failed,
    /// Its handler (or a task forked from it) panicked.
    Panicked,
    /// No datagram came from the peer for the idle timeout.
    IdleTimeout,
    /// It was cancelled: the service stopped or its future was dropped.
    Cancelled,
}

/// Why a datagram was not delivered to a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A new peer while the core already had its maximum of live conversations.
    OverCap,
    /// A new peer beyond the rate of new conversations per second.
    OverRate,
    /// A new peer the admission hook refused.
    Refused,
    /// A peer whose conversation ended moments ago (its tombstone is still there).
    Tombstoned,
    /// The conversation's inbox was full (the overflow policy chose this datagram).
    InboxFull,
    /// The core's inboxes together held their byte budget
    /// ([`ConversationService::max_queued_bytes`](crate::ConversationService::max_queued_bytes)).
    OverBudget,
    /// Longer than the service's maximum datagram size.
    Truncated,
    /// Still in the inbox when the conversation ended (its handler never read it).
    Unread,
}

/// Conversations ended, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndedStats {
    /// [`EndReason::Completed`].
    pub completed: u64,
    /// [`EndReason::Failed`].
    pub failed: u64,
    /// [`EndReason::Panicked`].
    pub panicked: u64,
    /// [`EndReason::IdleTimeout`].
    pub idle_timeout: u64,
    /// [`EndReason::Cancelled`].
    pub cancelled: u64,
}

impl EndedStats {
    /// All ended conversations.
    pub fn total(&self) -> u64 {
        self.completed + self.failed + self.panicked + self.idle_timeout + self.cancelled
    }
}

/// Datagrams dropped, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DroppedStats {
    /// [`DropReason::OverCap`].
    pub over_cap: u64,
    /// [`DropReason::OverRate`].
    pub over_rate: u64,
    /// [`DropReason::Refused`].
    pub refused: u64,
    /// [`DropReason::Tombstoned`].
    pub tombstoned: u64,
    /// [`DropReason::InboxFull`].
    pub inbox_full: u64,
    /// [`DropReason::OverBudget`].
    pub over_budget: u64,
    /// [`DropReason::Truncated`].
    pub truncated: u64,
    /// [`DropReason::Unread`].
    pub unread: u64,
}

impl DroppedStats {
    /// All dropped datagrams.
    pub fn total(&self) -> u64 {
        self.over_cap
            + self.over_rate
            + self.refused
            + self.tombstoned
            + self.inbox_full
            + self.over_budget
            + self.truncated
            + self.unread
    }
}

/// A snapshot of one core's service counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConversationStats {
    /// Conversations live now (entries in the core's table).
    pub live: u64,
    /// Conversations created.
    pub created: u64,
    /// Conversations ended, by reason.
    pub ended: EndedStats,
    /// Datagrams received from the socket (delivered or not).
    pub received: u64,
    /// Datagrams dropped, by reason.
    pub dropped: DroppedStats,
    /// Receive errors the socket reported (each also logged).
    pub receive_errors: u64,
    /// Sends to a peer the kernel refused (each also returned to the sender).
    pub send_errors: u64,
    /// Times the receive ring ran dry: more datagrams arrived between two turns of the
    /// demultiplexer than the ring has buffers (see
    /// [`ConversationService::receive_buffers`](crate::ConversationService::receive_buffers)).
    /// Nothing is lost: the rest wait in the socket and the receive is re-armed at once.
    pub ring_dry: u64,
}

/// The live counters behind [`ConversationStats`] (core-local, no atomics).
#[derive(Default)]
pub(crate) struct Counters {
    stats: RefCell<ConversationStats>,
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.stats.borrow().fmt(f)
    }
}

impl Counters {
    pub(crate) fn get(&self) -> ConversationStats {
        *self.stats.borrow()
    }

    fn bump(&self, f: impl FnOnce(&mut ConversationStats)) {
        f(&mut self.stats.borrow_mut());
    }

    pub(crate) fn received(&self) {
        self.bump(|s| s.received += 1);
    }

    pub(crate) fn receive_error(&self) {
        self.bump(|s| s.receive_errors += 1);
    }

    pub(crate) fn send_error(&self) {
        self.bump(|s| s.send_errors += 1);
    }

    /// Times the receive ring ran dry since the last call (a service may be served again:
    /// its counters add up across `serve` calls).
    pub(crate) fn add_ring_dry(&self, n: u64) {
        self.bump(|s| s.ring_dry += n);
    }

    pub(crate) fn created(&self) {
        self.bump(|s| {
            s.created += 1;
            s.live += 1;
        });
    }

    pub(crate) fn ended(&self, reason: EndReason) {
        self.bump(|s| {
            s.live = s.live.saturating_sub(1);
            let e = &mut s.ended;
            match reason {
                EndReason::Completed => e.completed += 1,
                EndReason::Failed => e.failed += 1,
                EndReason::Panicked => e.panicked += 1,
                EndReason::IdleTimeout => e.idle_timeout += 1,
                EndReason::Cancelled => e.cancelled += 1,
            }
        });
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped_n(reason, 1);
    }

    pub(crate) fn dropped_n(&self, reason: DropReason, n: u64) {
        self.bump(|s| {
            let d = &mut s.dropped;
            let counter = match reason {
                DropReason::OverCap => &mut d.over_cap,
                DropReason::OverRate => &mut d.over_rate,
                DropReason::Refused => &mut d.refused,
                DropReason::Tombstoned => &mut d.tombstoned,
                DropReason::InboxFull => &mut d.inbox_full,
                DropReason::OverBudget => &mut d.over_budget,
                DropReason::Truncated => &mut d.truncated,
                DropReason::Unread => &mut d.unread,
            };
            *counter += n;
        });
    }
}
