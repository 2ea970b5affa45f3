//! Op futures: the user-facing half of an in-flight op.
//!
//! An [`Op`] owns the op's data (buffers, addresses, the fd reference) until it completes; a
//! [`Multishot`] does the same for an op that posts many completions. Dropping either before
//! the kernel is done hands the data to the driver as an [`Orphan`] (see the driver's design
//! note), so the kernel never writes into freed memory and nothing it produced is lost without
//! a trace: the orphan closes accepted fds and recycles provided buffers.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use io_uring::squeue;

use super::slab::{Completion, Lifecycle, OpKey};
use crate::runtime::context;

/// What an op's data does with completions that arrive after its future was dropped.
pub(crate) trait Orphan: 'static {
    /// Called for every completion that arrives after the future was dropped (and for one that
    /// arrived before the drop but was never taken). The default does nothing: dropping the
    /// data with the slot is enough for plain buffers.
    fn on_completion(&mut self, done: Completion) {
        let _ = done;
    }
}

/// Builds the entry from `data` and submits it on this core's ring.
///
/// # Safety
///
/// As for [`Op::submit`].
#[inline]
unsafe fn submit_on_this_core<T>(
    mut data: T,
    build: impl FnOnce(&mut T) -> squeue::Entry,
    multishot: bool,
    waker: Option<&Waker>,
) -> Result<(OpKey, T), (io::Error, T)> {
    let entry = build(&mut data);
    // A submission polled with the no-op waker is not watched (its owner looks at it later,
    // as the load generator does with its sends): no waker is kept, so none is woken.
    let waker = waker.filter(|w| !w.will_wake(Waker::noop())).cloned();
    let key = context::with_driver(|driver| {
        // SAFETY: the entry points only at heap memory owned by `data`, which the op future
        // keeps and which moves to the slot if the future is dropped before the last completion.
        unsafe { driver.submit(entry, multishot, waker) }
    });
    match key {
        Some(key) => Ok((key, data)),
        None => Err((context::no_runtime(), data)),
    }
}

/// The error an op future reports when the runtime went away under it.
fn runtime_gone() -> Completion {
    Completion {
        result: -libc::ECANCELED,
        flags: 0,
    }
}

/// A submitted single-shot op. Resolves to its completion and gives its data back.
///
/// # Cancel safety
///
/// Dropping it before completion submits an async cancel; the data (buffers) is kept by the
/// driver until the kernel's final completion and then dropped, after [`Orphan::on_completion`]
/// has seen the result (an accepted fd is closed, for example). Data a completed read put in a
/// buffer is lost with the buffer, which is why owners of streams keep read results before
/// yielding them.
pub(crate) struct Op<T: Orphan> {
    key: OpKey,
    data: Option<T>,
    _local: PhantomData<*const ()>,
}

impl<T: Orphan> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op").field("key", &self.key).finish()
    }
}

impl<T: Orphan> Op<T> {
    /// Builds the entry from the data and submits it on this core's ring.
    ///
    /// # Errors
    ///
    /// Fails when the calling thread runs no percore core, giving the data back.
    ///
    /// # Safety
    ///
    /// The entry `build` returns may only point at memory owned by `data` that does not move
    /// when `data` moves (heap memory: a `Vec`'s or `Box`'s contents), and that memory must stay
    /// valid as long as `data` lives.
    pub(crate) unsafe fn submit(
        data: T,
        build: impl FnOnce(&mut T) -> squeue::Entry,
    ) -> Result<Op<T>, (io::Error, T)> {
        // SAFETY: forwarded from the caller.
        let (key, data) = unsafe { submit_on_this_core(data, build, false, None) }?;
        Ok(Op {
            key,
            data: Some(data),
            _local: PhantomData,
        })
    }

    /// As [`Op::submit`], from inside a poll: `waker` is registered with the submission, so
    /// the op is already waiting and need not be polled until it is woken (one slot lookup
    /// less per op than submitting and then polling).
    ///
    /// # Errors
    ///
    /// As [`Op::submit`].
    ///
    /// # Safety
    ///
    /// As for [`Op::submit`].
    #[inline]
    pub(crate) unsafe fn submit_waiting(
        data: T,
        build: impl FnOnce(&mut T) -> squeue::Entry,
        waker: &Waker,
    ) -> Result<Op<T>, (io::Error, T)> {
        // SAFETY: forwarded from the caller.
        let (key, data) = unsafe { submit_on_this_core(data, build, false, Some(waker)) }?;
        Ok(Op {
            key,
            data: Some(data),
            _local: PhantomData,
        })
    }
}

