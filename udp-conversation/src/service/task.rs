//! A conversation's task: runs the handler, watches the idle timeout and forked tasks, and
//! always removes the conversation's entry when it ends.
//!
//! # Design
//!
//! The task races three things, polled in this order on every wake-up: the handler (wrapped so
//! a panic becomes a value), the first failure of a forked task, and the idle watch. Whichever
//! finishes first ends the conversation; the others are dropped (the handler's future is
//! dropped before the entry goes). An `EndGuard` owned by the task does the removal in its
//! `Drop`, so the entry also goes when the task itself is cancelled (the service stopped):
//! there is no path that leaves a stale entry.
//!
//! The idle watch sleeps until the latest arrival plus the timeout, and when it wakes re-reads
//! the latest arrival: one timer per idle period, not one timer update per datagram.

use std::fmt;
use std::future::{pending, poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use percore_engine::time::{sleep_until, Instant};

use super::table::Table;
use crate::conversation::{Failure, Shared};
use crate::inbox::Inbox;
use crate::panic::CatchPanic;
use crate::stats::EndReason;

/// Removes the entry and counts the end, whatever way the task ends.
struct EndGuard {
    shared: Rc<Shared>,
    table: Rc<Table>,
    reason: EndReason,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.shared.end();
        self.table.remove(&self.shared);
        self.table.counters.ended(self.reason);
    }
}

enum Outcome<E> {
    Returned(Result<Result<(), E>, String>),
    ChildFailed(Failure),
    Idle,
}

/// Runs one conversation to its end; see the module docs.
pub(crate) async fn run<Fut, E>(shared: Rc<Shared>, table: Rc<Table>, handler: Fut)
where
    Fut: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    let mut guard = EndGuard {
        shared: shared.clone(),
        table: table.clone(),
        reason: EndReason::Cancelled,
    };
    let mut handler = CatchPanic::new(handler);
    let mut idle = pin!(idle_expiry(&shared.inbox, table.limits().idle_timeout));
    let outcome = poll_fn(|cx| {
        if let Poll::Ready(r) = Pin::new(&mut handler).poll(cx) {
            return Poll::Ready(Outcome::Returned(r));
        }
        if let Poll::Ready(f) = shared.poll_child_failure(cx) {
            return Poll::Ready(Outcome::ChildFailed(f));
        }
        if idle.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Outcome::Idle);
        }
        Poll::Pending
    })
    .await;
    drop(handler);
    let (reason, failure) = match outcome {
        Outcome::Returned(Ok(Ok(()))) => (EndReason::Completed, None),
        Outcome::Returned(Ok(Err(e))) => (EndReason::Failed, Some(Failure::Failed(e.to_string()))),
        Outcome::Returned(Err(panic)) => (EndReason::Panicked, Some(Failure::Panicked(panic))),
        Outcome::ChildFailed(f) if f.is_panic() => (EndReason::Panicked, Some(f)),
        Outcome::ChildFailed(f) => (EndReason::Failed, Some(f)),
        Outcome::Idle => (EndReason::IdleTimeout, None),
    };
    guard.reason = reason;
    drop(guard);
    if let Some(failure) = failure {
        table.report_failure(shared.peer, &failure);
    }
}

/// Completes once no datagram has arrived for `idle` (never, without a timeout).
async fn idle_expiry(inbox: &Inbox, idle: Option<Duration>) {
    let Some(idle) = idle else {
        return pending().await;
    };
    let mut sleep = sleep_until(inbox.last_arrival() + idle);
    loop {
        (&mut sleep).await;
        let deadline = inbox.last_arrival() + idle;
        if Instant::now() >= deadline {
            return;
        }
        sleep.reset(deadline);
    }
}
