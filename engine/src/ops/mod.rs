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
mod recvmsg_multishot;
mod relay;
mod rw;
mod send;
mod send_owned;
mod send_zc;
mod socket;

pub use fs::{close, open};
pub use multishot::{accept_multishot, recv_multishot, AcceptStream, Received, RecvStream};
pub use nop::nop;
pub use recvmsg_multishot::{recvmsg_multishot, Datagram, RecvMsgStream, RECVMSG_OVERHEAD};
pub use relay::{is_refusal, relay, Relay};
pub use rw::{read, readv, write, writev, CURRENT_POSITION};
pub use send::{send, Send};
pub use send_owned::{send_chunk, send_vec, SendOwned};
pub use send_zc::send_zc;
pub use socket::{accept, connect, connect_unix, recv, recv_from, send_to, shutdown, RecvMeta};

use std::io;

use crate::buf::{IoBuf, IoBufMut};
use crate::driver::op::{Op, Orphan};
use crate::driver::slab::Completion;

/// The spare capacity of `buf` after its initialised part, as a kernel pointer and length.
pub(crate) fn spare<B: IoBufMut>(buf: &mut B) -> (*mut u8, u32) {
    let init = buf.bytes_init();
    let len = (buf.bytes_total() - init).min(u32::MAX as usize) as u32;
    (buf.stable_mut_ptr().wrapping_add(init), len)
}

/// The initialised bytes of `buf`, as a kernel pointer and length.
pub(crate) fn filled<B: IoBuf>(buf: &B) -> (*const u8, u32) {
    (
        buf.stable_ptr(),
        buf.bytes_init().min(u32::MAX as usize) as u32,
    )
}

/// Turns a read's completion into its byte count and grows `buf`'s initialised part by it.
///
/// # Safety
///
/// `done` must be the completion of a read into [`spare`]`(buf)`, taken before `buf` changed.
pub(crate) unsafe fn commit_read<B: IoBufMut>(done: Completion, buf: &mut B) -> io::Result<usize> {
    check(done).map(|n| {
        let init = buf.bytes_init();
        // SAFETY: the kernel initialised `n` bytes of the spare capacity after `init`.
        unsafe { buf.set_init(init + n as usize) };
        n as usize
    })
}

/// A completion's result as an `io::Result`: `-errno` becomes the OS error.
/// Awaits a submitted op whose result is a byte count (a write or a send) and hands back the
/// count with what `take` takes out of the op data (its buffers), also when the submission
/// failed. Dropping the future drops the op, which cancels it (see `Op`).
pub(crate) async fn byte_count<D: Orphan + Unpin, B>(
    op: Result<Op<D>, (io::Error, D)>,
    take: impl FnOnce(D) -> B,
) -> (io::Result<usize>, B) {
    match op {
        Ok(op) => {
            let (done, data) = op.await;
            (check(done).map(|n| n as usize), take(data))
        }
        Err((e, data)) => (Err(e), take(data)),
    }
}

pub(crate) fn check(done: Completion) -> io::Result<u32> {
    if done.result < 0 {
        Err(io::Error::from_raw_os_error(-done.result))
    } else {
        Ok(done.result as u32)
    }
}
