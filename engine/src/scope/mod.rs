//! Structured concurrency, after trio.
//!
//! # Design
//!
//! A [`scope`] runs a body future and the child tasks it spawns through its [`Scope`] handle,
//! and completes only when all of them have. The first failure (a child's or the body's error or
//! panic) cancels everything else in the scope, and comes out of it as a [`ScopeError`]:
//! nothing fails silently, nothing outlives the scope. Dropping the scope's future cancels every
//! child: cancellation is by dropping futures, which the engine's op rules make safe.
//!
//! Children are real tasks on the current core (they run concurrently with the body, each with
//! its own poll), whose [`JoinHandle`] values the scope owns. A child reports its
//! end to the scope, which wakes the scope's future; the scope frees the finished child's handle
//! at its next poll.
//!
//! Deadlines: [`move_on_after`] gives up quietly (`None`), [`fail_after`] with an error; a
//! [`CancelScope`] is the same with a deadline that can move and a `cancel()` button.
//!
//! Detached work is allowed only with an error sink: [`spawn_detached`].

mod cancel;
mod catch;

pub use cancel::{fail_after, fail_at, move_on_after, move_on_at, CancelScope, MoveOn};

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::executor::task::{JoinError, JoinHandle};
use catch::{CatchMap, CatchUnwind};

/// How a scope failed: the first error or panic of its body or a child.
pub enum ScopeError<E> {
    /// A child or the body returned this error.
    Failed(E),
    /// A child or the body panicked; resume it with [`ScopeError::resume_panic`] if wanted.
    Panicked(Box<dyn Any + Send + 'static>),
}

impl<E> ScopeError<E> {
    /// The error, if it was one (not a panic).
    pub fn into_error(self) -> Option<E> {
        match self {
            ScopeError::Failed(e) => Some(e),
            ScopeError::Panicked(_) => None,
        }
    }

    /// Whether it was a panic.
    pub fn is_panic(&self) -> bool {
        matches!(self, ScopeError::Panicked(_))
    }

    /// Re-raises a panic in the caller; returns the error otherwise.
    pub fn resume_panic(self) -> E {
        match self {
            ScopeError::Failed(e) => e,
            ScopeError::Panicked(p) => std::panic::resume_unwind(p),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for ScopeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            ScopeError::Panicked(p) => {
                let msg = panic_message(p.as_ref());
                f.debug_tuple("Panicked").field(&msg).finish()
            }
        }
    }
}

impl<E: fmt::Display> fmt::Display for ScopeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Failed(e) => write!(f, "scope failed: {e}"),
            ScopeError::Panicked(p) => {
                write!(f, "scope task panicked: {}", panic_message(p.as_ref()))
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for ScopeError<E> {}

fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&'static str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

struct Inner<E> {
    children: RefCell<Vec<Option<JoinHandle<()>>>>,
    free: RefCell<Vec<usize>>,
    finished: RefCell<Vec<usize>>,
    live: Cell<usize>,
    failure: RefCell<Option<ScopeError<E>>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl<E> Inner<E> {
    fn fail(&self, error: ScopeError<E>) {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(error);
        }
        drop(failure);
        self.wake();
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn child_done(&self, id: usize, outcome: std::thread::Result<Result<(), E>>) {
        self.live.set(self.live.get().saturating_sub(1));
        self.finished.borrow_mut().push(id);
        match outcome {
            Ok(Ok(())) => self.wake(),
            Ok(Err(e)) => self.fail(ScopeError::Failed(e)),
            Err(p) => self.fail(ScopeError::Panicked(p)),
        }
    }

    /// Frees the handles of children that reported their end, and their slots.
    fn reap_finished(&self) {
        let ids: Vec<usize> = std::mem::take(&mut *self.finished.borrow_mut());
        if ids.is_empty() {
            return;
        }
        let mut freed = Vec::with_capacity(ids.len());
        {
            let mut children = self.children.borrow_mut();
            let mut free = self.free.borrow_mut();
            for id in ids {
                if let Some(handle) = children.get_mut(id).and_then(Option::take) {
                    freed.push(handle);
                    free.push(id);
                }
            }
        }
        // Finished tasks: dropping their handles cancels nothing.
        drop(freed);
    }

    /// Cancels every child still running (drops their futures).
    fn cancel_children(&self) {
        let children: Vec<Option<JoinHandle<()>>> =
            std::mem::take(&mut *self.children.borrow_mut());
        self.free.borrow_mut().clear();
        self.live.set(0);
        drop(children);
    }
}

/// The handle a scope's body uses to spawn children; clone it into children that spawn too.
pub struct Scope<E> {
    inner: Rc<Inner<E>>,
}

impl<E> Clone for Scope<E> {
    fn clone(&self) -> Self {
        Scope {
            inner: self.inner.clone(),
        }
    }
}

impl<E> fmt::Debug for Scope<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("live_children", &self.inner.live.get())
            .field("failed", &self.inner.failure.borrow().is_some())
            .finish()
    }
}

impl<E: 'static> Scope<E> {
    /// Spawns a child task in this scope. If the child fails (error or panic), the whole scope
    /// is cancelled and the failure comes out of [`scope`]. A child spawned into a scope that is
    /// already failing is cancelled at once.
    ///
    /// # Panics
    ///
    /// Panics if the scope has already ended (trio: "closed to new arrivals"), or off a core.
    pub fn spawn<F>(&self, future: F)
    where
        F: Future<Output = Result<(), E>> + 'static,
    {
        assert!(
            !self.inner.closed.get(),
            "spawn into a scope that has already ended"
        );
        if self.inner.failure.borrow().is_some() {
            return;
        }
        let id = {
            let mut children = self.inner.children.borrow_mut();
            match self.inner.free.borrow_mut().pop() {
                Some(id) => id,
                None => {
                    children.push(None);
                    children.len() - 1
                }
            }
        };
        self.inner.live.set(self.inner.live.get() + 1);
        let inner = self.inner.clone();
        let handle = crate::spawn(CatchMap::new(future, move |outcome| {
            inner.child_done(id, outcome)
        }));
        self.inner.children.borrow_mut()[id] = Some(handle);
    }

