//! Zero-copy send (`IORING_OP_SEND_ZC`).
//!
//! The kernel sends straight from the caller's pages and posts two completions: the result
//! (with `F_MORE`) and, once the pages are no longer referenced, a notification (`F_NOTIF`).
//! The buffer is only given back after the notification. Pays off for large writes only: the
//! page pinning and the second completion cost more than a copy of a few KiB.

use std::io;

use io_uring::{cqueue, opcode, types};

use crate::buf::IoBuf;
use crate::driver::op::{Multishot, Orphan};
use crate::fd::SharedFd;

struct ZcData<B> {
    _fd: SharedFd,
    buf: B,
}

impl<B: 'static> Orphan for ZcData<B> {}

/// Sends `buf`'s initialised bytes without copying them. Returns the byte count and, after the
/// kernel released the pages, the buffer.
///
/// # Errors
///
/// The kernel's error.
///
/// # Cancel safety
///
/// Dropping the future cancels the send; the buffer is kept until the kernel's notification
/// says it no longer reads it, then freed. Some bytes may have been sent.
pub async fn send_zc<B: IoBuf>(socket: &SharedFd, buf: B) -> (io::Result<usize>, B) {
    let raw = socket.raw();
    let data = ZcData {
        _fd: socket.clone(),
        buf,
    };
    // SAFETY: the entry points at the buffer's initialised heap bytes, owned by the op data
    // until the notification completion (the last one).
    let op = unsafe {
        Multishot::submit(data, |d| {
            let (ptr, len) = super::filled(&d.buf);
            opcode::SendZc::new(types::Fd(raw), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        })
    };
    let mut op = match op {
        Ok(op) => op,
        Err((e, data)) => return (Err(e), data.buf),
    };
    crate::runtime::context::with_driver(|d| d.stats.zero_copy_sends += 1);
    let mut result = Err(io::Error::other("send_zc ended without a result"));
    let mut have_result = false;
    while let Some(done) = std::future::poll_fn(|cx| op.poll_next(cx)).await {
        if cqueue::notif(done.flags) {
            continue;
        }
        if !have_result {
            have_result = true;
            result = super::check(done).map(|n| n as usize);
        }
    }
    let buf = op.into_data().buf;
    (result, buf)
}
