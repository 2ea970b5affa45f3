//! Multishot accept and multishot receive into a provided buffer ring.
//!
//! One submission, many completions: the kernel keeps the request armed and posts a completion
//! per accepted connection / received chunk, with `IORING_CQE_F_MORE` while it stays armed. A
//! completion without it ends the stream (an error, end of file, the buffer ring ran dry, or the
//! kernel chose to stop); the owner re-arms when it wants more.

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::{opcode, types};

use crate::buf::ring::{BufRing, Inner, RingBuf};
use crate::driver::op::{Multishot, Orphan};
use crate::driver::slab::Completion;
use crate::fd::{owned_from_completion, SharedFd};
use crate::sys;

struct AcceptMultiData {
    _fd: SharedFd,
}

impl Orphan for AcceptMultiData {
    fn on_completion(&mut self, done: Completion) {
        // Connections accepted after the stream was dropped: close them.
        if done.result >= 0 {
            sys::close(done.result);
        }
    }
}

/// A stream of accepted connections from one multishot accept.
///
/// # Cancel safety
///
/// Dropping the stream cancels the accept; connections the kernel accepted that were not yet
/// taken are closed (their clients see a reset), none leaks.
#[derive(Debug)]
pub struct AcceptStream {
    op: Multishot<AcceptMultiData>,
}

/// Starts a multishot accept on `listener`.
///
/// # Errors
///
/// Fails off a percore core.
pub fn accept_multishot(listener: &SharedFd) -> io::Result<AcceptStream> {
    let raw = listener.raw();
    let data = AcceptMultiData {
        _fd: listener.clone(),
    };
    // SAFETY: a multishot accept without an address buffer points at no memory.
    let op = unsafe {
        Multishot::submit(data, |_| {
            opcode::AcceptMulti::new(types::Fd(raw))
                .flags(libc::SOCK_CLOEXEC)
                .build()
        })
    }
    .map_err(|(e, _)| e)?;
    Ok(AcceptStream { op })
}

impl AcceptStream {
    /// The next accepted connection; `None` when the kernel ended the multishot (call
    /// [`accept_multishot`] again to continue).
    ///
    /// # Errors
    ///
    /// The kernel's error for this accept (`EMFILE`, ...); the stream then ends.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a connection is only taken from the stream when this returns it.
    pub async fn next(&mut self) -> Option<io::Result<OwnedFd>> {
        let done = std::future::poll_fn(|cx| self.op.poll_next(cx)).await?;
        Some(super::check(done).map(|fd| owned_from_completion(fd as i32)))
    }

    /// Asks the kernel to stop; `next` returns the remaining connections, then `None`.
    pub fn cancel(&self) {
        self.op.cancel();
    }
}

pub(super) struct RecvMultiData {
    pub(super) fd: SharedFd,
    pub(super) ring: Rc<Inner>,
}

impl Orphan for RecvMultiData {
    fn on_completion(&mut self, done: Completion) {
        // Bytes received after the stream was dropped go nowhere; the buffer goes back.
        self.ring.give_back(done.flags);
    }
}

/// What one completion of a multishot receive delivered.
#[derive(Debug)]
pub enum Received {
    /// Bytes, in a buffer lent by the ring.
    Data(RingBuf),
    /// The peer closed its side (end of stream).
    Eof,
    /// The kernel stopped the multishot without an error or EOF; re-arm to continue.
    Ended,
}

/// A stream of received chunks from one multishot receive.
///
/// # Cancel safety
///
/// `next` is cancel-safe (a chunk is only taken when returned). Dropping the stream cancels
/// the receive; chunks not yet taken are given back to the ring, and their bytes are lost:
/// owners that must not lose bytes keep taking chunks until the stream ends.
#[derive(Debug)]
pub struct RecvStream {
    pub(super) op: Multishot<RecvMultiData>,
}

/// Starts a multishot receive on `socket` into buffers of `ring`.
///
/// # Errors
///
/// Fails off a percore core.
pub fn recv_multishot(socket: &SharedFd, ring: &BufRing) -> io::Result<RecvStream> {
    let raw = socket.raw();
    let bgid = ring.bgid();
    let data = RecvMultiData {
        fd: socket.clone(),
        ring: ring.inner().clone(),
    };
    // SAFETY: a multishot receive with buffer select points at no memory of ours: the kernel
    // picks buffers from the registered ring, which the op data keeps alive.
    let op = unsafe {
        Multishot::submit(data, |_| {
            opcode::RecvMulti::new(types::Fd(raw), bgid).build()
        })
    }
    .map_err(|(e, _)| e)?;
    Ok(RecvStream { op })
}

impl RecvStream {
    /// The next chunk, end of stream, or the end of the multishot.
    ///
    /// # Errors
    ///
    /// The kernel's error (`ENOBUFS` when the ring ran dry: recycle buffers and re-arm;
    /// `ECONNRESET`, ...); the multishot has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn next(&mut self) -> io::Result<Received> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next chunk: [`RecvStream::next`] for hand-written futures (no future of
    /// its own to store or poll through).
    ///
    /// # Errors
    ///
    /// As [`RecvStream::next`].
    #[inline]
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Received>> {
        let Poll::Ready(done) = self.op.poll_next(cx) else {
            return Poll::Pending;
        };
        let (Some(done), Some(data)) = (done, self.op.data()) else {
            return Poll::Ready(Ok(Received::Ended));
        };
        let ring = &data.ring;
        Poll::Ready(if done.result == -libc::ECANCELED {
            // A cancel ([`RecvStream::cancel`], or the queue limit) ends the stream the way
            // the kernel ending it does: the owner re-arms when it wants more.
            ring.give_back(done.flags);
            Ok(Received::Ended)
        } else if done.result < 0 {
            ring.give_back(done.flags);
            Err(io::Error::from_raw_os_error(-done.result))
        } else if done.result == 0 {
            ring.give_back(done.flags);
            Ok(Received::Eof)
        } else {
            match ring.take(done.flags, done.result as usize) {
                Some(buf) => Ok(Received::Data(buf)),
                None => Err(io::Error::other(
                    "receive completion without a provided buffer",
                )),
            }
        })
    }

    /// Asks the kernel to stop; `next` returns what is left, then `Ended`.
    pub fn cancel(&self) {
        self.op.cancel();
    }

    /// Stops the receive by itself once more than `max` chunks wait untaken: an owner that
    /// stops taking chunks (a handler busy elsewhere) then holds at most about `max` ring
    /// buffers (plus those that arrive before the cancel lands), not the whole ring, and the
    /// rest of the bytes wait in the socket, where the protocol's flow control holds the
    /// sender. `next` returns the queued chunks in order, then `Ended`; re-arm to go on. No
    /// byte is lost or reordered: the kernel takes no more bytes from the socket once the
    /// receive is cancelled, and the new receive starts where it stopped.
    pub fn limit_queue(&self, max: usize) {
        self.op
            .limit_queue(u32::try_from(max).unwrap_or(u32::MAX - 1));
    }
}
