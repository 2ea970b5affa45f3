//! Multishot `recvmsg` into a provided buffer ring: datagrams with their senders, for servers.
//!
//! One submission, a completion per datagram, with `IORING_CQE_F_MORE` while it stays armed
//! (as the multishot receive in `multishot.rs`, and with the same rules: `next` is cancel-safe;
//! dropping the stream cancels it, and buffers of datagrams nobody took go back to the ring).
//!
//! The kernel lays each datagram out in the buffer it picked as (`struct
//! io_uring_recvmsg_out`, then the sender's address in a field of the `msg_namelen` the request
//! gave, then control data of `msg_controllen` (none here), then the payload):
//!
//! ```text
//! | namelen u32 | controllen u32 | payloadlen u32 | flags u32 | name[NAME_FIELD] | payload... |
//! ```
//!
//! `payloadlen` is the datagram's length on the wire (the request passes `MSG_TRUNC` so the
//! kernel reports it); when it did not fit the buffer the payload is cut and `flags` carries
//! `MSG_TRUNC`. The kernel ends the multishot after a zero-length datagram (its receive returned
//! 0): the stream then yields that datagram and ends; the owner re-arms. The header is parsed here with safe byte reads; the
//! payload is lent out as a [`RingBuf`] narrowed to it.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::rc::Rc;

use io_uring::{opcode, types};

use crate::buf::ring::{BufRing, Inner, RingBuf};
use crate::driver::op::{Multishot, Orphan};
use crate::driver::slab::Completion;
use crate::fd::SharedFd;

/// Size of `struct io_uring_recvmsg_out` (four `u32`s).
const OUT_HEADER: usize = 16;

/// Room for the sender's address in each buffer: a `sockaddr_in6` (IPv4 fits too).
const NAME_FIELD: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// Bytes of each ring buffer the kernel uses before the payload: the largest datagram a ring
/// of `buf_size` buffers delivers whole is `buf_size - RECVMSG_OVERHEAD`.
pub const RECVMSG_OVERHEAD: usize = OUT_HEADER + NAME_FIELD;

struct RecvMsgMultiData {
    _fd: SharedFd,
    ring: Rc<Inner>,
    /// The template the kernel reads the name and control lengths from.
    msg: Box<libc::msghdr>,
}

impl Orphan for RecvMsgMultiData {
    fn on_completion(&mut self, done: Completion) {
        // Datagrams received after the stream was dropped go nowhere; the buffer goes back.
        self.ring.give_back(done.flags);
    }
}

/// One datagram from a [`RecvMsgStream`].
#[derive(Debug)]
pub struct Datagram {
    /// The payload (cut to what fit when [`Datagram::truncated`]), in a buffer lent by the
    /// ring; dropping it gives the buffer back.
    pub payload: RingBuf,
    /// The sender (`None` for a family other than IPv4/IPv6).
    pub source: Option<SocketAddr>,
    /// The datagram was longer than the buffer and was cut (`MSG_TRUNC`).
    pub truncated: bool,
    /// The datagram's length on the wire (more than the payload when truncated).
    pub len: usize,
}

/// A stream of datagrams from one multishot `recvmsg`.
///
/// # Cancel safety
///
/// `next` is cancel-safe (a datagram is only taken when returned). Dropping the stream cancels
/// the receive; datagrams not yet taken are dropped and their buffers go back to the ring.
#[derive(Debug)]
pub struct RecvMsgStream {
    op: Multishot<RecvMsgMultiData>,
}

/// Starts a multishot `recvmsg` on the datagram socket `socket` into buffers of `ring`.
///
/// # Errors
///
/// `InvalidInput` when the ring's buffers are not larger than [`RECVMSG_OVERHEAD`]; fails off
/// a percore core.
pub fn recvmsg_multishot(socket: &SharedFd, ring: &BufRing) -> io::Result<RecvMsgStream> {
    if ring.buf_size() as usize <= RECVMSG_OVERHEAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("recvmsg ring buffers must be larger than {RECVMSG_OVERHEAD} bytes"),
        ));
    }
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    msg.msg_namelen = NAME_FIELD as libc::socklen_t;
    let raw = socket.raw();
    let bgid = ring.bgid();
    let data = RecvMsgMultiData {
        _fd: socket.clone(),
        ring: ring.inner().clone(),
        msg,
    };
    // SAFETY: the entry points at the msghdr, heap memory owned by the op data until its last
    // completion; with buffer select the kernel writes only into buffers of the registered
    // ring, which the op data keeps alive.
    let op = unsafe {
        Multishot::submit(data, |d| {
            // MSG_TRUNC: the header then carries a cut datagram's length on the wire.
            opcode::RecvMsgMulti::new(types::Fd(raw), &*d.msg, bgid)
                .flags(libc::MSG_TRUNC as u32)
                .build()
        })
    }
    .map_err(|(e, _)| e)?;
    Ok(RecvMsgStream { op })
}

