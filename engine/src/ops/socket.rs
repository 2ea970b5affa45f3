//! Socket ops: accept, connect, send/recv, datagrams with addresses, shutdown.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use io_uring::{opcode, types};

use crate::buf::{IoBuf, IoBufMut};
use crate::driver::op::{Op, Orphan};
use crate::driver::slab::Completion;
use crate::fd::{owned_from_completion, SharedFd};
use crate::sys::{self, RawAddr};

struct AcceptData {
    _fd: SharedFd,
    addr: Box<RawAddr>,
}

impl Orphan for AcceptData {
    fn on_completion(&mut self, done: Completion) {
        // A connection accepted for a future that is gone: close it, never leak it.
        if done.result >= 0 {
            sys::close(done.result);
        }
    }
}

/// Accepts one connection (`SOCK_CLOEXEC`; the new socket is blocking-mode agnostic, the ring
/// does not care). Returns the connected socket and the peer's address (None for non-IP).
///
/// # Errors
///
/// The kernel's error (`EMFILE` when out of fds, ...).
///
/// # Cancel safety
///
/// Dropping the future cancels the accept; a connection accepted anyway is closed.
pub async fn accept(listener: &SharedFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    let data = AcceptData {
        _fd: listener.clone(),
        addr: Box::new(RawAddr::empty()),
    };
    let raw = listener.raw();
    // SAFETY: the entry points at the boxed address and its length, owned by the op data.
    let op = unsafe {
        Op::submit(data, |d| {
            opcode::Accept::new(types::Fd(raw), d.addr.as_mut_ptr(), &mut d.addr.len)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        })
    }
    .map_err(|(e, _)| e)?;
    let (done, data) = op.await;
    let fd = super::check(done)?;
    Ok((owned_from_completion(fd as i32), data.addr.to_std()))
}

struct ConnectData {
    _fd: SharedFd,
    addr: Box<RawAddr>,
}

impl Orphan for ConnectData {}

/// Connects `socket` to `addr`.
///
/// # Errors
///
/// The kernel's error (`ECONNREFUSED`, `ENETUNREACH`, ...).
///
/// # Cancel safety
///
/// Dropping the future cancels the connect; the socket is then in an unspecified state and
/// should be closed (its owner still owns it).
pub async fn connect(socket: &SharedFd, addr: SocketAddr) -> io::Result<()> {
    connect_raw(socket, RawAddr::from_std(addr)).await
}

/// Connects the Unix stream `socket` to the socket file at `path`. Where a TCP connect waits
/// for the handshake, this one waits for room in the listener's backlog (a blocking-mode
/// socket's connect sleeps in the kernel's io_uring worker, not on the core's thread; a
/// non-blocking one fails with `EAGAIN` when the backlog is full).
///
/// # Errors
///
/// `InvalidInput` for a path too long for `sockaddr_un` (or holding a NUL byte); the kernel's
/// error (`ENOENT`, `ECONNREFUSED`, `EAGAIN`, ...).
///
/// # Cancel safety
///
/// As [`connect`]: dropping the future cancels the connect (the kernel interrupts a connect
/// waiting for backlog room); the socket should then be closed.
pub async fn connect_unix(socket: &SharedFd, path: &std::path::Path) -> io::Result<()> {
    connect_raw(socket, RawAddr::from_unix_path(path)?).await
}

async fn connect_raw(socket: &SharedFd, addr: RawAddr) -> io::Result<()> {
    let data = ConnectData {
        _fd: socket.clone(),
        addr: Box::new(addr),
    };
    let raw = socket.raw();
    // SAFETY: the entry points at the boxed address, owned by the op data.
    let op = unsafe {
        Op::submit(data, |d| {
            opcode::Connect::new(types::Fd(raw), d.addr.as_ptr(), d.addr.len).build()
        })
    }
    .map_err(|(e, _)| e)?;
    let (done, _) = op.await;
    super::check(done).map(drop)
}

pub(super) struct BufData<B> {
    pub(super) _fd: SharedFd,
    pub(super) buf: B,
}

impl<B: 'static> Orphan for BufData<B> {}

