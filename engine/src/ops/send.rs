//! Send on a connected socket (`IORING_OP_SEND`), as a hand-written future.
//!
//! A send sits in nearly every connection's write path, and a connection task is as large as
//! its largest state, idle or not. An `async fn` keeps its arguments beside the op it built
//! from them; this future holds one or the other (the fd reference and buffer, then the
//! submitted op owning them), so it is about a third of that size.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use io_uring::{opcode, types};

use super::socket::BufData;
use crate::buf::IoBuf;
use crate::driver::op::Op;
use crate::fd::SharedFd;

/// Sends `buf`'s initialised bytes (`MSG_NOSIGNAL` is always added: a closed peer is an
/// `EPIPE` error, never a signal). Resolves to the count sent, possibly fewer than given, and
/// the buffer. The send is submitted when the future is first polled.
///
/// # Errors
///
/// The kernel's error (`EPIPE`, `ECONNRESET`, ...).
///
/// # Cancel safety
///
/// Dropping the future cancels the send; some bytes may have been sent already. The buffer is
/// kept until the kernel is done with it.
pub fn send<B: IoBuf>(socket: &SharedFd, buf: B, flags: i32) -> Send<B> {
    Send {
        state: State::Unsubmitted {
            data: BufData {
                _fd: socket.clone(),
                buf,
            },
            flags,
        },
    }
}

/// The future of [`send`].
#[must_use = "futures do nothing unless polled"]
pub struct Send<B: IoBuf> {
    state: State<B>,
}

enum State<B: IoBuf> {
    Unsubmitted { data: BufData<B>, flags: i32 },
    Submitted(Op<BufData<B>>),
    Done,
}

impl<B: IoBuf> fmt::Debug for Send<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Unsubmitted { .. } => "unsubmitted",
            State::Submitted(_) => "submitted",
            State::Done => "done",
        };
        f.debug_struct("Send").field("state", &state).finish()
    }
}

impl<B: IoBuf> Future for Send<B> {
    type Output = (io::Result<usize>, B);

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let State::Submitted(op) = &mut this.state {
            // The op is Unpin: the kernel points at the buffer's heap bytes, never at the op.
            let Poll::Ready((done, data)) = Pin::new(op).poll(cx) else {
                return Poll::Pending;
            };
            this.state = State::Done;
            return Poll::Ready((super::check(done).map(|n| n as usize), data.buf));
        }
        let State::Unsubmitted { data, flags } = std::mem::replace(&mut this.state, State::Done)
        else {
            panic!("send polled after completion");
        };
        let raw = data._fd.raw();
        let fixed = data._fd.fixed_slot();
        // The waker goes in with the submission: nothing can complete before the core's next
        // reap, so the op is not polled again until then.
        // SAFETY: the entry points at the buffer's initialised heap bytes, owned by the op data
        // (which the op keeps, or hands to the driver, until the completion).
        let op = unsafe {
            Op::submit_waiting(
                data,
                |d| {
                    let (ptr, len) = super::filled(&d.buf);
                    // A registered file is named by its table slot (no fd lookup per send).
                    let send = match fixed {
                        Some(slot) => opcode::Send::new(types::Fixed(slot), ptr, len),
                        None => opcode::Send::new(types::Fd(raw), ptr, len),
                    };
                    send.flags(flags | libc::MSG_NOSIGNAL).build()
                },
                cx.waker(),
            )
        };
        match op {
            Ok(op) => {
                this.state = State::Submitted(op);
                Poll::Pending
            }
            Err((e, data)) => Poll::Ready((Err(e), data.buf)),
        }
    }
}
