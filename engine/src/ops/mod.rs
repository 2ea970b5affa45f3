//! The op families: each file is one kind of io_uring request, its owned data (what the kernel
//! may touch until the last completion) and what happens to a completion nobody waits for.
//!
//! Every function here submits on the calling core's ring when first polled, owns its buffers
//! and gives them back with the result. Dropping any of these futures is safe at every point:
//! see the driver's design note. An op that would produce an fd (accept, connect's socket, open)
//! closes that fd if its future is gone by the time the kernel completes it.

mod fs;
mod multishot;
mod nop;
mod rw;
mod send_zc;
mod socket;

pub use fs::{close, open};
pub use multishot::{accept_multishot, recv_multishot, AcceptStream, Received, RecvStream};
pub use nop::nop;
pub use rw::{read, readv, write, writev, CURRENT_POSITION};
pub use send_zc::send_zc;
pub use socket::{accept, connect, recv, recv_from, send, send_to, shutdown, RecvMeta};

use std::io;

use crate::driver::slab::Completion;

/// A completion's result as an `io::Result`: `-errno` becomes the OS error.
pub(crate) fn check(done: Completion) -> io::Result<u32> {
    if done.result < 0 {
        Err(io::Error::from_raw_os_error(-done.result))
    } else {
        Ok(done.result as u32)
    }
}
