//! A conversation's task: runs the handler, watches the idle timeout and forked tasks, and
//! always removes the conversation's entry when it ends.
//!
//! # Design
//!
//! The task races two things, polled in this order on every wake-up: the handler (wrapped so
//! a panic becomes a value), and the end signal (a forked task failed, or the core's idle
//! sweep found the peer quiet). Whichever comes first ends the conversation (the handler's
//! future is dropped before the entry goes). An `EndGuard` owned by the task does the removal in its
//! `Drop`, so the entry also goes when the task itself is cancelled (the service stopped):
//! there is no path that leaves a stale entry.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use super::table::Table;
use crate::conversation::{EndSignal, Failure, Shared};
use crate::panic::CatchPanic;
use crate::stats::{DropReason, EndReason};

/// Removes the entry and counts the end, whatever way the task ends.
struct EndGuard {
    shared: Rc<Shared>,
    table: Rc<Table>,
    reason: EndReason,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let unread = self.shared.inbox.len() as u64;
        if unread > 0 {
            self.table.counters.dropped_n(DropReason::Unread, unread);
        }
        self.shared.end();
        self.table.remove(&self.shared);
        self.table.counters.ended(self.reason);
    }
}

enum Outcome<E> {
    Returned(Result<Result<(), E>, String>),
    Signalled(EndSignal),
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
    let outcome = poll_fn(|cx| {
        if let Poll::Ready(r) = Pin::new(&mut handler).poll(cx) {
            return Poll::Ready(Outcome::Returned(r));
        }
        shared.poll_end_signal(cx).map(Outcome::Signalled)
    })
    .await;
    drop(handler);
    let (reason, failure) = match outcome {
        Outcome::Returned(Ok(Ok(()))) => (EndReason::Completed, None),
        Outcome::Returned(Ok(Err(e))) => (EndReason::Failed, Some(Failure::Failed(e.to_string()))),
        Outcome::Returned(Err(panic)) => (EndReason::Panicked, Some(Failure::Panicked(panic))),
        Outcome::Signalled(EndSignal::ChildFailed(f)) if f.is_panic() => {
            (EndReason::Panicked, Some(f))
        }
        Outcome::Signalled(EndSignal::ChildFailed(f)) => (EndReason::Failed, Some(f)),
        Outcome::Signalled(EndSignal::Idle) => (EndReason::IdleTimeout, None),
    };
    guard.reason = reason;
    drop(guard);
    if let Some(failure) = failure {
        table.report_failure(shared.peer, &failure);
    }
}