/// Receives into `buf`'s spare capacity. Returns the byte count (0: the peer closed) and the
/// buffer.
///
/// # Errors
///
/// The kernel's error.
///
/// # Cancel safety
///
/// Dropping the future cancels the receive; bytes it had already received are lost with the
/// buffer. Streams that must not lose data receive through a multishot receive into a buffer
/// ring and keep what arrived (see `percore-net`).
pub async fn recv<B: IoBufMut>(socket: &SharedFd, buf: B, flags: i32) -> (io::Result<usize>, B) {
    let data = BufData {
        _fd: socket.clone(),
        buf,
    };
    let raw = socket.raw();
    // SAFETY: the entry points at the buffer's spare heap capacity, owned by the op data.
    let op = unsafe {
        Op::submit(data, |d| {
            let (ptr, len) = super::spare(&mut d.buf);
            opcode::Recv::new(types::Fd(raw), ptr, len)
                .flags(flags)
                .build()
        })
    };
    let op = match op {
        Ok(op) => op,
        Err((e, data)) => return (Err(e), data.buf),
    };
    let (done, mut data) = op.await;
    // SAFETY: `done` completes the receive into the buffer's spare capacity.
    let res = unsafe { super::commit_read(done, &mut data.buf) };
    (res, data.buf)
}

/// What [`recv_from`] learned besides the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes placed in the buffer.
    pub len: usize,
    /// The sender (None for non-IP families).
    pub from: Option<SocketAddr>,
    /// The datagram was longer than the buffer and was cut (`MSG_TRUNC`).
    pub truncated: bool,
}

struct MsgData<B> {
    _fd: SharedFd,
    buf: B,
    addr: Box<RawAddr>,
    iov: Box<libc::iovec>,
    msg: Box<libc::msghdr>,
}

impl<B: 'static> Orphan for MsgData<B> {}

impl<B> MsgData<B> {
    fn new(fd: &SharedFd, buf: B, addr: RawAddr, iov: libc::iovec) -> MsgData<B> {
        // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut data = MsgData {
            _fd: fd.clone(),
            buf,
            addr: Box::new(addr),
            iov: Box::new(iov),
            msg: Box::new(msg),
        };
        data.msg.msg_name = data.addr.as_mut_ptr().cast();
        data.msg.msg_namelen = data.addr.len;
        data.msg.msg_iov = &mut *data.iov;
        data.msg.msg_iovlen = 1;
        data
    }
}

/// Receives one datagram into `buf`'s spare capacity, with its sender; a datagram longer than
/// the space is cut and reported as [`RecvMeta::truncated`].
///
/// # Errors
///
/// The kernel's error.
///
/// # Cancel safety
///
/// Dropping the future cancels the receive; a datagram it had already received is lost.
pub async fn recv_from<B: IoBufMut>(socket: &SharedFd, mut buf: B) -> (io::Result<RecvMeta>, B) {
    let (ptr, len) = super::spare(&mut buf);
    let iov = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len as usize,
    };
    let data = MsgData::new(socket, buf, RawAddr::empty(), iov);
    let raw = socket.raw();
    // SAFETY: the msghdr, iovec, address and buffer are all heap memory owned by the op data.
    let op = unsafe {
        Op::submit(data, |d| {
            opcode::RecvMsg::new(types::Fd(raw), &mut *d.msg).build()
        })
    };
    let op = match op {
        Ok(op) => op,
        Err((e, data)) => return (Err(e), data.buf),
    };
    let (done, mut data) = op.await;
    // SAFETY: `done` completes the receive into the buffer's spare capacity.
    let res = unsafe { super::commit_read(done, &mut data.buf) }.map(|n| {
        data.addr.len = data.msg.msg_namelen;
        RecvMeta {
            len: n,
            from: data.addr.to_std(),
            truncated: data.msg.msg_flags & libc::MSG_TRUNC != 0,
        }
    });
    (res, data.buf)
}