impl<T: Orphan + Unpin> Future for Op<T> {
    type Output = (Completion, T);

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let key = this.key;
        // A slot that is gone (the driver was shut down and drained) reads as cancelled.
        let done = context::with_driver(|driver| driver.poll_op(key, cx.waker()))
            .unwrap_or_else(|| Some(runtime_gone()));
        match done {
            Some(done) => {
                let data = this.data.take().expect("Op polled after completion");
                Poll::Ready((done, data))
            }
            None => Poll::Pending,
        }
    }
}

impl<T: Orphan> Drop for Op<T> {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            orphan_or_release(self.key, data);
        }
    }
}

/// Hands a dropped op's data to the driver. Off a core (the runtime is gone, and its shutdown
/// waited for the kernel to finish every op) the data is dropped. If the driver is busy further
/// up this thread's stack, the data is leaked: the kernel may still own it and nothing can
/// cancel the op from here; leaking is the only sound choice (it does not happen in practice:
/// orphans never own op futures).
fn orphan_or_release<T: Orphan>(key: OpKey, data: T) {
    let mut data = Some(data);
    let on_core = context::with_core(|core| {
        if let Ok(mut driver) = core.driver.try_borrow_mut() {
            if let Some(data) = data.take() {
                driver.orphan(key, Box::new(data));
            }
        }
    })
    .is_some();
    if on_core {
        if let Some(data) = data.take() {
            std::mem::forget(data);
        }
    }
}

/// A submitted multishot op: a stream of completions ending with the one without `F_MORE`.
///
/// # Cancel safety
///
/// Dropping it cancels the op; completions already queued, and any that arrive until the kernel
/// confirms the cancel, go to the data's [`Orphan::on_completion`] (which closes accepted fds
/// and recycles provided buffers), so nothing the kernel produced leaks.
pub(crate) struct Multishot<T: Orphan> {
    key: OpKey,
    data: Option<T>,
    done: bool,
    _local: PhantomData<*const ()>,
}

impl<T: Orphan> std::fmt::Debug for Multishot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multishot")
            .field("key", &self.key)
            .field("done", &self.done)
            .finish()
    }
}

impl<T: Orphan> Multishot<T> {
    /// Submits a multishot op.
    ///
    /// # Errors
    ///
    /// Fails when the calling thread runs no percore core, giving the data back.
    ///
    /// # Safety
    ///
    /// As for [`Op::submit`].
    pub(crate) unsafe fn submit(
        data: T,
        build: impl FnOnce(&mut T) -> squeue::Entry,
    ) -> Result<Multishot<T>, (io::Error, T)> {
        // SAFETY: forwarded from the caller.
        let (key, data) = unsafe { submit_on_this_core(data, build, true, None) }?;
        Ok(Multishot {
            key,
            data: Some(data),
            done: false,
            _local: PhantomData,
        })
    }

    /// Takes the data back after the stream ended (the kernel is done with it).
    ///
    /// # Panics
    ///
    /// Panics if the stream has not ended.
    pub(crate) fn into_data(mut self) -> T {
        assert!(self.done, "Multishot::into_data before the stream ended");
        self.data
            .take()
            .expect("multishot data present until taken")
    }

    /// The op's data (for example the buffer ring completions refer to).
    pub(crate) fn data(&self) -> Option<&T> {
        self.data.as_ref()
    }

    /// The next completion; `None` once the kernel posted the last one (without `F_MORE`).
    #[inline]
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        if self.done {
            return Poll::Ready(None);
        }
        let key = self.key;
        let next = context::with_driver(|driver| {
            let Some(Lifecycle::Multishot {
                queue,
                waker,
                finished,
                ..
            }) = driver.slot(key)
            else {
                return Poll::Ready(None);
            };
            if let Some(done) = queue.pop_front() {
                return Poll::Ready(Some(done));
            }
            if *finished {
                driver.free(key);
                return Poll::Ready(None);
            }
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .unwrap_or(Poll::Ready(None));
        if let Poll::Ready(None) = next {
            self.done = true;
        }
        next
    }

    /// Cancels the op when more than `max` completions wait untaken (at once if they do
    /// already); what is queued stays, and the stream ends after the cancel's completion.
    pub(crate) fn limit_queue(&self, max: u32) {
        if self.done {
            return;
        }
        let key = self.key;
        context::with_driver(|driver| driver.limit_queue(key, max));
    }

    /// Asks the kernel to stop the op; the stream then ends after the final completion.
    pub(crate) fn cancel(&self) {
        if self.done {
            return;
        }
        let key = self.key;
        context::with_driver(|driver| {
            let entry = io_uring::opcode::AsyncCancel::new(key.to_user_data()).build();
            // SAFETY: an async cancel entry points at no memory.
            unsafe { driver.push_detached(entry) };
        });
    }
}

impl<T: Orphan> Drop for Multishot<T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(data) = self.data.take() {
            orphan_or_release(self.key, data);
        }
    }
}
