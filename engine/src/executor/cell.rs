//! The typed task block: header, future-then-result, detach sink; and its vtable functions.
//!
//! # Design
//!
//! `Task<F>` is `#[repr(C)]` with the [`Header`] first, so a header pointer is a block pointer.
//! Its stage goes `Running(future)` -> `Finished(result)` -> `Taken` in an `UnsafeCell`, and
//! the header's `state` byte mirrors it (so a handle can ask "finished?" or park its waker
//! without a call through the vtable). The state's `BUSY` bit is set while the future is polled
//! or dropped: it tells the task's own poll apart from re-entrant calls made *during* it (the
//! task awaiting or cancelling its own handle, a destructor of the future touching it), which
//! then only set a flag or store a waker and never touch the stage. The future is pinned in the block and
//! only ever dropped in place (by overwriting the stage), never moved: on completion, on panic,
//! or on cancel. A panic of the future, or of its destructor, becomes
//! [`JoinError::Panicked`].
//!
//! The block's memory comes from the executor's [`pool`] (by size class) and goes
//! back there in `destroy`, when the last [`TaskPtr`] drops.

use std::alloc::{self, Layout};
use std::cell::{Cell, UnsafeCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

use super::pool::{self, TaskPool};
use super::raw::{state, Header, TaskPtr, Vtable};
use super::task::JoinError;
use super::Executor;

/// Where a detached task's outcome goes.
pub(crate) type Sink<T> = Box<dyn FnOnce(Result<T, JoinError>)>;

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Taken,
}

#[repr(C)]
pub(crate) struct Task<F: Future> {
    header: Header,
    /// Mirrored in `header.state`; touched only as that field's rules say (see [`state`]).
    stage: UnsafeCell<Stage<F>>,
    sink: Cell<Option<Sink<F::Output>>>,
}

