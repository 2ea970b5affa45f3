//! Opening and closing files through the ring.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use io_uring::{opcode, types};

use crate::driver::op::{Op, Orphan};
use crate::driver::slab::Completion;
use crate::fd::owned_from_completion;
use crate::sys;

struct OpenData {
    path: CString,
}

impl Orphan for OpenData {
    fn on_completion(&mut self, done: Completion) {
        // The file was opened for a future that is gone: close it.
        if done.result >= 0 {
            sys::close(done.result);
        }
    }
}

/// Opens `path` with `open(2)` flags (`O_CLOEXEC` is always added) and `mode` for new files.
///
/// # Errors
///
/// The kernel's error; `InvalidInput` for a path containing a NUL byte.
///
/// # Cancel safety
///
/// Dropping the future cancels the open; if the file was opened anyway, it is closed.
pub async fn open(path: impl AsRef<Path>, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_ref().as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let data = OpenData { path };
    // SAFETY: the entry points at the CString's heap bytes, owned by the op data.
    let op = unsafe {
        Op::submit(data, |d| {
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), d.path.as_ptr())
                .flags(flags | libc::O_CLOEXEC)
                .mode(mode)
                .build()
        })
    }
    .map_err(|(e, _)| e)?;
    let (done, _) = op.await;
    super::check(done).map(|fd| owned_from_completion(fd as i32))
}

struct CloseData;

impl Orphan for CloseData {}

/// Closes `fd` through the ring and reports the kernel's answer (which `drop` cannot).
///
/// # Errors
///
/// The kernel's error from `close(2)`; the fd is gone either way.
///
/// # Cancel safety
///
/// Dropping the future does not stop the close: the fd is closed either way.
pub async fn close(fd: OwnedFd) -> io::Result<()> {
    let raw = crate::fd::into_raw(fd);
    // SAFETY: a close entry points at no memory.
    let op = unsafe { Op::submit(CloseData, |_| opcode::Close::new(types::Fd(raw)).build()) };
    match op {
        Ok(op) => {
            let (done, _) = op.await;
            super::check(done).map(drop)
        }
        Err((e, _)) => {
            sys::close(raw);
            Err(e)
        }
    }
}
