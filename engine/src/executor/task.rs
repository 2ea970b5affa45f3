//! A task: one allocation holding the future, then its result, and the joiner's waker.
//!
//! States: `Running(future)` -> `Finished(result)` -> `Taken`. The future is pinned in the
//! `Rc` allocation and dropped in place, either when it completes, when it panics, or when the
//! task is cancelled. A panic is caught at the poll and becomes the task's result
//! ([`JoinError::Panicked`]); it is never swallowed: the [`JoinHandle`] returns it, a detached
//! task's sink receives it.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::waker::TaskRef;

/// Why a task produced no value.
pub enum JoinError {
    /// The task was cancelled (its handle dropped or cancelled, or its scope cancelled).
    Cancelled,
    /// The task panicked; the payload is the panic's.
    Panicked(Box<dyn Any + Send + 'static>),
}

impl JoinError {
    /// The task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// The task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }

    /// The panic payload, to resume it with [`std::panic::resume_unwind`].
    ///
    /// # Panics
    ///
    /// Panics if the task was cancelled rather than panicked.
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self {
            JoinError::Panicked(p) => p,
            JoinError::Cancelled => panic!("into_panic on a cancelled task's JoinError"),
        }
    }

    /// The panic message, when the payload is a string.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            JoinError::Panicked(p) => p
                .downcast_ref::<&'static str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str)),
            JoinError::Cancelled => None,
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("Cancelled"),
            JoinError::Panicked(_) => write!(f, "Panicked({:?})", self.panic_message()),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("task was cancelled"),
            JoinError::Panicked(_) => match self.panic_message() {
                Some(m) => write!(f, "task panicked: {m}"),
                None => f.write_str("task panicked"),
            },
        }
    }
}

impl std::error::Error for JoinError {}

/// What the executor's slab holds: a task it can poll and cancel without knowing its types.
pub(crate) trait RawTask {
    /// Polls the future; returns true when the task is finished (result stored or handed to
    /// its sink) and its slab slot can be freed.
    fn poll(&self, cx: &mut Context<'_>) -> bool;
    /// Drops the future in place if it has not finished. Returns false if the task is being
    /// polled right now (it cancelled itself): the executor then cancels it after the poll.
    fn cancel(&self) -> bool;
    fn cancel_requested(&self) -> bool;
}

/// What a [`JoinHandle`] holds: the typed side of the same task.
pub(crate) trait JoinTarget<T> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>>;
    fn request_cancel(&self);
    fn is_finished(&self) -> bool;
    fn set_sink(&self, sink: Box<dyn FnOnce(Result<T, JoinError>)>);
}

/// Where a detached task's outcome goes.
type Sink<T> = Box<dyn FnOnce(Result<T, JoinError>)>;

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Taken,
}

pub(crate) struct TaskCell<F: Future> {
    stage: RefCell<Stage<F>>,
    join_waker: Cell<Option<Waker>>,
    sink: Cell<Option<Sink<F::Output>>>,
    cancel_requested: Cell<bool>,
    pub(crate) task_ref: Cell<TaskRef>,
    executor: u16,
}

impl<F: Future + 'static> TaskCell<F> {
    pub(crate) fn new(future: F, executor: u16) -> Rc<TaskCell<F>> {
        Rc::new(TaskCell {
            stage: RefCell::new(Stage::Running(future)),
            join_waker: Cell::new(None),
            sink: Cell::new(None),
            cancel_requested: Cell::new(false),
            task_ref: Cell::new(TaskRef {
                index: 0,
                generation: 0,
            }),
            executor,
        })
    }

    /// Stores the result and tells whoever waits for it.
    fn finish(&self, result: Result<F::Output, JoinError>) {
        if let Some(sink) = self.sink.take() {
            *self.stage.borrow_mut() = Stage::Taken;
            sink(result);
            return;
        }
        *self.stage.borrow_mut() = Stage::Finished(result);
        if let Some(w) = self.join_waker.take() {
            w.wake();
        }
    }
}

