//! The untyped face of a task: a header with its own reference count and a hand-written vtable.
//!
//! # Design
//!
//! A task is one heap block, `cell::Task<F>` (`#[repr(C)]`, the [`Header`] first), taken from
//! the executor's [`pool`](super::pool). Everything that does not know `F` holds a [`TaskPtr`]:
//! a thin pointer to the header that owns one reference. Three kinds of owner exist: the
//! executor's slab slot (from spawn until the task is finished or cancelled), its run-queue
//! entry (while queued, and while being polled) and the
//! [`JoinHandle`](super::task::JoinHandle) (until it takes the result, is detached, or is
//! dropped). The count is a plain `Cell<u32>`: tasks never leave their thread, so no atomics.
//! When it reaches zero the vtable's `destroy` drops the typed block in place (whatever stage
//! it is in) and gives the memory back to the pool; a handle that has just taken the output
//! and held the last reference gives the memory back itself ([`TaskPtr::release_taken`]: there
//! is nothing left to drop).
//!
//! Typed operations (poll, cancel, detach, destroy) go through [`Vtable`]: one static table per
//! future type, so a task pointer is one word and a call is one indirect jump, where
//! `Rc<dyn ..>` needed a fat pointer per owner and a separate trait object per role. Joining
//! needs no call at all: the handle knows the output's type, and the vtable says where in the
//! block the output lies ([`Vtable::output`]).

use std::alloc::Layout;
use std::cell::Cell;
use std::ptr::NonNull;
use std::task::{Context, Waker};

use super::cell::Output;
use super::waker::{self, TaskRef};

/// The typed operations of one future type. Every function takes the header of a live task
/// block of that type (at least one reference held by the caller).
pub(crate) struct Vtable {
    /// Polls the future; true when the task is finished: its slab slot can be freed, and the
    /// joiner's waker, if one is parked in the header, is the caller's to wake (the executor
    /// queues a local joiner directly). The state must be `RUNNING` (not busy: the executor
    /// checks before it calls).
    pub(crate) poll: unsafe fn(NonNull<Header>, &mut Context<'_>) -> bool,
    /// Drops the future in place if it has not finished; false if it is being polled right
    /// now (it cancelled itself): the executor then cancels it after the poll.
    pub(crate) cancel: unsafe fn(NonNull<Header>) -> bool,
    /// Detaches: takes the `Option<Sink<Output>>` behind the pointer.
    pub(crate) set_sink: unsafe fn(NonNull<Header>, *mut ()),
    /// Drops the block in place and frees its memory (the count reached zero).
    pub(crate) destroy: unsafe fn(NonNull<Header>),
    /// Where the output (an `Output<F::Output>`) lies, in bytes from the block's start, while
    /// the state is `FINISHED`.
    pub(crate) output: usize,
    /// The block's allocation layout and pool class (see [`pool`](super::pool)).
    pub(crate) layout: Layout,
    pub(crate) class: Option<usize>,
}

/// The header's `state` byte: the stage (`RUNNING`: the future is in the block, `FINISHED`: the
/// output is, `TAKEN`: neither) and the `BUSY` bit, set while the future is being polled or
/// dropped (then only the code that set it touches the block's future-or-output slot).
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
    /// Set when the task cancelled itself while being polled.
    pub(crate) cancel_requested: Cell<bool>,
    /// The task's waker word (its executor and slab slot, see [`waker`]), set
    /// right after spawn reserved the slot: the executor makes the task's waker from it.
    pub(crate) word: Cell<usize>,
    /// Who awaits the result.
    pub(crate) join_waker: Cell<Option<Waker>>,
}

impl Header {
    /// A running task's header with one reference (the [`TaskPtr`] its block is wrapped in).
    pub(crate) fn new(vtable: &'static Vtable) -> Header {
        Header {
            vtable,
            refs: Cell::new(1),
            state: Cell::new(state::RUNNING),
            scheduled: Cell::new(false),
            cancel_requested: Cell::new(false),
            word: Cell::new(0),
            join_waker: Cell::new(None),
        }
    }

    /// The executor that owns the task's slot, and the slot.
    #[inline]
    pub(crate) fn slot(&self) -> (u16, TaskRef) {
        waker::decode(self.word.get())
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

    /// # Safety
    ///
    /// The state is `RUNNING` (not busy).
    #[inline]
    pub(crate) unsafe fn poll(&self, cx: &mut Context<'_>) -> bool {
        // SAFETY: the block is alive (we hold a reference), the vtable is its own, and the
        // caller vouches for the state.
        unsafe { (self.header().vtable.poll)(self.0, cx) }
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
            let (executor, task) = header.slot();
            crate::runtime::context::forget_task(executor, task);
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

    /// Moves the output out of a `FINISHED` task (it is `TAKEN` after).
    ///
    /// # Safety
    ///
    /// The state is `FINISHED`; `T` is the task's output type.
    #[inline]
    pub(crate) unsafe fn take_output<T>(&self) -> Output<T> {
        let header = self.header();
        header.state.set(state::TAKEN);
        // SAFETY: `FINISHED` (the caller's duty) and not busy: an `Output<T>` (the caller's
        // duty) lies at the vtable's offset in the block, and nobody holds a reference into
        // it; `TAKEN` now, so it is moved out exactly once. The pointer is the block's (its
        // provenance covers the whole block).
        unsafe {
            self.0
                .as_ptr()
                .cast::<u8>()
                .add(header.vtable.output)
                .cast::<Output<T>>()
                .read()
        }
    }

    /// Lets go of a task whose output a handle has just taken: when this is the last
    /// reference, the block is freed without a call through the vtable (there is nothing left
    /// in it to drop).
    ///
    /// # Safety
    ///
    /// The caller took the output (`take_output`) and nothing was stored in the block since:
    /// its slot is empty, no sink was set (only a detach sets one, and it consumes the handle)
    /// and no join waker is parked (whoever finished the task took it before anyone could see
    /// `FINISHED`: the run loop right after the poll, `cancel` right after the drop).
    #[inline]
    pub(crate) unsafe fn release_taken(self) {
        let this = std::mem::ManuallyDrop::new(self);
        let header = this.header();
        let left = header.refs.get() - 1;
        header.refs.set(left);
        if left != 0 {
            return;
        }
        debug_assert!(header.state.get() == state::TAKEN);
        debug_assert!({
            let waker = header.join_waker.take();
            let none = waker.is_none();
            header.join_waker.set(waker);
            none
        });
        let (layout, class) = (header.vtable.layout, header.vtable.class);
        // SAFETY: that was the last reference, so nobody reaches the block any more; it holds
        // nothing to drop (the caller's duty; the rest of the header is plain data), and it
        // was allocated with its vtable's layout and class.
        unsafe { super::pool::release(this.0.cast::<u8>(), layout, class) };
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
            .field("task", &self.header().slot().1)
            .field("refs", &self.header().refs.get())
            .finish()
    }
}
