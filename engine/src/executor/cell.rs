//! The typed task block: header, future-or-output, detach sink; and its vtable functions.
//!
//! # Design
//!
//! `Task<F>` is `#[repr(C)]` with the [`Header`] first, so a header pointer is a block pointer.
//! The future and its output share one slot, a union ([`Stage`]) whose only discriminant is the
//! header's `state` byte: `RUNNING` (the future is there) -> `FINISHED` (the output is there) ->
//! `TAKEN` (nothing is). So a handle asks "finished?", parks its waker or moves the output out
//! without a call through the vtable: the output's offset in the block is a vtable constant
//! ([`Vtable::output`]), and the output's type is the handle's own. The state's `BUSY` bit is set
//! while the future is polled or dropped: it tells the task's own poll apart from re-entrant
//! calls made *during* it (the task awaiting or cancelling its own handle, a destructor of the
//! future touching it), which then only set a flag or store a waker and never touch the slot.
//! The future is pinned in the block and only ever dropped in place, never moved: on
//! completion, on panic, or on cancel. A panic of the future, or of its destructor, becomes
//! [`JoinError::Panicked`].
//!
//! The block's memory comes from the executor's [`pool`] (by size class) and goes
//! back there when the last [`TaskPtr`] drops (`destroy`, or [`TaskPtr::release_taken`] for a
//! block with nothing left to drop).

use std::alloc::{self, Layout};
use std::cell::{Cell, UnsafeCell};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

use super::pool::{self, TaskPool};
use super::raw::{state, Header, TaskPtr, Vtable};
use super::task::JoinError;

/// Where a detached task's outcome goes.
pub(crate) type Sink<T> = Box<dyn FnOnce(Result<T, JoinError>)>;

/// What a task's outcome is stored as (a handle reads it as `Output<T>` of its own `T`).
pub(crate) type Output<T> = Result<T, JoinError>;

/// The future, then its output, in one place; which one is there is the header's `state`.
#[repr(C)]
union Stage<F: Future> {
    future: ManuallyDrop<F>,
    output: ManuallyDrop<Output<F::Output>>,
}

#[repr(C)]
pub(crate) struct Task<F: Future> {
    header: Header,
    /// Touched only as the header's `state` says (see [`state`]).
    stage: UnsafeCell<Stage<F>>,
    sink: Cell<Option<Sink<F::Output>>>,
}

