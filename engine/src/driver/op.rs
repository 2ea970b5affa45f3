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
use super::{driver_alive, Driver};
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

/// Where an op future's key is valid: the driver it was submitted to. A future that outlives
/// its core, or is polled under a nested `block_on`'s core, must not read or orphan the slot
/// the same key names in another driver's slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Home {
    pub(crate) key: OpKey,
    driver: u64,
}

/// What an op future finds when it looks for its driver.
pub(crate) enum Found<'a> {
    /// Its own driver: the key is valid there.
    Home(&'a mut Driver),
    /// Its driver lives, suspended further up this thread (a nested `block_on`): the kernel
    /// may still own the op's data, and nothing can be done about it from here.
    Away,
    /// Its driver is gone, and its shutdown waited for the kernel to finish every op.
    Gone,
}

impl Home {
    /// `key`, submitted to `driver`.
    #[inline]
    pub(crate) fn new(driver: &Driver, key: OpKey) -> Home {
        Home {
            key,
            driver: driver.id(),
        }
    }

    /// Runs `f` with what the calling thread has of the op's driver. A driver busy further up
    /// this thread's stack is `Away` too: nothing can be done with it from here.
    #[inline]
    pub(crate) fn with<R>(self, f: impl FnOnce(Found<'_>) -> R) -> R {
        let mut f = Some(f);
        let here = context::with_driver(|driver| {
            if driver.id() == self.driver {
                let f = f.take().expect("called once");
                Some(f(Found::Home(driver)))
            } else {
                None
            }
        })
        .flatten();
        match here {
            Some(r) => r,
            None => {
                let f = f.take().expect("called once");
                if driver_alive(self.driver) {
                    f(Found::Away)
                } else {
                    f(Found::Gone)
                }
            }
        }
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
) -> Result<(Home, T), (io::Error, T)> {
    let entry = build(&mut data);
    // A submission polled with the no-op waker is not watched (its owner looks at it later,
    // as the load generator does with its sends): no waker is kept, so none is woken.
    let waker = waker.filter(|w| !w.will_wake(Waker::noop())).cloned();
    let home = context::with_driver(|driver| {
        // SAFETY: the entry points only at heap memory owned by `data`, which the op future
        // keeps and which moves to the slot if the future is dropped before the last completion.
        let key = unsafe { driver.submit(entry, multishot, waker) };
        Home::new(driver, key)
    });
    match home {
        Some(home) => Ok((home, data)),
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
    home: Home,
    data: Option<T>,
    _local: PhantomData<*const ()>,
}

impl<T: Orphan> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op").field("key", &self.home.key).finish()
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
        let (home, data) = unsafe { submit_on_this_core(data, build, false, None) }?;
        Ok(Op {
            home,
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
        let (home, data) = unsafe { submit_on_this_core(data, build, false, Some(waker)) }?;
        Ok(Op {
            home,
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
        let key = this.home.key;
        let done = this.home.with(|found| match found {
            Found::Home(driver) => driver.poll_op(key, cx.waker()),
            // Under a nested core: the kernel may still write into the data, so it cannot be
            // given back; the op's own core wakes the task (with the waker an earlier poll
            // left there) once it runs again.
            Found::Away => None,
            // The driver was shut down and drained: cancelled.
            Found::Gone => Some(runtime_gone()),
        });
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
            orphan_or_release(self.home, data);
        }
    }
}

/// Hands a dropped op's data to its driver. With the driver gone (its shutdown waited for the
/// kernel to finish every op) the data is dropped. If the driver is busy further up this
/// thread's stack, or suspended under a nested `block_on`, the data is leaked: the kernel may
/// still own it and nothing can cancel the op from here; leaking is the only sound choice (it
/// does not happen in practice: orphans never own op futures, and op futures stay on their
/// core).
fn orphan_or_release<T: Orphan>(home: Home, data: T) {
    home.with(|found| match found {
        Found::Home(driver) => driver.orphan(home.key, Box::new(data)),
        Found::Away => std::mem::forget(data),
        // Its driver is gone: the kernel is done with the data.
        Found::Gone => drop(data),
    });
}

/// A submitted multishot op: a stream of completions ending with the one without `F_MORE`.
///
/// # Cancel safety
///
/// Dropping it cancels the op; completions already queued, and any that arrive until the kernel
/// confirms the cancel, go to the data's [`Orphan::on_completion`] (which closes accepted fds
/// and recycles provided buffers), so nothing the kernel produced leaks.
pub(crate) struct Multishot<T: Orphan> {
    home: Home,
    data: Option<T>,
    done: bool,
    _local: PhantomData<*const ()>,
}

impl<T: Orphan> std::fmt::Debug for Multishot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multishot")
            .field("key", &self.home.key)
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
        let (home, data) = unsafe { submit_on_this_core(data, build, true, None) }?;
        Ok(Multishot {
            home,
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

    /// Gives the op up without cancelling it, for another op to take its request over in its
    /// slot (a relay adopting a receive): its home (`None` once the stream ended, the slot
    /// freed) and its data. Dropping what this returns does not touch the slot.
    pub(crate) fn into_raw(mut self) -> (Option<Home>, T) {
        let data = self
            .data
            .take()
            .expect("multishot data present until taken");
        let home = (!self.done).then_some(self.home);
        self.done = true;
        (home, data)
    }

    /// Whether its driver is the calling thread's current one (see [`Home::with`]).
    pub(crate) fn at_home(&self) -> bool {
        self.home.with(|found| matches!(found, Found::Home(_)))
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
        let key = self.home.key;
        let next = self.home.with(|found| {
            let driver = match found {
                Found::Home(driver) => driver,
                // Under a nested core: nothing here; its own core wakes the task later.
                Found::Away => return Poll::Pending,
                // The driver was shut down and drained: the stream is over.
                Found::Gone => return Poll::Ready(None),
            };
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
        });
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
        let key = self.home.key;
        self.home.with(|found| {
            if let Found::Home(driver) = found {
                driver.limit_queue(key, max);
            }
        });
    }

    /// Asks the kernel to stop the op; the stream then ends after the final completion.
    pub(crate) fn cancel(&self) {
        if self.done {
            return;
        }
        let key = self.home.key;
        self.home.with(|found| {
            if let Found::Home(driver) = found {
                let entry = io_uring::opcode::AsyncCancel::new(key.to_user_data()).build();
                // SAFETY: an async cancel entry points at no memory.
                unsafe { driver.push_detached(entry) };
            }
        });
    }
}

impl<T: Orphan> Drop for Multishot<T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(data) = self.data.take() {
            orphan_or_release(self.home, data);
        }
    }
}
