//! The untyped face of a task: a header with its own reference count and a hand-written vtable.
//!
//! # Design
//!
//! A task is one heap block, `task::Task<F>` (`#[repr(C)]`, the [`Header`] first), taken from
//! the executor's [`pool`](super::pool). Everything that does not know `F` holds a [`TaskPtr`]:
//! a thin pointer to the header that owns one reference. Three kinds of owner exist: the
//! executor's slab slot (from spawn until the task is finished or cancelled), its run-queue
//! entry (while queued, and while being polled) and the [`JoinHandle`](super::task::JoinHandle) (until it takes the
//! result, is detached, or is dropped). The count is a plain `Cell<u32>`: tasks never leave
//! their thread, so no atomics. When it reaches zero the vtable's `destroy` drops the typed
//! block in place (whatever stage it is in) and gives the memory back to the pool.
//!
//! Typed operations (poll, cancel, join, sink) go through [`Vtable`]: one static table per
//! future type, so a task pointer is one word and a call is one indirect jump, where
//! `Rc<dyn ..>` needed a fat pointer per owner and a separate trait object per role.

use std::cell::Cell;
use std::ptr::NonNull;
use std::task::{Context, Waker};

use super::waker::TaskRef;
use super::Executor;

/// The typed operations of one future type. Every function takes the header of a live task
/// block of that type (at least one reference held by the caller).
pub(crate) struct Vtable {
    /// Polls the future; true when the task is finished and its slab slot can be freed.
    /// The executor is the one running the task (its joiner is woken straight onto its queue).
    pub(crate) poll: unsafe fn(NonNull<Header>, &mut Context<'_>, &Executor) -> bool,
    /// Drops the future in place if it has not finished; false if it is being polled right
    /// now (it cancelled itself): the executor then cancels it after the poll.
    pub(crate) cancel: unsafe fn(NonNull<Header>) -> bool,
    /// Moves a finished result out: writes `Poll::Ready(Result<Output, JoinError>)` through
    /// the pointer (left alone unless the state is `FINISHED`).
    pub(crate) take_output: unsafe fn(NonNull<Header>, *mut ()),
    /// Detaches: takes the `Option<Sink<Output>>` behind the pointer.
    pub(crate) set_sink: unsafe fn(NonNull<Header>, *mut ()),
    /// Drops the block in place and frees its memory (the count reached zero).
    pub(crate) destroy: unsafe fn(NonNull<Header>),
}

/// The header's `state` byte: the stage (`RUNNING`, `FINISHED`, `TAKEN`) and the `BUSY` bit,
/// set while the future is being polled or dropped (then only the code that set it touches
/// the stage).
pub(crate) mod state {
    pub(crate) const RUNNING: u8 = 0;
    pub(crate) const FINISHED: u8 = 1;
    pub(crate) const TAKEN: u8 = 2;
    pub(crate) const BUSY: u8 = 4;
}

/// What every task block starts with.
pub(crate) struct Header {
    pub(crate) vtable: &'static Vtable,
    refs: Cell<u32>,
    /// See [`state`].
    pub(crate) state: Cell<u8>,
    /// In the run queue (at most once at a time).
    pub(crate) scheduled: Cell<bool>,
    /// Out of its slab slot (finished or cancelled): a queue entry left for it is skipped.
    pub(crate) removed: Cell<bool>,
    /// Set when the task cancelled itself while being polled.
    pub(crate) cancel_requested: Cell<bool>,
    /// The executor that owns the task's slot.
    pub(crate) executor: u16,
    /// The task's slab slot (set right after spawn reserved it).
    pub(crate) task_ref: Cell<TaskRef>,
    /// Who awaits the result.
    pub(crate) join_waker: Cell<Option<Waker>>,
}

impl Header {
    /// A running task's header with one reference (the [`TaskPtr`] its block is wrapped in).
    pub(crate) fn new(vtable: &'static Vtable, executor: u16) -> Header {
        Header {
            vtable,
            refs: Cell::new(1),
            state: Cell::new(state::RUNNING),
            scheduled: Cell::new(false),
            removed: Cell::new(false),
            cancel_requested: Cell::new(false),
            executor,
            task_ref: Cell::new(TaskRef {
                index: 0,
                generation: 0,
            }),
            join_waker: Cell::new(None),
        }
    }