impl<F: Future + 'static> Task<F> {
    /// The block's allocation layout and size class.
    const LAYOUT: (Layout, Option<usize>) = pool::class_layout(Layout::new::<Task<F>>());

    const VTABLE: Vtable = Vtable {
        poll: Self::poll,
        cancel: Self::cancel,
        set_sink: Self::set_sink,
        destroy: Self::destroy,
        // The union's fields start where it does (`repr(C)`).
        output: std::mem::offset_of!(Task<F>, stage),
        layout: Self::LAYOUT.0,
        class: Self::LAYOUT.1,
    };

    /// Allocates a task block for `future` (from `pool` when its class has an idle block). Its
    /// waker word is filled in by the caller.
    #[inline]
    pub(crate) fn allocate(future: F, pool: &mut TaskPool) -> TaskPtr {
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
                header: Header::new(vtable),
                stage: UnsafeCell::new(Stage {
                    future: ManuallyDrop::new(future),
                }),
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
    #[inline]
    unsafe fn from_header<'a>(header: NonNull<Header>) -> &'a Task<F> {
        // SAFETY: the caller's duty; `repr(C)` puts the header at offset 0.
        unsafe { header.cast::<Task<F>>().as_ref() }
    }

    /// Stores the result where it goes: into the block for the handle (the state becomes
    /// `FINISHED`; the joiner's waker stays parked in the header for the caller to wake), or to
    /// the detach sink. The state must be `TAKEN` (the slot is empty).
    #[inline(always)]
    fn complete(&self, result: Output<F::Output>) {
        // SAFETY: a look without a move: nothing else references the cell's contents (the
        // task is `!Send` and no code of anyone's runs during the read).
        if unsafe { (*self.sink.as_ptr()).is_some() } {
            self.complete_detached(result);
            return;
        }
        // SAFETY: `TAKEN` and not busy: the slot is empty and nobody holds a reference into
        // it; writing a union field drops nothing and runs no code of anyone's.
        unsafe { (*self.stage.get()).output = ManuallyDrop::new(result) };
        self.header.state.set(state::FINISHED);
    }

    /// `complete` for a detached task: the result goes to its sink. (Out of line: the joined
    /// case stays a few stores.)
    #[inline(never)]
    fn complete_detached(&self, result: Output<F::Output>) {
        // Nobody joins (a waker parked before the detach is stale).
        drop(self.header.join_waker.take());
        if let Some(sink) = self.sink.take() {
            sink(result);
        }
    }

    /// Drops the future in place (the task must be running and marked busy) and marks it
    /// `TAKEN`; a panic of the future's destructor is caught and returned.
    fn drop_future(&self) -> Result<(), Box<dyn std::any::Any + Send>> {
        // SAFETY: busy: nobody else touches the slot until we clear it, and the future is
        // there (running). If its destructor unwinds, the future counts as dropped all the
        // same: the state says `TAKEN` whatever happens.
        let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
            ManuallyDrop::drop(&mut (*self.stage.get()).future)
        }));
        self.header.state.set(state::TAKEN);
        dropped
    }

    /// # Safety
    ///
    /// `header` is the header of a live `Task<F>` whose state is `RUNNING` (not busy).
    unsafe fn poll(header: NonNull<Header>, cx: &mut Context<'_>) -> bool {
        // SAFETY: the caller's duty.
        let task = unsafe { Self::from_header(header) };
        task.header.state.set(state::RUNNING | state::BUSY);
        let polled = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: running and busy: the future is there and we are the only user of the
            // slot until we clear the flag.
            let future = unsafe { &mut (*task.stage.get()).future };
            // SAFETY: the future lives inside the task block, which never moves while the task
            // lives, and it is only ever dropped in place.
            match unsafe { Pin::new_unchecked(&mut **future) }.poll(cx) {
                Poll::Pending => None,
                Poll::Ready(value) => {
                    // Finished: drop the future in place (still busy, so its destructors
                    // cannot reach it) before anyone sees the result. From here on it counts
                    // as gone, even if its destructor unwinds.
                    task.header.state.set(state::TAKEN | state::BUSY);
                    // SAFETY: the future is there (we just polled it) and never used again.
                    unsafe { ManuallyDrop::drop(future) };
                    Some(value)
                }
            }
        }));
        let outcome = match polled {
            Ok(None) => {
                task.header.state.set(state::RUNNING);
                return false;
            }
            Ok(Some(value)) => {
                task.header.state.set(state::TAKEN);
                Ok(value)
            }
            Err(payload) => task.panicked(payload),
        };
        task.complete(outcome);
        true
    }

    /// The outcome of a poll that panicked with `payload`, in the future or in its destructor
    /// after it returned: the future is dropped if it is still there, and the state is `TAKEN`.
    #[cold]
    fn panicked(&self, payload: Box<dyn std::any::Any + Send>) -> Output<F::Output> {
        if self.header.state.get() & !state::BUSY == state::RUNNING {
            // The poll itself panicked: the future is still there.
            if let Err(payload) = self.drop_future() {
                return Err(JoinError::Panicked(payload));
            }
        }
        self.header.state.set(state::TAKEN);
        Err(JoinError::Panicked(payload))
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
            Ok(()) => task.complete(Err(JoinError::Cancelled)),
            Err(payload) => task.complete(Err(JoinError::Panicked(payload))),
        }
        if let Some(w) = task.header.join_waker.take() {
            w.wake();
        }
        true
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
        // SAFETY: it was `FINISHED` and not busy, so the output is there and nobody holds a
        // reference into it; `TAKEN` now, so it is moved out exactly once.
        let result = unsafe { ManuallyDrop::take(&mut (*task.stage.get()).output) };
        sink(result);
    }

    /// # Safety
    ///
    /// `header` is the header of a `Task<F>` nobody references any more.
    unsafe fn destroy(header: NonNull<Header>) {
        let block = header.cast::<Task<F>>();
        // SAFETY: the caller's duty: the block is initialised and unreachable, so what its
        // state says is in the slot is dropped exactly once, here, then the rest of it.
        unsafe {
            let task = block.as_ref();
            match task.header.state.get() {
                state::RUNNING => ManuallyDrop::drop(&mut (*task.stage.get()).future),
                state::FINISHED => ManuallyDrop::drop(&mut (*task.stage.get()).output),
                _ => {}
            }
            block.as_ptr().drop_in_place();
        }
        let (layout, class) = Self::LAYOUT;
        // SAFETY: the block was allocated with `layout` (`allocate`, possibly through the pool,
        // which only holds blocks of their class layout) and its contents are dropped.
        unsafe { pool::release(block.cast::<u8>(), layout, class) };
    }
}
