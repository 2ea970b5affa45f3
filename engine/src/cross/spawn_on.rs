//! Running work on a chosen core: explicit hand-off.
//!
//! Every core of a [`Runtime::run`](crate::Runtime::run) has a mailbox (a bounded cross-core
//! channel of jobs) and a task that spawns what arrives. [`spawn_on`] sends a closure there;
//! the closure runs on the target core and builds the (`!Send`) future that runs there, so only
//! the closure and the result cross cores. That is also how a value moves to a core: capture it
//! (an accepted socket's `OwnedFd`, say) in the closure.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::channel::{self, CrossReceiver, CrossSender};
use crate::executor::task::JoinError;
use crate::runtime::context;

/// A job for a core's mailbox.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Jobs a mailbox holds before senders wait.
pub(crate) const MAILBOX_CAPACITY: usize = 1024;

/// The mailboxes of every core of one runtime, by core index.
#[derive(Debug)]
pub(crate) struct Mailboxes {
    senders: Vec<CrossSender<Job>>,
}

impl Mailboxes {
    pub(crate) fn new(cores: usize) -> (Arc<Mailboxes>, Vec<CrossReceiver<Job>>) {
        let (senders, receivers) = (0..cores)
            .map(|_| channel::bounded(MAILBOX_CAPACITY))
            .unzip();
        (Arc::new(Mailboxes { senders }), receivers)
    }

    pub(crate) fn cores(&self) -> usize {
        self.senders.len()
    }
}

/// Spawns the task that runs a core's incoming jobs; it ends when the runtime's senders go.
pub(crate) fn serve_mailbox(inbox: CrossReceiver<Job>) -> crate::JoinHandle<()> {
    crate::spawn(async move {
        while let Some(job) = inbox.recv().await {
            job();
        }
    })
}

/// Runs `make()` on core `core` of the current runtime and spawns the future it returns there.
/// Resolves to that future's output.
///
/// # Errors
///
/// `JoinError::Panicked` if the closure or its future panicked; `JoinError::Cancelled` if the
/// target core shut down first, or if there is no such core.
///
/// # Cancel safety
///
/// Dropping the returned future before the job was queued means it never runs. Once queued it
/// runs on its core to the end; its result is then dropped, and a panic is reported on stderr
/// (never silently lost).
///
/// # Panics
///
/// Panics when called outside a runtime started with [`Runtime::run`](crate::Runtime::run).
pub fn spawn_on<F, Fut, T>(core: usize, make: F) -> SpawnOn<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let mailboxes = context::with_core(|c| c.mailboxes.borrow().clone())
        .flatten()
        .expect("spawn_on needs a runtime started with Runtime::run");
    let (tx, rx) = channel::bounded::<Result<T, JoinError>>(1);
    let job: Job = Box::new(move || {
        let future = make();
        crate::spawn(future).detach(move |outcome| {
            if let Err(e) = tx.try_send(outcome) {
                if let Err(JoinError::Panicked(_)) = e.into_inner() {
                    eprintln!(
                        "percore: a task started with spawn_on panicked after its caller left"
                    );
                }
            }
        });
    });
    SpawnOn {
        mailboxes,
        core,
        job: Some(job),
        result: rx,
    }
}

/// The future of [`spawn_on`].
#[must_use = "futures do nothing unless polled"]
pub struct SpawnOn<T> {
    mailboxes: Arc<Mailboxes>,
    core: usize,
    job: Option<Job>,
    result: CrossReceiver<Result<T, JoinError>>,
}

impl<T> fmt::Debug for SpawnOn<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnOn").field("core", &self.core).finish()
    }
}

impl<T> Unpin for SpawnOn<T> {}

impl<T: Send> Future for SpawnOn<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(job) = this.job.take() {
            let Some(sender) = this.mailboxes.senders.get(this.core) else {
                return Poll::Ready(Err(JoinError::Cancelled));
            };
            match sender.try_send(job) {
                Ok(()) => {}
                Err(crate::sync::channel::TrySendError::Full(job)) => {
                    // Mailbox full: retry when woken; rare, so a yield-style retry is enough.
                    this.job = Some(job);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Err(crate::sync::channel::TrySendError::Closed(_)) => {
                    return Poll::Ready(Err(JoinError::Cancelled));
                }
            }
        }
        match this.result.poll_recv(cx) {
            Poll::Ready(Some(outcome)) => Poll::Ready(outcome),
            // The job (and its sender) was dropped unrun: the target core is gone.
            Poll::Ready(None) => Poll::Ready(Err(JoinError::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}
