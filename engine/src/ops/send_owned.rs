//! Sends whose op owns the bytes: a received chunk (a ring buffer) sent back out, or a heap
//! buffer; the completion lets go of them by itself.
//!
//! An echo or a proxy sends what it received straight from the ring buffer. With a plain
//! [`send`](super::send) the buffer comes back with the result, so its owner must run when the
//! send completes to let go of it, or hold a ring buffer while it waits for its peer (and idle
//! connections would drain the ring). Here the op's slot owns the buffer and the driver gives
//! it back to its ring at the completion (a heap buffer: frees it); the future only reads the
//! result. Polled first unwatched ([`SendOwned::poll_unwatched`]), the send goes out
//! unwatched: its completion wakes nobody, and the owner reads the result when it next runs
//! for another reason (a request/response server: when the next request comes), one wake-up
//! per exchange instead of two, and no buffer held while it waits.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::buf::ring::RingBuf;
use crate::driver::op::{Found, Home};
use crate::driver::owned_send::SendBytes;
use crate::driver::slab::{Completion, SendTarget};
use crate::driver::OwnedSendPoll;
use crate::fd::SharedFd;
use crate::runtime::context;

/// Sends all of `chunk`'s bytes on a connected stream socket (`MSG_NOSIGNAL`: a closed peer
/// is an error, never a signal). The kernel retries short sends itself (`MSG_WAITALL`); one it
/// still ends short (on a signal to its worker thread, on memory pressure, or before Linux
/// 5.18) is continued by the driver with the rest, under the same op. The buffer goes back to
/// its ring when the whole send is done, not when the future is polled. The send is submitted
/// when the future is first polled.
///
/// Sends on one socket go out in the order they are submitted only if each is submitted after
/// the previous one completed: await (or check) the previous send before submitting the next.
///
/// # Errors
///
/// The kernel's error (`EPIPE`, `ECONNRESET`, ...), which may come after a part of the bytes
/// went; `WriteZero` if the kernel took none of what was left. Either way the rest is not
/// sent (the buffer is back in the ring), so the stream should be closed.
///
/// # Cancel safety
///
/// Dropping the future before the send completed cancels it: a prefix of the bytes may have
/// gone, so the stream should then be closed. The buffer and the socket are kept until the
/// kernel is done with the send, then the buffer goes back to its ring. Dropping it after the
/// completion only forgets the result.
pub fn send_chunk(socket: &SharedFd, chunk: RingBuf) -> SendOwned {
    SendOwned {
        state: State::Unsubmitted {
            fd: socket.clone(),
            bytes: SendBytes::from(chunk),
        },
    }
}

/// Sends all of `bytes` on a connected stream socket, as [`send_chunk`] sends a chunk: the op
/// owns the buffer and frees it at the completion, so the send can go out unwatched
/// ([`SendOwned::start_unwatched`]) and a connection that waits for its peer meanwhile holds
/// no buffer for it. The buffer is not given back: for a buffer to reuse, use
/// [`send`](super::send) with `MSG_WAITALL`.
///
/// # Errors
///
/// As [`send_chunk`]; `InvalidInput` (nothing sent) for more than `i32::MAX` bytes, more
/// than a completion can count.
///
/// # Cancel safety
///
/// As [`send_chunk`]: dropping the future before the send completed cancels it (a prefix may
/// have gone); the buffer is freed when the kernel is done with it.
pub fn send_vec(socket: &SharedFd, bytes: Vec<u8>) -> SendOwned {
    SendOwned {
        state: State::Unsubmitted {
            fd: socket.clone(),
            bytes: SendBytes::from(bytes),
        },
    }
}

/// The future of [`send_chunk`] and [`send_vec`].
#[must_use = "futures do nothing unless polled"]
pub struct SendOwned {
    state: State,
}

enum State {
    Unsubmitted {
        fd: SharedFd,
        bytes: SendBytes,
    },
    /// The slot owns the bytes; the fd is kept here (it must outlive the send, and dropping
    /// it may need the driver, so it never goes into the slot but with an orphan).
    Submitted {
        fd: SharedFd,
        /// The op's key, with the driver it is valid in.
        home: Home,
        len: usize,
    },
    Done,
}

impl fmt::Debug for SendOwned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Unsubmitted { .. } => "unsubmitted",
            State::Submitted { .. } => "submitted",
            State::Done => "done",
        };
        f.debug_struct("SendOwned").field("state", &state).finish()
    }
}

impl SendOwned {
    /// Polls without a waker: submits the send on the first call, and reads its result on
    /// later ones, but nothing is woken when it completes (and a whole send frees its op slot
    /// at once). A server that replies and then waits for its peer submits the reply this way
    /// and awaits it (or calls this again) before its next send; by then it has usually
    /// completed.
    pub fn poll_unwatched(&mut self) -> Poll<io::Result<()>> {
        self.poll_with(None)
    }