/// Sends `buf`'s initialised bytes as one datagram to `to`.
///
/// # Errors
///
/// The kernel's error (`EMSGSIZE` for a datagram too large, ...).
///
/// # Cancel safety
///
/// Dropping the future cancels the send; the datagram may have been sent anyway.
pub async fn send_to<B: IoBuf>(
    socket: &SharedFd,
    buf: B,
    to: SocketAddr,
) -> (io::Result<usize>, B) {
    // A send with its destination in the entry (`sendto`, kernel 6.0, which also brought
    // SEND_ZC) needs one heap address and no msghdr for the kernel to copy in; older kernels
    // get a `sendmsg`.
    let sendto = crate::runtime::context::with_driver(|d| d.features().send_zc).unwrap_or(false);
    if !sendto {
        return send_to_msg(socket, buf, to).await;
    }
    let data = SendToData {
        _fd: socket.clone(),
        buf,
        addr: Box::new(RawAddr::from_std(to)),
    };
    let raw = socket.raw();
    let fixed = socket.fixed_slot();
    // SAFETY: the entry points at the buffer's initialised heap bytes and the boxed address,
    // both owned by the op data until the completion.
    let op = unsafe {
        Op::submit(data, |d| {
            let (ptr, len) = super::filled(&d.buf);
            let send = match fixed {
                Some(slot) => opcode::Send::new(types::Fixed(slot), ptr, len),
                None => opcode::Send::new(types::Fd(raw), ptr, len),
            };
            send.dest_addr(d.addr.as_ptr())
                .dest_addr_len(d.addr.len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        })
    };
    super::byte_count(op, |data| data.buf).await
}

struct SendToData<B> {
    _fd: SharedFd,
    buf: B,
    addr: Box<RawAddr>,
}

impl<B: 'static> Orphan for SendToData<B> {}

/// [`send_to`] through `sendmsg`, for kernels before 6.0.
async fn send_to_msg<B: IoBuf>(
    socket: &SharedFd,
    buf: B,
    to: SocketAddr,
) -> (io::Result<usize>, B) {
    let (ptr, len) = super::filled(&buf);
    let iov = libc::iovec {
        iov_base: ptr.cast_mut().cast(),
        iov_len: len as usize,
    };
    let data = MsgData::new(socket, buf, RawAddr::from_std(to), iov);
    let raw = socket.raw();
    // SAFETY: the msghdr, iovec, address and buffer are all heap memory owned by the op data.
    let op = unsafe {
        Op::submit(data, |d| {
            opcode::SendMsg::new(types::Fd(raw), &*d.msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        })
    };
    super::byte_count(op, |data| data.buf).await
}

struct ShutdownData {
    _fd: SharedFd,
}

impl Orphan for ShutdownData {}

/// Shuts down reading, writing or both (`libc::SHUT_RD`, `SHUT_WR`, `SHUT_RDWR`).
///
/// # Errors
///
/// The kernel's error (`ENOTCONN`, ...).
///
/// # Cancel safety
///
/// Dropping the future may or may not stop the shutdown.
pub async fn shutdown(socket: &SharedFd, how: i32) -> io::Result<()> {
    let raw = socket.raw();
    // SAFETY: a shutdown entry points at no memory.
    let op = unsafe {
        Op::submit(
            ShutdownData {
                _fd: socket.clone(),
            },
            |_| opcode::Shutdown::new(types::Fd(raw), how).build(),
        )
    }
    .map_err(|(e, _)| e)?;
    let (done, _) = op.await;
    super::check(done).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `sendmsg` path is what kernels before 6.0 get; this one takes the `sendto` path, so
    /// the fallback is exercised here directly.
    #[test]
    fn the_sendmsg_fallback_delivers_a_datagram() {
        crate::block_on(async {
            let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let from = tx.local_addr().unwrap();
            let fd = SharedFd::new(OwnedFd::from(tx));
            let to = rx.local_addr().unwrap();
            let (sent, buf) = send_to_msg(&fd, b"fallback".to_vec(), to).await;
            assert_eq!(sent.unwrap(), 8);
            assert_eq!(buf, b"fallback");
            let mut got = [0u8; 16];
            let (n, sender) = rx.recv_from(&mut got).unwrap();
            assert_eq!((&got[..n], sender), (&b"fallback"[..], from));
        });
    }
}
