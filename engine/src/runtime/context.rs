//! The current core: a thread-local pointer set while a core runs.
//!
//! Every engine API finds its core here. The pointer is set by [`Entered`] for the duration of
//! [`Core::block_on`](super::core::Core::block_on) and cleared when it returns or unwinds, so a
//! reference obtained through it never outlives the core.

use std::cell::Cell;
use std::io;
use std::sync::Arc;

use super::core::Core;
use crate::cross::remote::{self, Remote};
use crate::driver::Driver;
use crate::executor::waker::TaskRef;

thread_local! {
    static CURRENT: Cell<*const Core> = const { Cell::new(std::ptr::null()) };
}

/// Sets the current core for as long as it lives.
pub(crate) struct Entered {
    previous: *const Core,
}

impl Entered {
    pub(crate) fn new(core: &Core) -> Entered {
        let previous = CURRENT.with(|c| c.replace(core as *const Core));
        Entered { previous }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Runs `f` with the current core, or returns `None` on a thread that runs none.
#[inline]
pub(crate) fn with_core<R>(f: impl FnOnce(&Core) -> R) -> Option<R> {
    let ptr = CURRENT.with(Cell::get);
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the pointer is only non-null while an `Entered` guard lives inside
    // `Core::block_on`, which borrows the core for that whole time.
    Some(f(unsafe { &*ptr }))
}

/// Runs `f` with the current core's driver. `None` when no core runs here, or when the driver
/// is already borrowed further up this thread's stack (a destructor running inside the driver).
#[inline]
pub(crate) fn with_driver<R>(f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
    with_core(|core| {
        let mut driver = core.driver.try_borrow_mut().ok()?;
        Some(f(&mut driver))
    })
    .flatten()
}

/// The error for engine calls made off a percore core.
pub(crate) fn no_runtime() -> io::Error {
    io::Error::other("not running on a percore core (call from inside a percore runtime)")
}

/// Wakes a task of executor `executor` from this thread.
#[inline]
pub(crate) fn wake_task(executor: u16, task: TaskRef) {
    let local = with_core(|core| {
        if core.executor.id() == executor {
            core.executor.schedule(task);
            true
        } else {
            false
        }
    });
    if local == Some(true) {
        return;
    }
    if let Some(remote) = remote::lookup(executor) {
        remote.wake(task);
    }
}

/// Frees a cancelled task's slot, if it belongs to this thread's executor. (A task of a
/// finished executor has no slot to free.)
pub(crate) fn forget_task(executor: u16, task: TaskRef) {
    with_core(|core| {
        if core.executor.id() == executor {
            core.executor.remove(task);
        }
    });
}

/// Tries to wake another core's ring with `MSG_RING` from this core's ring. Returns false when
/// this thread runs no core, its kernel lacks `MSG_RING`, or the driver is busy.
pub(crate) fn send_msg_ring(target_ring: std::os::fd::RawFd, remote: &Arc<Remote>) -> bool {
    with_core(|core| core.send_msg_ring(target_ring, remote)).unwrap_or(false)
}
