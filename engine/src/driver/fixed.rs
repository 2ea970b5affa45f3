//! The core's table of registered files (`IORING_REGISTER_FILES`, sparse).
//!
//! An op that names its file by a slot of this table (`IOSQE_FIXED_FILE`) skips the kernel's
//! fd-table lookup and the file's reference count on every submission (`fget`/`fput`, ~80 ns
//! per op measured on this VM's loopback sends). Registering and unregistering a file are one
//! system call each, so the table is for files that carry many ops: a long-lived stream opts in
//! with [`crate::fd::SharedFd::register`].
//!
//! The table is registered on first use, sized to the process's soft fd limit (at most
//! [`MAX_SLOTS`]); when it is full, or the kernel refuses, files simply stay unregistered and
//! ops name them by fd. A slot is held by the file's [`crate::fd::SharedFd`] and given back
//! when its last handle goes: every op holds a handle until its final completion, so no op in
//! flight can name a slot that was given back (and the kernel pins the table's old entry for
//! requests already issued in any case).

use std::io;
use std::os::fd::RawFd;

use io_uring::IoUring;

/// The most slots a core's table has.
pub(crate) const MAX_SLOTS: u32 = 16_384;

/// Which slots are in use.
#[derive(Debug, Default)]
pub(crate) struct FixedFiles {
    /// Slots in the registered table (0 until first use, and if registering it failed).
    capacity: u32,
    /// Whether registering the table was tried (it is tried once).
    tried: bool,
    /// Slots never handed out start here.
    next: u32,
    /// Slots given back, reused last-in first-out.
    free: Vec<u32>,
    /// Slots in use.
    pub(crate) in_use: u32,
}

impl FixedFiles {
    /// Puts `fd` in a free slot; `None` when the table is full or cannot be had.
    pub(crate) fn register(&mut self, ring: &IoUring, fd: RawFd) -> Option<u32> {
        if !self.tried {
            self.tried = true;
            let slots = soft_fd_limit().min(MAX_SLOTS);
            if slots > 0 && ring.submitter().register_files_sparse(slots).is_ok() {
                self.capacity = slots;
            }
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.next < self.capacity => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        match ring.submitter().register_files_update(slot, &[fd]) {
            Ok(1) => {
                self.in_use += 1;
                Some(slot)
            }
            _ => {
                self.free.push(slot);
                None
            }
        }
    }

    /// Empties `slot` (the table's reference to the file goes) and makes it free. A failed
    /// update means the slot held nothing: it is free either way.
    pub(crate) fn unregister(&mut self, ring: &IoUring, slot: u32) -> io::Result<()> {
        let emptied = ring.submitter().register_files_update(slot, &[-1]);
        self.in_use = self.in_use.saturating_sub(1);
        self.free.push(slot);
        emptied.map(drop)
    }
}

/// The process's soft `RLIMIT_NOFILE` (the kernel refuses a bigger table).
fn soft_fd_limit() -> u32 {
    crate::sys::fd_limit().map_or(0, |limit| u32::try_from(limit.rlim_cur).unwrap_or(u32::MAX))
}
