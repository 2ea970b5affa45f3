//! A conversation's task: runs the handler, watches the idle timeout and forked tasks, and
//! always removes the conversation's entry when it ends.
//!
//! # Design
//!
//! The task races two things, polled in this order on every wake-up: the handler (wrapped so
//! a panic becomes a value), and the end signal (a forked task failed, or the core's idle
//! sweep found the peer quiet). Whichever comes first ends the conversation (the handler's
//! future is dropped before the entry goes); every forked task's failure that came by then is
//! reported, whichever won. An `EndGuard`, made when the task is spawned and owned by its
//! future, does the removal in its `Drop`, so the entry also goes when the task is cancelled
//! (the service stopped), even before its first poll: there is no path that leaves a stale
//! entry.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use super::table::Table;
use crate::conversation::{EndSignal, Failure, Shared};
use crate::panic::CatchPanic;
use crate::stats::{DropReason, EndReason};

/// Removes the entry and counts the end, whatever way the task ends. Made when the task is
/// spawned and moved into its future, so the entry goes even if the task is dropped before its
/// first poll (the service stopped in the turn that admitted the peer).
pub(crate) struct EndGuard {
    shared: Rc<Shared>,
    table: Rc<Table>,
    reason: EndReason,
}

impl EndGuard {
    /// A guard that counts [`EndReason::Cancelled`] unless the task says otherwise.
    pub(crate) fn new(shared: Rc<Shared>, table: Rc<Table>) -> EndGuard {
        EndGuard {
            shared,
            table,
            reason: EndReason::Cancelled,
        }
    }
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
///
/// The handler comes boxed (in its [`CatchPanic`]): taken by value, its whole future would
/// also sit in this one's, an `async fn`'s arguments being kept for its whole life (one
/// more copy of the handler's future per conversation).
pub(crate) async fn run<Fut, E>(mut guard: EndGuard, mut handler: CatchPanic<Fut>)
where
    Fut: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    let shared = guard.shared.clone();
    let table = guard.table.clone();
    let outcome = poll_fn(|cx| {
        if let Poll::Ready(r) = Pin::new(&mut handler).poll(cx) {
            return Poll::Ready(Outcome::Returned(r));
        }
        shared.poll_end_signal(cx).map(Outcome::Signalled)
    })
    .await;
    drop(handler);
    // Forked tasks that failed before the end, even in the poll that ended it: every one is
    // reported, and the first decides the reason unless the handler's own failure does.
    let children = shared.take_child_failures();
    let child_reason = children.first().map(|f| {
        if f.is_panic() {
            EndReason::Panicked
        } else {
            EndReason::Failed
        }
    });
    let (reason, own) = match outcome {
        Outcome::Returned(Ok(Ok(()))) => (child_reason.unwrap_or(EndReason::Completed), None),
        Outcome::Returned(Ok(Err(e))) => (EndReason::Failed, Some(Failure::Failed(e.to_string()))),
        Outcome::Returned(Err(panic)) => (EndReason::Panicked, Some(Failure::Panicked(panic))),
        Outcome::Signalled(EndSignal::ChildFailed) => {
            (child_reason.unwrap_or(EndReason::Failed), None)
        }
        Outcome::Signalled(EndSignal::Idle) => {
            (child_reason.unwrap_or(EndReason::IdleTimeout), None)
        }
    };
    guard.reason = reason;
    drop(guard);
    for failure in own.iter().chain(&children) {
        table.report_failure(shared.peer, failure);
    }
}
