//! A file descriptor shared by its owner and the ops in flight on it.
//!
//! An op holds a clone of the [`SharedFd`] in its data until its last completion, so the fd
//! cannot be closed (and its number reused by another file) between the moment the op is queued
//! and the moment the kernel is done with it. The fd is closed when the last clone goes.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// A reference-counted owned fd (core-local).
#[derive(Clone)]
pub struct SharedFd(Rc<OwnedFd>);

impl SharedFd {
    /// Takes ownership of `fd`.
    pub fn new(fd: OwnedFd) -> SharedFd {
        SharedFd(Rc::new(fd))
    }

    /// The raw fd number (valid while this value lives).
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Takes the fd back if no op holds it any more, for hand-off to another core.
    ///
    /// # Errors
    ///
    /// Gives the value back while ops still hold clones.
    pub fn try_unwrap(self) -> Result<OwnedFd, SharedFd> {
        Rc::try_unwrap(self.0).map_err(SharedFd)
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
        self.0.as_fd()
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
