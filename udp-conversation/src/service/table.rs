//! One core's conversation table and its admission state: the demultiplexer's side.
//!
//! # Invariants
//!
//! - A peer has at most one entry; an entry exists from admission until its conversation's end
//!   guard removes it (in every case: return, error, panic, idle timeout, cancellation).
//! - `entries.len()` is the core's live count and never exceeds `max_conversations`: the cap is
//!   checked before an entry (or anything else for the peer) is made.
//! - Delivering never waits: the datagram goes into the inbox or is dropped and counted.
//! - What every inbox holds queued, together, stays within the core's byte budget.
//! - No `RefCell` borrow is held while user code runs (the admission hook, the failure policy)
//!   or across an await.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Duration;

use percore_engine::time::Instant;
use percore_net::udp::UdpSocket;

use super::{AdmitHook, FailurePolicy, Limits};
use crate::admission::{Admission, RateLimiter, Tombstones};
use crate::conversation::{Failure, Shared};
use crate::inbox::{Inbox, QueueBudget};
use crate::receive::Received;
use crate::stats::{Counters, DropReason};

pub(crate) struct Table {
    entries: RefCell<HashMap<SocketAddr, Rc<Shared>>>,
    /// The bytes every inbox of this core may hold queued, together.
    budget: Rc<QueueBudget>,
    tombstones: Option<RefCell<Tombstones>>,
    rate: Option<RefCell<RateLimiter>>,
    limits: Limits,
    admit: Option<AdmitHook>,
    on_failure: FailurePolicy,
    pub(crate) counters: Rc<Counters>,
    socket: Rc<UdpSocket>,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("live", &self.entries.borrow().len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Table {
    pub(crate) fn new(
        socket: Rc<UdpSocket>,
        limits: Limits,
        admit: Option<AdmitHook>,
        on_failure: FailurePolicy,
        counters: Rc<Counters>,
    ) -> Table {
        Table {
            entries: RefCell::new(HashMap::new()),
            budget: Rc::new(QueueBudget::new(limits.max_queued_bytes)),
            tombstones: limits
                .tombstone
                .map(|ttl| RefCell::new(Tombstones::new(ttl, limits.max_conversations))),
            rate: limits
                .max_new_per_second
                .map(|r| RefCell::new(RateLimiter::new(r))),
            limits,
            admit,
            on_failure,
            counters,
            socket,
        }
    }

    /// Delivers one datagram: into its peer's inbox, or, for a new peer that passes admission,
    /// into a new conversation's, which is returned for the caller to start.
    pub(crate) fn deliver(&self, d: &Received) -> Option<Rc<Shared>> {
        self.counters.received();
        let Some(from) = d.from else {
            // Impossible on an IP socket; counted, never silent.
            self.counters.receive_error();
            return None;
        };
        if let Some(shared) = self.entries.borrow().get(&from) {
            let pushed = if d.truncated {
                // Dropped, but the peer was heard: it is not idle.
                shared.inbox.note_arrival();
                Err(DropReason::Truncated)
            } else {
                shared.inbox.push(d.payload.to_vec(), self.limits.overflow)
            };
            if let Err(reason) = pushed {
                self.counters.dropped(reason);
            }
            return None;
        }
        if d.truncated {
            self.counters.dropped(DropReason::Truncated);
            return None;
        }
        let now = Instant::now();
        if let Some(reason) = self.refuse(from, &d.payload, now) {
            self.counters.dropped(reason);
            return None;
        }
        let inbox = Inbox::new(self.limits.inbox_capacity, self.budget.clone());
        if let Err(reason) = inbox.push(d.payload.to_vec(), self.limits.overflow) {
            // Only the budget can refuse a fresh inbox's first datagram: no conversation.
            self.counters.dropped(reason);
            return None;
        }
        let shared = Rc::new(Shared::new(
            from,
            self.socket.clone(),
            inbox,
            self.counters.clone(),
            now,
        ));
        self.entries.borrow_mut().insert(from, shared.clone());
        self.counters.created();
        Some(shared)
    }

    /// Admission for a peer with no entry, cheapest check first (see the `admission` module).
    /// A rate token is spent only on a peer the hook accepts.
    fn refuse(&self, peer: SocketAddr, first: &[u8], now: Instant) -> Option<DropReason> {
        if let Some(t) = &self.tombstones {
            if t.borrow_mut().contains(&peer, now) {
                return Some(DropReason::Tombstoned);
            }
        }
        if self.entries.borrow().len() >= self.limits.max_conversations {
            return Some(DropReason::OverCap);
        }
        if let Some(rate) = &self.rate {
            if !rate.borrow_mut().has_token(now) {
                return Some(DropReason::OverRate);
            }
        }
        if let Some(admit) = &self.admit {
            if admit(peer, first) == Admission::Drop {
                return Some(DropReason::Refused);
            }
        }
        if let Some(rate) = &self.rate {
            rate.borrow_mut().take();
        }
        None
    }

    /// Removes the entry of a conversation that ended (only its own entry).
    pub(crate) fn remove(&self, shared: &Rc<Shared>) {
        let peer = shared.peer;
        let removed = {
            let mut entries = self.entries.borrow_mut();
            match entries.get(&peer) {
                Some(e) if Rc::ptr_eq(e, shared) => entries.remove(&peer),
                _ => None,
            }
        };
        if removed.is_some() {
            if let Some(t) = &self.tombstones {
                t.borrow_mut().insert(peer, Instant::now());
            }
        }
        drop(removed);
    }

    /// Hands a conversation's failure to the service's policy. A policy that panics ends
    /// nothing else: the panic is caught and logged.
    pub(crate) fn report_failure(&self, peer: SocketAddr, failure: &Failure) {
        let local = self.local_addr();
        let report = AssertUnwindSafe(|| (self.on_failure)(local, peer, failure));
        if let Err(panic) = std::panic::catch_unwind(report) {
            percore_net::log::line(format_args!(
                "percore-udp-conversation: {local}: the failure policy panicked ({}) \
                 on: conversation with {peer} {failure}",
                crate::panic::panic_message(panic.as_ref())
            ));
        }
    }

    /// Ends every conversation's input (the service is stopping): handlers drain their inbox,
    /// then `recv` returns `None`.
    pub(crate) fn close_all(&self) {
        let all: Vec<Rc<Shared>> = self.entries.borrow().values().cloned().collect();
        for shared in all {
            shared.inbox.close();
        }
    }

    /// One look of the idle sweep at `now`: signals the end of every conversation whose peer
    /// sent nothing for `idle` (their tasks remove their entries).
    pub(crate) fn sweep_idle(&self, idle: Duration, now: Instant) {
        let quiet: Vec<Rc<Shared>> = self
            .entries
            .borrow()
            .values()
            .filter(|s| s.idle_for(idle, now))
            .cloned()
            .collect();
        for shared in quiet {
            shared.signal_idle();
        }
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }
}
