//! SIGINT/SIGTERM through a signalfd, read on the first core.
//!
//! [`SignalGuard::install`] blocks both signals in the launching thread before the cores start
//! (they inherit the mask, so no core is interrupted) and opens a signalfd for them. The first
//! core keeps a read of it in flight; a signal starts the runtime's graceful shutdown. The
//! guard restores the mask when the runtime returns.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::fd::SharedFd;
use crate::sys;

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// SIGINT and SIGTERM held (blocked) in the thread that made it, until dropped.
///
/// A process that runs a runtime with [`Builder::handle_signals`](super::Builder::handle_signals)
/// on a thread of its own, while its main thread does other work, takes this in the main
/// thread *before* starting that thread: the signals then reach the runtime's signalfd instead
/// of killing the process through a thread that does not block them.
#[derive(Debug)]
pub struct HeldSignals {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Blocks SIGINT and SIGTERM in the calling thread (and the threads it starts from now on);
/// dropping the result unblocks them in this thread.
///
/// # Errors
///
/// The kernel refused the mask change.
pub fn hold_shutdown_signals() -> io::Result<HeldSignals> {
    sys::block_signals(&SIGNALS)?;
    Ok(HeldSignals {
        _not_send: std::marker::PhantomData,
    })
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        let _ = sys::unblock_signals(&SIGNALS);
    }
}

#[derive(Debug)]
pub(crate) struct SignalGuard {
    fd: OwnedFd,
}

impl SignalGuard {
    pub(crate) fn install() -> io::Result<SignalGuard> {
        let set = sys::block_signals(&SIGNALS)?;
        match sys::signalfd(&set) {
            Ok(fd) => Ok(SignalGuard { fd }),
            Err(e) => {
                let _ = sys::unblock_signals(&SIGNALS);
                Err(e)
            }
        }
    }

    /// Spawns the task that turns a signal into a shutdown request (on the current core).
    pub(crate) fn spawn_reader(&self) -> crate::JoinHandle<()> {
        let fd = sys::dup(self.fd.as_raw_fd()).map(SharedFd::new);
        crate::spawn(async move {
            let Ok(fd) = fd else {
                eprintln!("percore: cannot watch signals: dup of the signalfd failed");
                return;
            };
            loop {
                // One signalfd_siginfo is 128 bytes.
                let buf = Vec::with_capacity(128);
                let (res, _) = crate::ops::read(&fd, buf, crate::ops::CURRENT_POSITION).await;
                match res {
                    Ok(_) => {
                        crate::runtime::context::with_core(|core| {
                            core.shutdown.shared().request();
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return,
                    Err(e) => {
                        eprintln!("percore: reading the signalfd failed: {e}");
                        return;
                    }
                }
            }
        })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let _ = sys::unblock_signals(&SIGNALS);
    }
}
