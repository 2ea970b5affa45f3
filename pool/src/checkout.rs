//! The checkout: from a call to [`Pool::get`](crate::Pool::get) to a [`PooledConn`].
//!
//! Three steps, all under one deadline (the checkout timeout, started only when the checkout
//! first has to wait, so the fast path reads no clock and arms no timer):
//!
//! 1. get a slot: at once if one is free and nobody is queued, else queue (FIFO);
//! 2. with the slot, take the newest idle connection that has not expired (and is not kept
//!    for a waiter already handed a slot) and, if a health check is configured, check it (a
//!    failure discards it and takes the next);
//! 3. with no idle connection to take, call the factory.
//!
//! The health check and the factory also race the pool's close: [`Pool::close`] stops them at
//! once, and the checkout fails with [`PoolError::Closed`] (a factory error that comes after
//! the close is reported as `Closed` too).
//!
//! Whatever the checkout holds when it fails, times out or is dropped (its slot, a connection
//! being checked or created) is released or closed by the owners' `Drop`s, so a cancelled
//! checkout never leaks a slot; a connection closed inside a health check that did not
//! finish is counted as discarded by [`Checking`]. See `inner.rs` for the slot invariant and
//! the FIFO hand-off.
//!
//! [`Pool::close`]: crate::Pool::close

use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use percore_engine::sync::Event;
use percore_engine::time::timeout_at;
use percore_engine::{first, First};

use crate::conn::{PooledConn, Tracked};
use crate::error::PoolError;
use crate::inner::Inner;
use crate::stats::CounterCell;

/// Checks out a connection of `pool`, waiting at most `limit` in all.
pub(crate) async fn checkout<C>(
    pool: &Rc<Inner<C>>,
    limit: Option<Duration>,
) -> Result<PooledConn<C>, PoolError> {
    let inner = &**pool;
    let mut deadline = Deadline::new(limit, &inner.counters);
    let slot = match inner.try_slot()? {
        Some(slot) => slot,
        None => deadline.bound(inner.wait_slot()).await??,
    };
    while let Some(tracked) = inner.take_idle() {
        let Some(check) = &inner.check else {
            return Ok(slot.into_conn(pool, tracked));
        };
        let Tracked { conn, dies_at } = tracked;
        // The check owns the connection: if it fails, times out, or the pool closes, or this
        // checkout is dropped, the connection is closed with it; `checking` counts that.
        let checking = Checking::new(inner);
        match deadline
            .bound(until_closed(&inner.closed, check(conn)))
            .await??
        {
            Ok(conn) => {
                checking.defuse();
                return Ok(slot.into_conn(pool, Tracked { conn, dies_at }));
            }
            Err(unfit) => {
                checking.defuse();
                inner.check_failed(&unfit);
            }
        }
    }
    inner.ensure_open()?;
    let made = deadline
        .bound(until_closed(&inner.closed, (inner.factory)()))
        .await??;
    let conn = made.map_err(|e| {
        inner.counters.bump(|c| c.create_failures += 1);
        // `until_closed` saw no close before the factory finished; one in the same turn (the
        // factory's own code closed the pool) is still the reason to report.
        match inner.is_closed() {
            true => PoolError::Closed,
            false => PoolError::Create(e),
        }
    })?;
    inner.counters.bump(|c| c.created += 1);
    let tracked = Tracked::new(conn, inner.config.max_lifetime);
    Ok(slot.into_conn(pool, tracked))
}

/// Runs `step` until the pool is closed. `closed` is polled first, so once the pool is
/// closed no step's result is taken: a connection made or checked meanwhile is dropped with
/// the step.
async fn until_closed<F: Future>(closed: &Event, step: F) -> Result<F::Output, PoolError> {
    match first(pin!(closed.wait()), pin!(step)).await {
        First::A((), _step) => Err(PoolError::Closed),
        First::B(output, _closed) => Ok(output),
    }
}

/// Counts the connection handed to a health check as discarded unless defused: the check
/// owns it, and whatever ends the check before it gives the connection back (a timeout, the
/// pool's close, the checkout dropped) closes it.
struct Checking<'a, C> {
    inner: &'a Inner<C>,
}

impl<'a, C> Checking<'a, C> {
    fn new(inner: &'a Inner<C>) -> Self {
        Checking { inner }
    }

    /// The check finished: the connection came back, or its failure is counted elsewhere.
    fn defuse(self) {
        std::mem::forget(self);
    }
}

impl<C> Drop for Checking<'_, C> {
    fn drop(&mut self) {
        self.inner.counters.bump(|c| c.discarded += 1);
    }
}

/// A checkout's deadline, started when the checkout first has to wait.
struct Deadline<'a> {
    limit: Option<Duration>,
    at: Option<Instant>,
    counters: &'a CounterCell,
}

impl<'a> Deadline<'a> {
    fn new(limit: Option<Duration>, counters: &'a CounterCell) -> Self {
        Deadline {
            limit,
            at: None,
            counters,
        }
    }

    /// Runs `step` until the deadline; a timeout is counted.
    async fn bound<F: Future>(&mut self, step: F) -> Result<F::Output, PoolError> {
        let Some(limit) = self.limit else {
            return Ok(step.await);
        };
        let at = match self.at {
            Some(at) => at,
            // A deadline past what an `Instant` can hold (`Duration::MAX`) is none.
            None => match Instant::now().checked_add(limit) {
                Some(at) => *self.at.insert(at),
                None => {
                    self.limit = None;
                    return Ok(step.await);
                }
            },
        };
        timeout_at(at, step).await.map_err(|_elapsed| {
            self.counters.bump(|c| c.timeouts += 1);
            PoolError::Timeout(limit)
        })
    }
}
