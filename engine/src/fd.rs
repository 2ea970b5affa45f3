//! A file descriptor shared by its owner and the ops in flight on it.
//!
//! An op holds a clone of the [`SharedFd`] in its data until its last completion, so the fd
//! cannot be closed (and its number reused by another file) between the moment the op is queued
//! and the moment the kernel is done with it. The fd is closed when the last clone goes.
//!
//! A file that carries many ops can also take a slot in the core's registered file table
//! ([`SharedFd::register`]); the ops that support it then name it by slot, which saves the
//! kernel an fd lookup and a reference count per op. The slot is given back before the fd is
//! closed (or handed off).

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use crate::runtime::context;

/// A reference-counted owned fd (core-local).
#[derive(Clone)]
pub struct SharedFd(Rc<FdCell>);

struct FdCell {
    fd: OwnedFd,
    /// The fd's slot in a registered file table, if it has one.
    fixed: Cell<Option<FixedSlot>>,
}

/// A slot of the registered file table of one ring (cores are made and dropped one after
/// another on a thread, so a slot is meaningful only on the ring that gave it out).
#[derive(Clone, Copy)]
struct FixedSlot {
    ring: u64,
    slot: u32,
}

impl FdCell {
    /// Gives the table slot back (the table's reference to the file goes with it). On its own
    /// ring at once, or at the ring's next reap when the driver is busy further up the stack (a
    /// destructor running inside it). Off that ring nothing can be done: when the ring is gone
    /// its table went with it; when it is suspended under another core on this thread (nested
    /// `block_on`), the file stays in its table until that ring closes.
    fn unregister(&self) {
        let Some(fixed) = self.fixed.take() else {
            return;
        };
        context::with_core(|core| {
            if core.ring_id != fixed.ring {
                return;
            }
            match core.driver.try_borrow_mut() {
                Ok(mut driver) => driver.unregister_file(fixed.slot),
                Err(_) => core.unregister_later.borrow_mut().push(fixed.slot),
            }
        });
    }
}

impl Drop for FdCell {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl SharedFd {
    /// Takes ownership of `fd`.
    pub fn new(fd: OwnedFd) -> SharedFd {
        SharedFd(Rc::new(FdCell {
            fd,
            fixed: Cell::new(None),
        }))
    }

    /// The raw fd number (valid while this value lives).
    #[inline]
    pub fn raw(&self) -> RawFd {
        self.0.fd.as_raw_fd()
    }

    /// The fd's slot in this core's registered file table, if it has one (a slot given out by
    /// another ring does not count).
    #[inline]
    pub fn fixed_slot(&self) -> Option<u32> {
        let fixed = self.0.fixed.get()?;
        context::with_core(|core| core.ring_id == fixed.ring)
            .unwrap_or(false)
            .then_some(fixed.slot)
    }

    /// Gives the fd a slot in this core's registered file table, so ops that support it
    /// (sends, for now) skip the kernel's fd lookup and reference count: ~80 ns per op on
    /// loopback here, for one system call now and one when the fd is closed. Worth it for a
    /// connection that carries many ops. True if the fd has a slot on this core (already, or
    /// now); false off a percore core, when the table is full or the kernel has none, and when
    /// the fd already has a slot on another ring.
    ///
    /// A caveat not checked here: kernels that retire removed table entries in order (older
    /// ones may; this machine runs 6.18) can keep a removed file open until ops that named
    /// other registered files before it complete, so a registered connection's close could
    /// wait for a slow send elsewhere.
    pub fn register(&self) -> bool {
        if self.0.fixed.get().is_some() {
            return self.fixed_slot().is_some();
        }
        let fixed = context::with_core(|core| {
            let slot = core
                .driver
                .try_borrow_mut()
                .ok()?
                .register_file(self.raw())?;
            Some(FixedSlot {
                ring: core.ring_id,
                slot,
            })
        })
        .flatten();
        self.0.fixed.set(fixed);
        fixed.is_some()
    }

    /// Takes the fd back if no op holds it any more, for hand-off to another core (its table
    /// slot, if any, is given back first).
    ///
    /// # Errors
    ///
    /// Gives the value back while ops still hold clones.
    pub fn try_unwrap(self) -> Result<OwnedFd, SharedFd> {
        let cell = Rc::try_unwrap(self.0).map_err(SharedFd)?;
        cell.unregister();
        // Move the fd out past FdCell's Drop (which has nothing left to do).
        let cell = std::mem::ManuallyDrop::new(cell);
        // SAFETY: `cell` is never used or dropped again, so the fd is read out exactly once;
        // `fixed` is a Cell of Copy data with no destructor to skip.
        Ok(unsafe { std::ptr::read(&cell.fd) })
    }

    /// Bytes on the sending side of a stream socket (`SIOCOUTQ`): for TCP, those not sent
    /// yet and those sent and not acknowledged by the peer (and 1 for a FIN sent and not
    /// acknowledged); for a Unix socket, those its peer has not read. A TCP socket's 0 means the
    /// peer's kernel has every byte: a close that resets the connection after that loses
    /// nothing a Linux peer has not read yet. After a reset the count stays where it was.
    ///
    /// # Errors
    ///
    /// The kernel's (`EINVAL` for a listening socket, `ENOTTY` for an fd that is no socket).
    pub fn unsent_bytes(&self) -> io::Result<usize> {
        crate::sys::unsent_bytes(self.raw())
    }

    /// How many handles (owner and in-flight ops) share the fd.
    pub fn holders(&self) -> usize {
        Rc::strong_count(&self.0)
    }
}

impl fmt::Debug for SharedFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedFd({})", self.raw())
    }
}

impl std::os::fd::AsFd for SharedFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.raw()
    }
}

impl From<OwnedFd> for SharedFd {
    fn from(fd: OwnedFd) -> SharedFd {
        SharedFd::new(fd)
    }
}

/// Wraps a raw fd a completion produced.
///
/// Only for fds the kernel just handed us (accept, open, socket results), which nobody else owns.
pub(crate) fn owned_from_completion(fd: i32) -> OwnedFd {
    // SAFETY: a non-negative accept/open/socket result is a new fd owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Releases an OwnedFd into a raw number the caller now owns.
pub(crate) fn into_raw(fd: OwnedFd) -> RawFd {
    fd.into_raw_fd()
}