    /// Submits the send unwatched (see [`SendOwned::poll_unwatched`]) and hands it back in
    /// flight, to be awaited (or polled) before the stream's next send; `Ok(None)` if it had
    /// completed already (it was polled before).
    ///
    /// # Errors
    ///
    /// Off a percore core (nothing was submitted); the send's error if it had completed.
    #[must_use = "dropping the send in flight cancels it"]
    pub fn start_unwatched(mut self) -> io::Result<Option<SendOwned>> {
        match self.poll_unwatched() {
            Poll::Ready(done) => done.map(|()| None),
            Poll::Pending => Ok(Some(self)),
        }
    }

    /// Goes back to unwatched without reading the result: the waker an await left is
    /// forgotten, so the completion wakes nobody (and a whole send frees its op slot at
    /// once); a result already there stays for the next poll. For an await given up before
    /// the send completed (a timeout, a cancelled wait) by an owner that will look later.
    pub fn unwatch(&mut self) {
        if let State::Submitted { home, .. } = &self.state {
            let home = *home;
            home.with(|found| {
                if let Found::Home(driver) = found {
                    driver.unwatch_owned_send(home.key);
                }
            });
        }
    }

    /// One poll: `waker` is woken by the completion, or nobody (`None`, unwatched).
    #[inline]
    fn poll_with(&mut self, waker: Option<&Waker>) -> Poll<io::Result<()>> {
        if let State::Submitted { home, len, .. } = &self.state {
            let (home, len) = (*home, *len);
            let done = match home.with(|found| match found {
                Found::Home(driver) => Some(driver.poll_owned_send(home.key, waker)),
                Found::Away => None,
                // Its core ended, and its shutdown cancelled the send.
                Found::Gone => Some(OwnedSendPoll::Done(Completion {
                    result: -libc::ECANCELED,
                    flags: 0,
                })),
            }) {
                Some(OwnedSendPoll::Pending) => return Poll::Pending,
                Some(OwnedSendPoll::Done(done)) => whole(done, len),
                Some(OwnedSendPoll::Sent) => Ok(()),
                // Its core lives, suspended further up (a nested `block_on`): the send may
                // still be queued there, so the result cannot be had here, and the socket
                // stays open (the future keeps its state and fd).
                None => {
                    return Poll::Ready(Err(io::Error::other(
                        "an owned send polled off its core (under a nested block_on)",
                    )))
                }
            };
            // The fd is dropped here, outside the driver's borrow.
            self.state = State::Done;
            return Poll::Ready(done);
        }
        let State::Unsubmitted { fd, bytes } = std::mem::replace(&mut self.state, State::Done)
        else {
            panic!("an owned send polled after completion");
        };
        let len = bytes.len();
        if len > i32::MAX as usize {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a send of {len} bytes: more than a completion can count"),
            )));
        }
        let to = match fd.fixed_slot() {
            Some(slot) => SendTarget::Fixed(slot),
            None => SendTarget::Fd(fd.raw()),
        };
        let waker = waker.cloned();
        let home = context::with_driver(|driver| {
            // SAFETY: `fd` names the socket; this future keeps it until the send is done, or
            // hands it to the orphan it leaves when dropped first.
            let key = unsafe { driver.submit_owned_send(to, bytes, waker) };
            Home::new(driver, key)
        });
        match home {
            Some(home) => {
                self.state = State::Submitted { fd, home, len };
                Poll::Pending
            }
            // Off a core: the closure (and the bytes with it) was dropped, nothing submitted.
            None => Poll::Ready(Err(context::no_runtime())),
        }
    }
}

/// An owned send's result: all `len` bytes, or an error.
fn whole(done: Completion, len: usize) -> io::Result<()> {
    let sent = super::check(done)? as usize;
    if sent < len {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("the kernel took {sent} of {len} bytes, then none"),
        ));
    }
    Ok(())
}

impl Future for SendOwned {
    type Output = io::Result<()>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_with(Some(cx.waker()))
    }
}

impl Drop for SendOwned {
    #[inline]
    fn drop(&mut self) {
        if !matches!(self.state, State::Submitted { .. }) {
            // The common end: the result was taken (or nothing was submitted).
            return;
        }
        let State::Submitted { fd, home, .. } = std::mem::replace(&mut self.state, State::Done)
        else {
            return;
        };
        let back = home.with(|found| match found {
            Found::Home(driver) => driver.orphan_owned_send(home.key, fd),
            // Its core lives, suspended or busy further up this thread's stack: the send may
            // still be queued there, so the socket stays open (leaked).
            Found::Away => {
                std::mem::forget(fd);
                None
            }
            // Its core ended, and its shutdown settled the send.
            Found::Gone => Some(fd),
        });
        // Outside the driver's borrow: dropping the fd may unregister it.
        drop(back);
    }
}