    /// Whether the future is still there (running, or being polled or dropped right now).
    #[inline]
    pub(crate) fn is_running(&self) -> bool {
        let s = self.state.get();
        s == state::RUNNING || s & state::BUSY != 0
    }
}

/// One counted reference to a task block.
pub(crate) struct TaskPtr(NonNull<Header>);

impl TaskPtr {
    /// Takes over the reference a fresh [`Header::new`] counts.
    ///
    /// # Safety
    ///
    /// `header` starts a live, fully initialised task block whose count includes one reference
    /// nobody else owns; the block's vtable matches its type.
    #[inline]
    pub(crate) unsafe fn from_new(header: NonNull<Header>) -> TaskPtr {
        TaskPtr(header)
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: a TaskPtr owns a reference, so the block is alive while `self` is.
        unsafe { self.0.as_ref() }
    }

    #[inline]
    pub(crate) fn poll(&self, cx: &mut Context<'_>, executor: &Executor) -> bool {
        // SAFETY: the block is alive (we hold a reference) and the vtable is its own.
        unsafe { (self.header().vtable.poll)(self.0, cx, executor) }
    }

    #[inline]
    pub(crate) fn cancel(&self) -> bool {
        // SAFETY: as in `poll`.
        unsafe { (self.header().vtable.cancel)(self.0) }
    }

    /// A handle's cancel: cancels a running task and frees its slot.
    #[inline]
    pub(crate) fn request_cancel(&self) {
        let header = self.header();
        if header.is_running() && self.cancel() {
            crate::runtime::context::forget_task(header.executor, header.task_ref.get());
        }
    }

    /// Whether the future is gone (returned, panicked or cancelled).
    #[inline]
    pub(crate) fn is_finished(&self) -> bool {
        !self.header().is_running()
    }

    #[inline]
    pub(crate) fn cancel_requested(&self) -> bool {
        self.header().cancel_requested.get()
    }

    /// # Safety
    ///
    /// `out` points to a `Poll<Result<Output, JoinError>>` of this task's output type.
    #[inline]
    pub(crate) unsafe fn take_output(&self, out: *mut ()) {
        // SAFETY: the block is alive; the caller vouches for `out`'s type.
        unsafe { (self.header().vtable.take_output)(self.0, out) }
    }

    /// # Safety
    ///
    /// `sink` points to an `Option<Sink<Output>>` of this task's output type.
    #[inline]
    pub(crate) unsafe fn set_sink(&self, sink: *mut ()) {
        // SAFETY: the block is alive; the caller vouches for `sink`'s type.
        unsafe { (self.header().vtable.set_sink)(self.0, sink) }
    }

    /// The number of references (tests).
    #[cfg(test)]
    pub(crate) fn refs(&self) -> u32 {
        self.header().refs.get()
    }
}

impl Clone for TaskPtr {
    #[inline]
    fn clone(&self) -> TaskPtr {
        let refs = &self.header().refs;
        // At most three owners exist at once (slot, queue, handle): no overflow.
        refs.set(refs.get() + 1);
        TaskPtr(self.0)
    }
}

impl Drop for TaskPtr {
    #[inline]
    fn drop(&mut self) {
        let refs = &self.header().refs;
        let left = refs.get() - 1;
        refs.set(left);
        if left == 0 {
            // SAFETY: that was the last reference: nobody can reach the block any more, and
            // the vtable's destroy matches its type.
            unsafe { (self.header().vtable.destroy)(self.0) }
        }
    }
}

impl std::fmt::Debug for TaskPtr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskPtr")
            .field("task", &self.header().task_ref.get())
            .field("refs", &self.header().refs.get())
            .finish()
    }
}
