//! The ring's fd registered with the kernel (`IORING_REGISTER_RING_FDS`), so that every
//! `io_uring_enter` names the ring by its index in the thread's registered-ring table instead
//! of by fd: no fd-table lookup and no reference count taken and dropped per enter (the process
//! has several threads, so the kernel would take a real reference).
//!
//! The registration is ours, not the `io-uring` crate's: that crate remembers it in a
//! `Submitter`, which `IoUring::submitter()` makes afresh on every call, so a registration made
//! through one was never used by the next enter, and never undone. An undone registration is
//! worse than an unused one: the kernel's table holds a reference to the ring's file, so a
//! core's ring (its in-flight ops, its registered files) outlived the core until its thread
//! exited.
//!
//! The table belongs to the thread (at most 16 entries each): a ring is registered, entered
//! and unregistered by the one thread that runs its core (a `Driver` never leaves it).

use std::io;
use std::os::fd::RawFd;

/// `IORING_REGISTER_RING_FDS` and its inverse (`io_uring_register` opcodes).
const IORING_REGISTER_RING_FDS: libc::c_uint = 20;
const IORING_UNREGISTER_RING_FDS: libc::c_uint = 21;
/// `IORING_ENTER_REGISTERED_RING`: the enter's fd argument is a registered-ring index.
const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// A ring fd's slot in this thread's registered-ring table.
#[derive(Debug)]
pub(crate) struct RegisteredRing {
    index: u32,
    /// The ring's own fd, open for as long as this is (the driver drops it before the ring).
    ring_fd: RawFd,
}

impl RegisteredRing {
    /// Registers `ring_fd` in the calling thread's table, at a slot the kernel picks.
    ///
    /// # Errors
    ///
    /// `EINVAL` before Linux 5.18, `EBUSY` when the thread's 16 slots are taken.
    pub(crate) fn register(ring_fd: RawFd) -> io::Result<RegisteredRing> {
        let mut update = RsrcUpdate {
            // "Any free slot": the kernel writes the slot it chose back here.
            offset: u32::MAX,
            resv: 0,
            data: ring_fd as u64,
        };
        // SAFETY: `update` is a valid io_uring_rsrc_update for the call, and one entry is
        // passed; the kernel writes only its `offset`.
        let res = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                ring_fd,
                IORING_REGISTER_RING_FDS,
                &mut update as *mut RsrcUpdate,
                1,
            )
        };
        match res {
            1 => Ok(RegisteredRing {
                index: update.offset,
                ring_fd,
            }),
            -1 => Err(io::Error::last_os_error()),
            n => Err(io::Error::other(format!(
                "IORING_REGISTER_RING_FDS registered {n} rings, not 1"
            ))),
        }
    }

    /// `io_uring_enter(2)` on the registered ring; the arguments are the syscall's.
    ///
    /// # Safety
    ///
    /// `arg` must be null or valid for `arg_size` bytes as `flags` say (a sigset, or with
    /// `IORING_ENTER_EXT_ARG` an `io_uring_getevents_arg`), for the duration of the call; every
    /// submission queued must meet [`super::Driver::push`]'s contract.
    #[inline]
    pub(crate) unsafe fn enter(
        &self,
        to_submit: u32,
        min_complete: u32,
        flags: u32,
        arg: *const libc::c_void,
        arg_size: usize,
    ) -> io::Result<usize> {
        // SAFETY: the caller vouches for `arg` and the queued entries; the index names a ring
        // this thread registered and has not unregistered (`self` is alive).
        let res = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.index,
                to_submit,
                min_complete,
                flags | IORING_ENTER_REGISTERED_RING,
                arg,
                arg_size,
            )
        };
        if res < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res as usize)
        }
    }
}

impl Drop for RegisteredRing {
    /// Gives the slot back, and with it the table's reference to the ring's file: the ring is
    /// then released when its fd is closed.
    fn drop(&mut self) {
        let update = RsrcUpdate {
            offset: self.index,
            resv: 0,
            data: 0,
        };
        // SAFETY: `update` is a valid io_uring_rsrc_update for the call; the kernel reads it.
        // The ring's fd is still open (the driver closes it after dropping this).
        let res = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.ring_fd,
                IORING_UNREGISTER_RING_FDS,
                &update as *const RsrcUpdate,
                1,
            )
        };
        debug_assert_eq!(res, 1, "{}", io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    use io_uring::{opcode, types, IoUring};

    use super::RegisteredRing;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        // SAFETY: pipe2 returned two fresh fds that nothing else owns.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Closes a ring that has a read pending on a pipe, then writes to the pipe: returns
    /// whether the ring was gone (the bytes are still in the pipe) rather than alive (its
    /// pending read took them). With `unregister` false the registration is left in place.
    fn ring_gone_after_close(unregister: bool) -> bool {
        let (rx, tx) = pipe();
        let mut ring = IoUring::new(4).unwrap();
        let registered = RegisteredRing::register(ring.as_raw_fd()).unwrap();
        // Leaked: if the ring lives on, its read may write here at any time.
        let buf: &'static mut [u8; 16] = Box::leak(Box::new([0; 16]));
        let read = opcode::Read::new(types::Fd(rx.as_raw_fd()), buf.as_mut_ptr(), 16).build();
        // SAFETY: the read's buffer is leaked, so valid for as long as the kernel may use it.
        unsafe { ring.submission().push(&read).unwrap() };
        // SAFETY: no argument; the one entry queued points at leaked memory.
        let submitted = unsafe { registered.enter(1, 0, 0, std::ptr::null(), 0) }.unwrap();
        assert_eq!(submitted, 1);
        if unregister {
            drop(registered);
        } else {
            std::mem::forget(registered);
        }
        drop(ring);
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: writes 5 bytes from a live static string.
        let wrote = unsafe { libc::write(tx.as_raw_fd(), b"hello".as_ptr().cast(), 5) };
        assert_eq!(wrote, 5);
        std::thread::sleep(Duration::from_millis(20));
        let mut out = [0u8; 16];
        // SAFETY: reads at most 16 bytes into `out`.
        let got = unsafe { libc::read(rx.as_raw_fd(), out.as_mut_ptr().cast(), 16) };
        got == 5
    }

    #[test]
    fn an_unregistered_ring_is_released_when_its_fd_closes() {
        assert!(ring_gone_after_close(true));
        // The control, on its own thread (whose exit drops the registration): a ring left
        // registered outlives its fd, and this test can tell.
        let kept = std::thread::spawn(|| ring_gone_after_close(false))
            .join()
            .unwrap();
        assert!(!kept, "a registered ring should have outlived its fd");
    }

    #[test]
    fn slots_come_back_so_a_thread_can_register_ring_after_ring() {
        // The kernel gives a thread 16 slots; 40 rings in turn need them returned.
        for i in 0..40 {
            let ring = IoUring::new(4).unwrap();
            let registered = RegisteredRing::register(ring.as_raw_fd())
                .unwrap_or_else(|e| panic!("ring {i}: {e}"));
            drop(registered);
        }
    }
}
