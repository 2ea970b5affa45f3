//! The public face of a task: its [`JoinHandle`] and the [`JoinError`] it can end with.
//!
//! States of a task (kept in its block, see [`cell`](super::cell)): `Running(future)` ->
//! `Finished(result)` -> `Taken`. A panic is caught at the poll and becomes the task's result
//! ([`JoinError::Panicked`]); it is never swallowed: the [`JoinHandle`] returns it, a detached
//! task's sink receives it.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::raw::{state, TaskPtr};
use super::waker;

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
    task: Option<TaskPtr>,
    // The output type; `fn() -> T` keeps the handle `Unpin` whatever `T` is.
    _output: PhantomData<fn() -> T>,
}

impl<T: 'static> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T: 'static> JoinHandle<T> {
    /// # Safety
    ///
    /// `task`'s output type is `T`.
    pub(crate) unsafe fn new(task: TaskPtr) -> JoinHandle<T> {
        JoinHandle {
            task: Some(task),
            _output: PhantomData,
        }
    }

    /// References to the task block (tests): slot, queue entry, this handle.
    #[cfg(test)]
    pub(crate) fn refs(&self) -> u32 {
        self.task.as_ref().map_or(0, TaskPtr::refs)
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
        self.task.as_ref().is_none_or(TaskPtr::is_finished)
    }

    /// Lets the task run on without a handle; `sink` receives its outcome when it ends, so an
    /// error or a panic is never lost.
    pub fn detach(mut self, sink: impl FnOnce(Result<T, JoinError>) + 'static) {
        if let Some(task) = self.task.take() {
            let mut sink: Option<super::cell::Sink<T>> = Some(Box::new(sink));
            // SAFETY: the handle was made for a task of output `T` (`new`'s contract), and
            // `sink` is an `Option<Sink<T>>`.
            unsafe { task.set_sink((&mut sink as *mut Option<super::cell::Sink<T>>).cast()) };
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    // Inlined into the awaiting future (a call here cost more than the body): the finished
    // case is a few loads and stores, with no call through the vtable (see
    // `TaskPtr::take_output` and `TaskPtr::release_taken`).
    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let task = match &self.task {
            Some(task) if task.header().state.get() == state::FINISHED => task,
            _ => {
                if wait(&mut self.task, cx) {
                    return Poll::Pending;
                }
                return Poll::Ready(Err(JoinError::Cancelled));
            }
        };
        // SAFETY: `FINISHED`; the handle was made for a task of output `T` (`new`'s contract).
        let out = unsafe { task.take_output::<T>() };
        // The result is taken: there is nothing left to cancel on drop.
        if let Some(task) = self.task.take() {
            // SAFETY: we just took the output; nothing is stored in the block since.
            unsafe { task.release_taken() };
        }
        Poll::Ready(out)
    }
}

/// A handle's poll of a task that is not `FINISHED`: parks the waker and returns true while it
/// runs; false when there is no result to wait for (the handle lets go of the task).
#[inline(always)]
fn wait(task: &mut Option<TaskPtr>, cx: &mut Context<'_>) -> bool {
    let Some(t) = task else {
        return false;
    };
    let header = t.header();
    if header.state.get() == state::TAKEN {
        // Taken by a sink (the handle was detached) or never to come: nothing to wait for.
        *task = None;
        return false;
    }
    // Running, or busy (a task polling its own handle): wait.
    header.join_waker.set(Some(waker::clone_waker(cx.waker())));
    true
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.request_cancel();
        }
    }
}