impl RecvMsgStream {
    /// The next datagram; `Ok(None)` when the kernel ended the multishot (start another to
    /// continue).
    ///
    /// # Errors
    ///
    /// The kernel's error (`ENOBUFS` when the ring ran dry: recycle buffers and re-arm); the
    /// multishot has then ended. `InvalidData` for a completion the kernel's layout does not
    /// explain (its buffer goes back; the stream goes on).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn next(&mut self) -> io::Result<Option<Datagram>> {
        let Some(done) = std::future::poll_fn(|cx| self.op.poll_next(cx)).await else {
            return Ok(None);
        };
        let Some(ring) = self.op.data().map(|d| d.ring.clone()) else {
            return Ok(None);
        };
        if done.result < 0 {
            ring.give_back(done.flags);
            return Err(io::Error::from_raw_os_error(-done.result));
        }
        let Some(mut buf) = ring.take(done.flags, done.result as usize) else {
            return Err(io::Error::other(
                "recvmsg completion without a provided buffer",
            ));
        };
        let Some(layout) = Layout::parse(&buf) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "recvmsg completion shorter than its header",
            ));
        };
        let source = parse_sockaddr(&buf[OUT_HEADER..OUT_HEADER + layout.name_len]);
        buf.narrow(layout.payload_start, layout.payload_len);
        Ok(Some(Datagram {
            payload: buf,
            source,
            truncated: layout.truncated,
            len: layout.wire_len,
        }))
    }

    /// Asks the kernel to stop; `next` returns what is left, then `None`.
    pub fn cancel(&self) {
        self.op.cancel();
    }
}

/// Where the parts of one received datagram sit in its buffer.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    name_len: usize,
    payload_start: usize,
    payload_len: usize,
    wire_len: usize,
    truncated: bool,
}

impl Layout {
    /// Reads the `io_uring_recvmsg_out` header at the start of `filled` (the bytes the kernel
    /// wrote); `None` if they are too few for it and the name field.
    fn parse(filled: &[u8]) -> Option<Layout> {
        let word = |i: usize| -> Option<u32> {
            let bytes = filled.get(i * 4..i * 4 + 4)?;
            Some(u32::from_ne_bytes(bytes.try_into().ok()?))
        };
        let (namelen, controllen, payloadlen, flags) = (word(0)?, word(1)?, word(2)?, word(3)?);
        // The name and control fields are as long as the request asked (controllen: none).
        let _ = controllen;
        let payload_start = OUT_HEADER + NAME_FIELD;
        if filled.len() < payload_start {
            return None;
        }
        let payload_len = filled.len() - payload_start;
        let wire_len = payloadlen as usize;
        Some(Layout {
            name_len: (namelen as usize).min(NAME_FIELD),
            payload_start,
            payload_len,
            wire_len,
            truncated: flags & libc::MSG_TRUNC as u32 != 0 || wire_len > payload_len,
        })
    }
}

/// A `sockaddr_in` / `sockaddr_in6` from its bytes (as the kernel wrote them), read safely.
fn parse_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(ip.into(), port)))
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_ne_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip.into(),
                port,
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(namelen: u32, payloadlen: u32, flags: u32) -> Vec<u8> {
        [namelen, 0, payloadlen, flags]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect()
    }

    #[test]
    fn layout_of_whole_and_cut_datagrams() {
        let mut whole = header(16, 5, 0);
        whole.resize(RECVMSG_OVERHEAD + 5, 0);
        assert_eq!(
            Layout::parse(&whole),
            Some(Layout {
                name_len: 16,
                payload_start: RECVMSG_OVERHEAD,
                payload_len: 5,
                wire_len: 5,
                truncated: false,
            })
        );
        let mut cut = header(28, 9000, libc::MSG_TRUNC as u32);
        cut.resize(RECVMSG_OVERHEAD + 100, 0);
        let layout = Layout::parse(&cut).unwrap();
        assert!(layout.truncated);
        assert_eq!((layout.payload_len, layout.wire_len), (100, 9000));
        assert_eq!(
            Layout::parse(&header(16, 0, 0)),
            None,
            "shorter than the name"
        );
        assert_eq!(Layout::parse(&[0u8; 10]), None);
    }

    #[test]
    fn socket_addresses_from_kernel_bytes() {
        for s in ["127.0.0.1:8080", "[::1]:53", "[fe80::1%2]:9"] {
            let addr: SocketAddr = s.parse().unwrap();
            let raw = crate::sys::RawAddr::from_std(addr);
            let ptr = raw.as_ptr().cast::<u8>();
            // SAFETY: `raw.len` bytes of the storage are initialised by from_std.
            let bytes = unsafe { std::slice::from_raw_parts(ptr, raw.len as usize) };
            assert_eq!(parse_sockaddr(bytes), Some(addr), "{s}");
        }
        assert_eq!(parse_sockaddr(&[0u8; 28]), None, "AF_UNSPEC");
        assert_eq!(parse_sockaddr(&[2, 0, 1]), None, "too short");
    }
}