impl<F: Future + 'static> Task<F> {
    /// The block's allocation layout and size class.
    const LAYOUT: (Layout, Option<usize>) = pool::class_layout(Layout::new::<Task<F>>());

    const VTABLE: Vtable = Vtable {
        poll: Self::poll,
        cancel: Self::cancel,
        take_output: Self::take_output,
        set_sink: Self::set_sink,
        destroy: Self::destroy,
    };

    /// Allocates a task block for `future` (from `pool` when its class has an idle block). Its
    /// `task_ref` is filled in by the caller.
    pub(crate) fn allocate(future: F, executor: u16, pool: &mut TaskPool) -> TaskPtr {
        let (layout, class) = Self::LAYOUT;
        let block = match class.and_then(|c| pool.take(c)) {
            Some(block) => block.cast::<Task<F>>(),
            None => {
                // SAFETY: a task block is never zero-sized (it has a header).
                let raw = unsafe { alloc::alloc(layout) };
                match NonNull::new(raw.cast::<Task<F>>()) {
                    Some(block) => block,
                    None => alloc::handle_alloc_error(layout),
                }
            }
        };
        let vtable: &'static Vtable = &Self::VTABLE;
        // SAFETY: `block` is unused memory of `layout`, which is at least as large and as
        // aligned as `Task<F>` (`class_layout` only rounds up).
        unsafe {
            block.write(Task {
                header: Header::new(vtable, executor),
                stage: UnsafeCell::new(Stage::Running(future)),
                sink: Cell::new(None),
            });
        }
        // SAFETY: just initialised, its count (1) is this pointer's; the header is the first
        // field of a `repr(C)` struct, and the vtable is `Task<F>`'s.
        unsafe { TaskPtr::from_new(block.cast::<Header>()) }
    }

    /// # Safety
    ///
    /// `header` is the header of a live `Task<F>`.
    unsafe fn from_header<'a>(header: NonNull<Header>) -> &'a Task<F> {
        // SAFETY: the caller's duty; `repr(C)` puts the header at offset 0.
        unsafe { header.cast::<Task<F>>().as_ref() }
    }

    /// Stores the result and tells whoever waits for it. The stage must be `Taken` and not
    /// busy. `executor`: the one running this task, when known (a local joiner is queued
    /// directly).
    fn finish(&self, result: Result<F::Output, JoinError>, executor: Option<&Executor>) {
        if let Some(sink) = self.sink.take() {
            sink(result);
            return;
        }
        // SAFETY: not busy, so no reference into the stage exists; it is `Taken` (nothing to
        // drop), and the write runs no code of anyone's.
        unsafe { self.stage.get().write(Stage::Finished(result)) };
        self.header.state.set(state::FINISHED);
        if let Some(w) = self.header.join_waker.take() {
            match executor {
                Some(executor) => executor.wake(w),
                None => w.wake(),
            }
        }
    }

    /// Drops the future in place (the task must be running and marked busy) and marks it
    /// `Taken`; a panic of the future's destructor is caught and returned.
    fn drop_future(&self) -> Result<(), Box<dyn std::any::Any + Send>> {
        // SAFETY: busy: nobody else touches the stage until we clear it. Overwriting drops the
        // future in place; if its destructor unwinds, the stage is still written (`Taken`).
        let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
            *self.stage.get() = Stage::Taken
        }));
        self.header.state.set(state::TAKEN);
        dropped
    }

    /// # Safety
    ///
    /// `header` is the header of a live `Task<F>`.
    unsafe fn poll(header: NonNull<Header>, cx: &mut Context<'_>, executor: &Executor) -> bool {
        // SAFETY: the caller's duty.
        let task = unsafe { Self::from_header(header) };
        match task.header.state.get() {
            state::RUNNING => {}
            // Polled from inside its own poll: nothing to do.
            s if s & state::BUSY != 0 => return false,
            _ => return true,
        }
        task.header.state.set(state::RUNNING | state::BUSY);
        let polled = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: busy: we are the only user of the stage until we clear the flag.
            let Stage::Running(future) = (unsafe { &mut *task.stage.get() }) else {
                unreachable!("a running task's stage holds its future");
            };
            // SAFETY: the future lives inside the task block, which never moves while the task
            // lives, and it is only ever dropped in place (by overwriting the stage).
            unsafe { Pin::new_unchecked(future) }.poll(cx)
        }));
        let mut outcome = match polled {
            Ok(Poll::Pending) => {
                task.header.state.set(state::RUNNING);
                return false;
            }
            Ok(Poll::Ready(value)) => Ok(value),
            Err(payload) => Err(JoinError::Panicked(payload)),
        };
        // The future is finished: drop it in place (still busy, so its destructors cannot
        // reach it) before anyone sees the result.
        if let Err(payload) = task.drop_future() {
            outcome = Err(JoinError::Panicked(payload));
        }
        task.finish(outcome, Some(executor));
        true
    }

    /// # Safety
    ///
    /// `header` is the header of a live `Task<F>`.
    unsafe fn cancel(header: NonNull<Header>) -> bool {
        // SAFETY: the caller's duty.
        let task = unsafe { Self::from_header(header) };
        match task.header.state.get() {
            state::RUNNING => {}
            s if s & state::BUSY != 0 => {
                task.header.cancel_requested.set(true);
                return false;
            }
            _ => return true,
        }
        // Drop the future in place. Its destructors may cancel other tasks or ops, never this
        // one (it is busy, so a self-cancel only sets the flag above).
        task.header.state.set(state::RUNNING | state::BUSY);
        match task.drop_future() {
            Ok(()) => task.finish(Err(JoinError::Cancelled), None),
            Err(payload) => task.finish(Err(JoinError::Panicked(payload)), None),
        }
        true
    }

    /// # Safety
    ///
    /// `header` is the header of a live `Task<F>`; `out` points to a
    /// `Poll<Result<F::Output, JoinError>>`.
    unsafe fn take_output(header: NonNull<Header>, out: *mut ()) {
        // SAFETY: the caller's duty.
        let task = unsafe { Self::from_header(header) };
        if task.header.state.get() != state::FINISHED {
            return;
        }
        task.header.state.set(state::TAKEN);
        // SAFETY: finished and not busy: nobody holds a reference into the stage; replacing
        // it with `Taken` drops nothing (the old value is moved out).
        let stage = unsafe { std::ptr::replace(task.stage.get(), Stage::Taken) };
        if let Stage::Finished(result) = stage {
            // SAFETY: the caller's duty; the pointer comes from a `&mut` of that type.
            unsafe { *out.cast::<Poll<Result<F::Output, JoinError>>>() = Poll::Ready(result) };
        }
    }

    /// # Safety
    ///
    /// `header` is the header of a live `Task<F>`; `sink` points to an
    /// `Option<Sink<F::Output>>`.
    unsafe fn set_sink(header: NonNull<Header>, sink: *mut ()) {
        // SAFETY: the caller's duty.
        let task = unsafe { Self::from_header(header) };
        // SAFETY: the caller's duty; the pointer comes from a `&mut` of that type.
        let Some(sink) = (unsafe { &mut *sink.cast::<Option<Sink<F::Output>>>() }).take() else {
            return;
        };
        if task.header.state.get() != state::FINISHED {
            // Running (a running future stays where it is pinned) or already taken.
            task.sink.set(Some(sink));
            return;
        }
        task.header.state.set(state::TAKEN);
        // SAFETY: as in `take_output`.
        let stage = unsafe { std::ptr::replace(task.stage.get(), Stage::Taken) };
        if let Stage::Finished(result) = stage {
            sink(result);
        }
    }

    /// # Safety
    ///
    /// `header` is the header of a `Task<F>` nobody references any more.
    unsafe fn destroy(header: NonNull<Header>) {
        let block = header.cast::<Task<F>>();
        // SAFETY: the caller's duty: the block is initialised and unreachable, so it is
        // dropped exactly once, here.
        unsafe { block.as_ptr().drop_in_place() };
        let (layout, class) = Self::LAYOUT;
        // SAFETY: the block was allocated with `layout` (`allocate`, possibly through the pool,
        // which only holds blocks of their class layout) and its contents are dropped.
        unsafe { pool::release(block.cast::<u8>(), layout, class) };
    }
}
