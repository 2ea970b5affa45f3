//! A bounded pool of plain threads for calls that must block (getaddrinfo, file metadata).
//!
//! # Design
//!
//! One pool per process, started lazily: at most [`MAX_THREADS`] threads, which exit after
//! [`IDLE_TIMEOUT`] without work, and a queue of at most [`QUEUE_CAPACITY`] jobs. When the queue
//! is full, [`spawn_blocking`] waits (asynchronously, in arrival order) for room: back-pressure
//! instead of an unbounded backlog. A job's result is handed back through a one-shot slot and
//! the waiting task's waker, which wakes its core's ring from the pool thread (eventfd).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::executor::task::JoinError;

/// Threads the pool runs at most.
pub const MAX_THREADS: usize = 64;
/// Jobs queued at most before `spawn_blocking` waits for room.
pub const QUEUE_CAPACITY: usize = 1024;
/// How long an idle pool thread lives.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    /// Submitters waiting for queue room, in arrival order.
    waiting: VecDeque<(u64, Waker)>,
    next_ticket: u64,
}

struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn worker(&'static self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        break Some(job);
                    }
                    state.idle += 1;
                    let (s, timeout) = self
                        .work
                        .wait_timeout(state, IDLE_TIMEOUT)
                        .unwrap_or_else(|e| e.into_inner());
                    state = s;
                    state.idle -= 1;
                    if timeout.timed_out() && state.queue.is_empty() {
                        state.threads -= 1;
                        break None;
                    }
                }
            };
            let Some(job) = job else { return };
            // Room in the queue: let the first waiting submitter in.
            if let Some((_, w)) = self.lock().waiting.front() {
                w.wake_by_ref();
            }
            job();
        }
    }
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(PoolState::default()),
        work: Condvar::new(),
    })
}

struct Slot<T> {
    result: Mutex<(Option<std::thread::Result<T>>, Option<Waker>)>,
    cancelled: AtomicBool,
}

/// Runs `f` on the blocking pool and resolves to its value.
///
/// # Errors
///
/// The future resolves to `Err(JoinError::Panicked)` if `f` panicked.
///
/// # Cancel safety
///
/// Dropping the future before the job starts means it never runs; once it runs it runs to the
/// end (a blocking call cannot be interrupted) and its result is dropped.
///
/// # Examples
///
/// ```
/// let n = percore_engine::block_on(async {
///     percore_engine::runtime::blocking::spawn_blocking(|| 6 * 7).await.unwrap()
/// });
/// assert_eq!(n, 42);
/// ```
pub fn spawn_blocking<T, F>(f: F) -> SpawnBlocking<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let slot = Arc::new(Slot {
        result: Mutex::new((None, None)),
        cancelled: AtomicBool::new(false),
    });
    let job_slot = slot.clone();
    let job: Job = Box::new(move || {
        if job_slot.cancelled.load(Ordering::Acquire) {
            return;
        }
        let out = catch_unwind(AssertUnwindSafe(f));
        let waker = {
            let mut r = job_slot.result.lock().unwrap_or_else(|e| e.into_inner());
            r.0 = Some(out);
            r.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    });
    SpawnBlocking {
        slot,
        job: Some(job),
        ticket: None,
    }
}

/// The future of [`spawn_blocking`].
#[must_use = "futures do nothing unless polled"]
pub struct SpawnBlocking<T> {
    slot: Arc<Slot<T>>,
    job: Option<Job>,
    ticket: Option<u64>,
}

impl<T> fmt::Debug for SpawnBlocking<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnBlocking")
            .field("queued", &self.job.is_none())
            .finish()
    }
}

impl<T> Unpin for SpawnBlocking<T> {}

impl<T> SpawnBlocking<T> {
    /// Tries to queue the job; registers for room when the queue is full.
    fn try_queue(&mut self, cx: &mut Context<'_>) -> bool {
        let pool = pool();
        let mut state = pool.lock();
        let my_turn = match self.ticket {
            Some(t) => state.waiting.front().is_none_or(|(f, _)| *f == t),
            None => state.waiting.is_empty(),
        };
        if state.queue.len() < QUEUE_CAPACITY && my_turn {
            if let Some(t) = self.ticket.take() {
                state.waiting.retain(|(x, _)| *x != t);
            }
            state
                .queue
                .push_back(self.job.take().expect("job present until queued"));
            if state.idle == 0 && state.threads < MAX_THREADS {
                state.threads += 1;
                let spawned = std::thread::Builder::new()
                    .name("percore-blocking".into())
                    .spawn(move || pool.worker());
                if spawned.is_err() {
                    state.threads -= 1;
                }
            }
            drop(state);
            pool.work.notify_one();
            return true;
        }
        match self.ticket {
            Some(t) => {
                if let Some(e) = state.waiting.iter_mut().find(|(x, _)| *x == t) {
                    e.1 = cx.waker().clone();
                }
            }
            None => {
                let t = state.next_ticket;
                state.next_ticket += 1;
                state.waiting.push_back((t, cx.waker().clone()));
                self.ticket = Some(t);
            }
        }
        false
    }
}

impl<T> Future for SpawnBlocking<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.job.is_some() && !self.try_queue(cx) {
            return Poll::Pending;
        }
        let mut r = self.slot.result.lock().unwrap_or_else(|e| e.into_inner());
        match r.0.take() {
            Some(Ok(v)) => Poll::Ready(Ok(v)),
            Some(Err(p)) => Poll::Ready(Err(JoinError::Panicked(p))),
            None => {
                r.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for SpawnBlocking<T> {
    fn drop(&mut self) {
        self.slot.cancelled.store(true, Ordering::Release);
        if let Some(t) = self.ticket.take() {
            let mut state = pool().lock();
            state.waiting.retain(|(x, _)| *x != t);
            if let Some((_, w)) = state.waiting.front() {
                w.wake_by_ref();
            }
        }
    }
}