    /// Spawns `future` as a child whose panic does not fail the scope: its outcome (its output,
    /// or [`JoinError::Panicked`]) goes to `finish`, whose result
    /// is the child's (an `Err` fails the scope as with [`Scope::spawn`]). For a handler per
    /// connection: one task, the handler's future stored once in it, a panic ends only its
    /// connection.
    ///
    /// # Panics
    ///
    /// As [`Scope::spawn`].
    pub fn spawn_isolated<F, D>(&self, future: F, finish: D)
    where
        F: Future + 'static,
        D: FnOnce(Result<F::Output, crate::JoinError>) -> Result<(), E> + 'static,
    {
        self.spawn(CatchMap::new(
            future,
            move |outcome: std::thread::Result<F::Output>| {
                finish(outcome.map_err(crate::JoinError::Panicked))
            },
        ));
    }

    /// Children still running.
    pub fn live_children(&self) -> usize {
        self.inner.live.get()
    }

    /// Cancels the scope from inside: every child is cancelled and the scope ends with `error`.
    pub fn fail(&self, error: E) {
        self.inner.fail(ScopeError::Failed(error));
    }
}

/// Runs `body` with a fresh [`Scope`] and waits for it and every child it spawned.
///
/// Returns the body's value once all children have finished; or the first error or panic of
/// the body or any child, after cancelling everything else.
///
/// # Cancel safety
///
/// Dropping the returned future cancels the body and every child.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
///
/// let total = percore_engine::block_on(async {
///     let sum = Rc::new(Cell::new(0));
///     percore_engine::scope(|s| {
///         let sum = sum.clone();
///         async move {
///             for i in 1..=3 {
///                 let sum = sum.clone();
///                 s.spawn(async move {
///                     sum.set(sum.get() + i);
///                     Ok::<(), std::io::Error>(())
///                 });
///             }
///             Ok(())
///         }
///     })
///     .await
///     .unwrap();
///     sum.get()
/// });
/// assert_eq!(total, 6);
/// ```
pub fn scope<E, R, F, Fut>(body: F) -> ScopeFuture<E, R, Fut>
where
    E: 'static,
    F: FnOnce(Scope<E>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let inner = Rc::new(Inner {
        children: RefCell::new(Vec::new()),
        free: RefCell::new(Vec::new()),
        finished: RefCell::new(Vec::new()),
        live: Cell::new(0),
        failure: RefCell::new(None),
        waker: RefCell::new(None),
        closed: Cell::new(false),
    });
    let body = body(Scope {
        inner: inner.clone(),
    });
    ScopeFuture {
        inner,
        body: Some(Box::pin(CatchUnwind::new(body))),
        result: None,
    }
}

/// The future of [`scope`].
#[must_use = "futures do nothing unless polled"]
pub struct ScopeFuture<E, R, Fut> {
    inner: Rc<Inner<E>>,
    body: Option<Pin<Box<CatchUnwind<Fut>>>>,
    result: Option<R>,
}

impl<E, R, Fut> fmt::Debug for ScopeFuture<E, R, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeFuture")
            .field("body_done", &self.body.is_none())
            .field("live_children", &self.inner.live.get())
            .finish()
    }
}

impl<E, R, Fut> Unpin for ScopeFuture<E, R, Fut> {}

impl<E, R, Fut> Future for ScopeFuture<E, R, Fut>
where
    Fut: Future<Output = Result<R, E>>,
{
    type Output = Result<R, ScopeError<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(body) = this.body.as_mut() {
            if let Poll::Ready(outcome) = body.as_mut().poll(cx) {
                this.body = None;
                match outcome {
                    Ok(Ok(value)) => this.result = Some(value),
                    Ok(Err(e)) => this.inner.fail(ScopeError::Failed(e)),
                    Err(p) => this.inner.fail(ScopeError::Panicked(p)),
                }
            }
        }
        this.inner.reap_finished();
        let failure = this.inner.failure.borrow_mut().take();
        if let Some(failure) = failure {
            this.inner.closed.set(true);
            this.body = None;
            this.inner.cancel_children();
            return Poll::Ready(Err(failure));
        }
        if this.body.is_none() && this.inner.live.get() == 0 {
            this.inner.closed.set(true);
            this.inner.cancel_children();
            let value = this.result.take().expect("scope result present when done");
            return Poll::Ready(Ok(value));
        }
        *this.inner.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<E, R, Fut> Drop for ScopeFuture<E, R, Fut> {
    fn drop(&mut self) {
        self.inner.closed.set(true);
        self.body = None;
        self.inner.cancel_children();
    }
}

/// How a detached task ended badly, as its sink sees it.
#[derive(Debug)]
pub enum TaskFailure<E> {
    /// It returned an error.
    Failed(E),
    /// It panicked or was cancelled.
    Aborted(JoinError),
}

/// Spawns a task nobody joins. Its error, panic or cancellation goes to `sink`: a detached
/// task cannot fail silently.
///
/// # Panics
///
/// Panics off a percore core.
pub fn spawn_detached<E, F>(future: F, sink: impl FnOnce(TaskFailure<E>) + 'static)
where
    E: 'static,
    F: Future<Output = Result<(), E>> + 'static,
{
    crate::spawn(future).detach(move |outcome| match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => sink(TaskFailure::Failed(e)),
        Err(join) => sink(TaskFailure::Aborted(join)),
    });
}