impl<F: Future + 'static> RawTask for TaskCell<F> {
    fn poll(&self, cx: &mut Context<'_>) -> bool {
        let outcome = {
            let Ok(mut stage) = self.stage.try_borrow_mut() else {
                return false;
            };
            let Stage::Running(future) = &mut *stage else {
                return true;
            };
            // SAFETY: the future lives inside the Rc allocation, which never moves, and it is
            // only ever dropped in place (by overwriting the stage); it is never moved out.
            let future = unsafe { Pin::new_unchecked(future) };
            match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                Ok(Poll::Pending) => return false,
                Ok(Poll::Ready(value)) => Ok(value),
                Err(payload) => Err(JoinError::Panicked(payload)),
            }
        };
        // The future is finished: drop it in place before anyone sees the result.
        *self.stage.borrow_mut() = Stage::Taken;
        self.finish(outcome);
        true
    }

    fn cancel(&self) -> bool {
        let Ok(mut stage) = self.stage.try_borrow_mut() else {
            self.cancel_requested.set(true);
            return false;
        };
        if !matches!(*stage, Stage::Running(_)) {
            return true;
        }
        // Drop the future in place. Its destructors may cancel other tasks or ops, never this
        // one (its stage is borrowed, so a self-cancel only sets the flag above).
        let dropped = catch_unwind(AssertUnwindSafe(|| *stage = Stage::Taken));
        drop(stage);
        match dropped {
            Ok(()) => self.finish(Err(JoinError::Cancelled)),
            Err(payload) => self.finish(Err(JoinError::Panicked(payload))),
        }
        true
    }

    fn cancel_requested(&self) -> bool {
        self.cancel_requested.get()
    }
}

impl<F: Future + 'static> JoinTarget<F::Output> for TaskCell<F> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, JoinError>> {
        let Ok(mut stage) = self.stage.try_borrow_mut() else {
            // The task is polling its own handle: it cannot be finished.
            self.join_waker.set(Some(cx.waker().clone()));
            return Poll::Pending;
        };
        match &*stage {
            Stage::Running(_) => {
                self.join_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
            Stage::Taken => Poll::Ready(Err(JoinError::Cancelled)),
            Stage::Finished(_) => match std::mem::replace(&mut *stage, Stage::Taken) {
                Stage::Finished(result) => Poll::Ready(result),
                _ => Poll::Ready(Err(JoinError::Cancelled)),
            },
        }
    }

    fn request_cancel(&self) {
        if !matches!(
            self.stage.try_borrow().as_deref(),
            Ok(Stage::Running(_)) | Err(_)
        ) {
            return;
        }
        if self.cancel() {
            crate::runtime::context::forget_task(self.executor, self.task_ref.get());
        }
    }

    fn is_finished(&self) -> bool {
        !matches!(*self.stage.borrow(), Stage::Running(_))
    }

    fn set_sink(&self, sink: Box<dyn FnOnce(Result<F::Output, JoinError>)>) {
        let finished = {
            let mut stage = self.stage.borrow_mut();
            // Only a finished result is moved out; a running future stays where it is pinned.
            if matches!(*stage, Stage::Finished(_)) {
                match std::mem::replace(&mut *stage, Stage::Taken) {
                    Stage::Finished(result) => Some(result),
                    _ => None,
                }
            } else {
                None
            }
        };
        match finished {
            Some(result) => sink(result),
            None => self.sink.set(Some(sink)),
        }
    }
}

/// An owned permission to await a spawned task's result.
///
/// Dropping the handle **cancels** the task: nothing runs unobserved. To let a task run on
/// alone, [`JoinHandle::detach`] it with a sink that receives its outcome, errors and panics
/// included.
///
/// # Cancel safety
///
/// Awaiting a `JoinHandle` (`&mut handle`) is cancel-safe: dropping that await leaves the task
/// running and the handle usable. Dropping the handle itself cancels the task.
pub struct JoinHandle<T> {
    task: Option<Rc<dyn JoinTarget<T>>>,
}

impl<T: 'static> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T: 'static> JoinHandle<T> {
    pub(crate) fn new(task: Rc<dyn JoinTarget<T>>) -> JoinHandle<T> {
        JoinHandle { task: Some(task) }
    }

    /// Cancels the task now (its future is dropped); awaiting the handle then gives
    /// [`JoinError::Cancelled`], unless the task had already finished.
    pub fn cancel(&self) {
        if let Some(task) = &self.task {
            task.request_cancel();
        }
    }

    /// Whether the task has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Lets the task run on without a handle; `sink` receives its outcome when it ends, so an
    /// error or a panic is never lost.
    pub fn detach(mut self, sink: impl FnOnce(Result<T, JoinError>) + 'static) {
        if let Some(task) = self.task.take() {
            task.set_sink(Box::new(sink));
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = &self.task else {
            return Poll::Ready(Err(JoinError::Cancelled));
        };
        let out = task.poll_join(cx);
        if out.is_ready() {
            // The result is taken: there is nothing left to cancel on drop.
            self.task = None;
        }
        out
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.request_cancel();
        }
    }
}
