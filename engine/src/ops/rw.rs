//! Read and write (and their vectored forms) at an offset, for files, pipes and sockets.

use std::io;

use io_uring::{opcode, types};

use crate::buf::{IoBuf, IoBufMut};
use crate::driver::op::{Op, Orphan};
use crate::fd::SharedFd;

struct RwData<B> {
    _fd: SharedFd,
    buf: B,
}

impl<B: 'static> Orphan for RwData<B> {}

/// Offset meaning "the file's current position" (and the only one pipes and sockets take).
pub const CURRENT_POSITION: u64 = u64::MAX;

/// Reads into `buf`'s spare capacity at `offset` ([`CURRENT_POSITION`] for streams).
///
/// Returns the number of bytes read (0 at end of file) and the buffer, whose initialised length
/// grew by that much.
///
/// # Errors
///
/// The kernel's error, or running off a percore core.
///
/// # Cancel safety
///
/// Dropping the future cancels the read; bytes it had already read are lost with the buffer
/// (use a stream that keeps them when that matters).
pub async fn read<B: IoBufMut>(fd: &SharedFd, buf: B, offset: u64) -> (io::Result<usize>, B) {
    let data = RwData {
        _fd: fd.clone(),
        buf,
    };
    let raw = fd.raw();
    // SAFETY: the entry points into the buffer's heap memory past its initialised part, owned
    // by the op data.
    let op = unsafe {
        Op::submit(data, |d| {
            let (ptr, len) = super::spare(&mut d.buf);
            opcode::Read::new(types::Fd(raw), ptr, len)
                .offset(offset)
                .build()
        })
    };
    let op = match op {
        Ok(op) => op,
        Err((e, data)) => return (Err(e), data.buf),
    };
    let (done, mut data) = op.await;
    // SAFETY: `done` completes the read into the buffer's spare capacity.
    let res = unsafe { super::commit_read(done, &mut data.buf) };
    (res, data.buf)
}

/// Writes `buf`'s initialised bytes at `offset` ([`CURRENT_POSITION`] for streams).
///
/// Returns the number of bytes written (possibly fewer than given) and the buffer.
///
/// # Errors
///
/// The kernel's error, or running off a percore core.
///
/// # Cancel safety
///
/// Dropping the future cancels the write; some bytes may have been written already.
pub async fn write<B: IoBuf>(fd: &SharedFd, buf: B, offset: u64) -> (io::Result<usize>, B) {
    let data = RwData {
        _fd: fd.clone(),
        buf,
    };
    let raw = fd.raw();
    // SAFETY: the entry points at the buffer's initialised heap bytes, owned by the op data.
    let op = unsafe {
        Op::submit(data, |d| {
            let (ptr, len) = super::filled(&d.buf);
            opcode::Write::new(types::Fd(raw), ptr, len)
                .offset(offset)
                .build()
        })
    };
    super::byte_count(op, |data| data.buf).await
}

struct VecData<B> {
    _fd: SharedFd,
    bufs: Vec<B>,
    iovecs: Box<[libc::iovec]>,
}

impl<B: 'static> Orphan for VecData<B> {}

/// Writes several buffers in one call (`writev`), in order.
///
/// # Errors
///
/// The kernel's error, or running off a percore core.
///
/// # Cancel safety
///
/// As [`write()`].
pub async fn writev<B: IoBuf>(
    fd: &SharedFd,
    bufs: Vec<B>,
    offset: u64,
) -> (io::Result<usize>, Vec<B>) {
    let iovecs = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.stable_ptr().cast_mut().cast(),
            iov_len: b.bytes_init(),
        })
        .collect();
    let data = VecData {
        _fd: fd.clone(),
        bufs,
        iovecs,
    };
    let raw = fd.raw();
    // SAFETY: the entry points at the boxed iovec array, whose entries point at the buffers'
    // heap bytes; all owned by the op data.
    let op = unsafe {
        Op::submit(data, |d| {
            opcode::Writev::new(types::Fd(raw), d.iovecs.as_ptr(), d.iovecs.len() as u32)
                .offset(offset)
                .build()
        })
    };
    super::byte_count(op, |data| data.bufs).await
}

/// Reads into several buffers' spare capacity in one call (`readv`), filling them in order.
///
/// # Errors
///
/// The kernel's error, or running off a percore core.
///
/// # Cancel safety
///
/// As [`read()`].
pub async fn readv<B: IoBufMut>(
    fd: &SharedFd,
    mut bufs: Vec<B>,
    offset: u64,
) -> (io::Result<usize>, Vec<B>) {
    let iovecs = bufs
        .iter_mut()
        .map(|b| {
            let init = b.bytes_init();
            libc::iovec {
                iov_base: b.stable_mut_ptr().wrapping_add(init).cast(),
                iov_len: b.bytes_total() - init,
            }
        })
        .collect();
    let data = VecData {
        _fd: fd.clone(),
        bufs,
        iovecs,
    };
    let raw = fd.raw();
    // SAFETY: as in `writev`; the iovecs cover only the buffers' spare capacity.
    let op = unsafe {
        Op::submit(data, |d| {
            opcode::Readv::new(types::Fd(raw), d.iovecs.as_ptr(), d.iovecs.len() as u32)
                .offset(offset)
                .build()
        })
    };
    let op = match op {
        Ok(op) => op,
        Err((e, data)) => return (Err(e), data.bufs),
    };
    let (done, mut data) = op.await;
    let res = super::check(done).map(|n| {
        let mut left = n as usize;
        for (buf, iov) in data.bufs.iter_mut().zip(data.iovecs.iter()) {
            let filled = left.min(iov.iov_len);
            let init = buf.bytes_init();
            // SAFETY: the kernel filled `filled` bytes of this buffer's spare capacity.
            unsafe { buf.set_init(init + filled) };
            left -= filled;
        }
        n as usize
    });
    (res, data.bufs)
}
