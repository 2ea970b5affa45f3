//! One core: its ring, its executor, its timers, and the loop that turns them.
//!
//! A loop turn: poll the main future if woken; run up to `budget` queued tasks; fire expired
//! timers; one `io_uring_enter` that submits everything queued and, if nothing is runnable,
//! waits for a completion with the nearest timer as timeout (after an optional busy-poll
//! window); reap completions, waking their futures; drain cross-thread wakes.
//!
//! Time costs per turn, not per event: the wheel is looked at and the clock read once per turn
//! (the reading a task took with `time::turn_instant` serves; a turn about to sleep reads it
//! again then, since the work after a task's reading may have been long), and a timer due within
//! `SPIN_BELOW` (10 µs) is not slept for: the core goes round the loop, which costs less than
//! the kernel's sleep and wake-up and keeps the timer on time.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::opcode;

use super::context::Entered;
use crate::cross::remote::{self, Remote};
use crate::driver::op::Orphan;
use crate::driver::slab::Completion;
use crate::driver::{ring::RingConfig, Driver, TOKEN_WAKE};
use crate::executor::waker::{self, TaskRef, MAIN_TASK};
use crate::executor::{Executor, Ran};
use crate::sys;
use crate::time::wheel::Wheel;

/// Kernel worker threads a core's ring may use for ops that block and cannot be polled (see
/// [`Builder::io_workers`](crate::Builder::io_workers)).
pub(crate) const DEFAULT_MAX_IO_WORKERS: u32 = 64;

/// How a core runs.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub(crate) ring_entries: u32,
    pub(crate) cq_entries: Option<u32>,
    /// Buffers in the core's shared receive ring (`BufRing::core_default`).
    pub(crate) receive_buffers: u16,
    /// The cap on the ring's kernel worker threads for blocking ops (0: the kernel's limit).
    pub(crate) max_io_workers: u32,
    /// Task polls per loop turn before the ring is checked again.
    pub(crate) budget: usize,
    /// Spin on the ring this long before sleeping in the kernel (latency mode).
    pub(crate) busy_poll: Option<Duration>,
    /// How long shutdown waits for the kernel to finish cancelled ops.
    pub(crate) shutdown_limit: Duration,
    /// This core's position in its runtime, and the CPU it is pinned to.
    pub(crate) index: usize,
    pub(crate) cpu: Option<usize>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            ring_entries: 1024,
            cq_entries: None,
            receive_buffers: crate::buf::ring::CORE_RING_ENTRIES,
            max_io_workers: DEFAULT_MAX_IO_WORKERS,
            budget: 128,
            busy_poll: None,
            shutdown_limit: Duration::from_secs(10),
            index: 0,
            cpu: None,
        }
    }
}

pub(crate) struct Core {
    pub(crate) driver: RefCell<Driver>,
    pub(crate) executor: Executor,
    pub(crate) timers: RefCell<Wheel>,
    pub(crate) remote: Arc<Remote>,
    pub(crate) config: CoreConfig,
    /// Set by the eventfd read's completion: cross-thread wakes are waiting.
    eventfd_fired: Rc<Cell<bool>>,
    woken: RefCell<Vec<Waker>>,
    remote_woken: RefCell<Vec<TaskRef>>,
    loop_turns: Cell<u64>,
    /// This turn's clock reading, taken by the first [`Core::turn_instant`] after the ring was
    /// entered (`None` until then).
    turn_clock: Cell<Option<Instant>>,
    pub(crate) shutdown: crate::runtime::shutdown::CoreShutdown,
    /// Every core's mailbox, when this core belongs to a multi-core `Runtime::run`.
    pub(crate) mailboxes: RefCell<Option<Arc<crate::cross::spawn_on::Mailboxes>>>,
    /// Where this core publishes its stats, and the progress count last published.
    pub(crate) publisher: RefCell<Option<(Arc<crate::stats::StatsBoard>, u64)>>,
    /// The core's shared receive ring, made on first use (see `BufRing::core_default`).
    pub(crate) default_ring: RefCell<Option<crate::buf::ring::BufRing>>,
    /// Which ring this is, unique in the process: a registered-file slot is only meaningful
    /// on the ring that gave it out (see `SharedFd::register`).
    pub(crate) ring_id: u64,
    /// Registered-file slots whose file went while the driver was borrowed: emptied at the
    /// next reap.
    pub(crate) unregister_later: RefCell<Vec<u32>>,
}

/// The source of [`Core::ring_id`]s.
static NEXT_RING_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("index", &self.config.index)
            .field("cpu", &self.config.cpu)
            .finish()
    }
}

/// An orphan for fire-and-forget `MSG_RING`s: if the message fails, fall back to the eventfd.
struct MsgRingFallback(Arc<Remote>);

/// The standing read of the core's eventfd; owns its buffer.
struct EventfdRead {
    buf: Box<[u8; 8]>,
    fired: Rc<Cell<bool>>,
}

impl Orphan for EventfdRead {
    fn on_completion(&mut self, done: Completion) {
        // -ECANCELED at shutdown is not a wake-up.
        if done.result != -libc::ECANCELED {
            self.fired.set(true);
        }
    }
}

impl Orphan for MsgRingFallback {
    fn on_completion(&mut self, done: Completion) {
        if done.result < 0 {
            self.0.signal_eventfd();
        }
    }
}

impl Core {
    pub(crate) fn new(
        config: CoreConfig,
        shutdown: crate::runtime::shutdown::CoreShutdown,
    ) -> io::Result<Core> {
        let driver = Driver::new(RingConfig {
            entries: config.ring_entries,
            cq_entries: config.cq_entries,
            max_io_workers: config.max_io_workers,
        })?;
        let eventfd = sys::eventfd()?;
        let ring_fd = if driver.features().msg_ring {
            Some(sys::dup(driver.ring_fd())?)
        } else {
            None
        };
        let remote = Arc::new(Remote::new(eventfd, ring_fd));
        let id = remote::register(remote.clone())?;
        let core = Core {
            driver: RefCell::new(driver),
            executor: Executor::new(id),
            timers: RefCell::new(Wheel::new(Instant::now())),
            remote,
            config,
            eventfd_fired: Rc::new(Cell::new(false)),
            woken: RefCell::new(Vec::new()),
            remote_woken: RefCell::new(Vec::new()),
            loop_turns: Cell::new(0),
            turn_clock: Cell::new(None),
            shutdown,
            mailboxes: RefCell::new(None),
            default_ring: RefCell::new(None),
            publisher: RefCell::new(None),
            ring_id: NEXT_RING_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            unregister_later: RefCell::new(Vec::new()),
        };
        core.arm_eventfd();
        Ok(core)
    }

    pub(crate) fn loop_turns(&self) -> u64 {
        self.loop_turns.get()
    }

    fn arm_eventfd(&self) {
        let mut read = EventfdRead {
            buf: Box::new([0; 8]),
            fired: self.eventfd_fired.clone(),
        };
        let entry = opcode::Read::new(
            io_uring::types::Fd(self.remote.eventfd()),
            read.buf.as_mut_ptr(),
            8,
        )
        .build();
        // SAFETY: the entry points at the 8-byte heap buffer the orphan owns; the driver keeps
        // the orphan until the read's completion.
        unsafe {
            self.driver
                .borrow_mut()
                .submit_orphan(entry, Box::new(read))
        };
    }

    /// Queues a `MSG_RING` to `target_ring` from this core's ring.
    pub(crate) fn send_msg_ring(
        &self,
        target_ring: std::os::fd::RawFd,
        remote: &Arc<Remote>,
    ) -> bool {
        let Ok(mut driver) = self.driver.try_borrow_mut() else {
            return false;
        };
        if !driver.features().msg_ring {
            return false;
        }
        let entry =
            opcode::MsgRingData::new(io_uring::types::Fd(target_ring), 0, TOKEN_WAKE, None).build();
        // SAFETY: a MSG_RING data message points at no memory of ours.
        unsafe { driver.submit_orphan(entry, Box::new(MsgRingFallback(remote.clone()))) };
        true
    }

    /// Runs `future` to completion on this thread, driving the ring, the tasks and the timers.
    /// Tasks still alive when it returns are cancelled, and the ring is shut down.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _entered = Entered::new(self);
        let _finish = FinishOnDrop(self);
        let mut future = pin!(future);
        let main_waker = waker::task_waker(
            self.executor.id(),
            TaskRef {
                index: MAIN_TASK,
                generation: 0,
            },
        );
        let mut cx = Context::from_waker(&main_waker);
        loop {
            self.loop_turns.set(self.loop_turns.get() + 1);
            // Up to `budget` polls, the main future's among them, before the ring's turn.
            let mut polled = 0;
            while polled < self.config.budget {
                match self.executor.run_one() {
                    Ran::Main => {
                        self.executor.count_poll();
                        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                            return out;
                        }
                    }
                    Ran::Task => {}
                    Ran::Idle => break,
                }
                polled += 1;
            }
            let next_timer = self.fire_timers();
            if self.loop_turns.get() % 1024 == 0 {
                self.publish_stats();
                // Besides each drain of the cross-thread wakes (see `runtime::shutdown`).
                self.shutdown.check();
            }
            if let Err(e) = self.turn_ring(next_timer) {
                panic!("io_uring_enter failed on core {}: {e}", self.config.index);
            }
        }
    }

    /// Fires the timers that are due. Returns the next pending deadline with the clock reading
    /// it was compared with, for this turn's wait: one look at the wheel and one clock read per
    /// turn. `None`: no timer pending.
    fn fire_timers(&self) -> Option<NextTimer> {
        let mut timers = self.timers.borrow_mut();
        // No timer pending (the usual turn of a busy server): no deadline to compute, no clock.
        if timers.is_empty() {
            return None;
        }
        let deadline = timers.next_deadline()?;
        // A reading a task took this turn is never later than the real time, so a timer due by
        // it is due: firing by it is never early, at most late by the turn's work.
        let (now, fresh) = match self.turn_clock.get() {
            Some(taken) => (taken, false),
            None => (Instant::now(), true),
        };
        if deadline > now {
            return Some(NextTimer {
                deadline,
                now,
                fresh,
            });
        }
        let mut woken = self.woken.borrow_mut();
        timers.expire(now, &mut woken);
        let next = timers.next_deadline().map(|deadline| NextTimer {
            deadline,
            now,
            fresh,
        });
        drop(timers);
        for w in woken.drain(..) {
            w.wake();
        }
        next
    }

    /// Submits what is queued and reaps; sleeps in the kernel first if nothing is runnable,
    /// until a completion or `next_timer` (from this turn's [`Core::fire_timers`]; no task ran
    /// since, so no timer was added).
    fn turn_ring(&self, mut next_timer: Option<NextTimer>) -> io::Result<()> {
        let runnable = self.executor.has_runnable();
        if !runnable {
            if let Some(window) = self.config.busy_poll {
                if self.busy_poll(window)? {
                    return Ok(());
                }
                // The window took time: the wait is measured from now.
                if let Some(t) = &mut next_timer {
                    t.now = Instant::now();
                    t.fresh = true;
                }
            }
        }
        // With no timer pending the wait has no timeout: every wake-up source (completions,
        // MSG_RING, the eventfd) posts to the ring, and a timeout would cost a kernel hrtimer
        // per sleep.
        let timeout = if runnable {
            None
        } else {
            // Before a wait that may sleep; with task work flagged it will not (the wait runs
            // the work and returns with its completions), and publishing costs more than the
            // rest of a busy turn's bookkeeping.
            if !self.driver.borrow_mut().work_flagged() {
                self.publish_stats();
            }
            next_timer.map(|t| {
                let wait = t.deadline.saturating_duration_since(t.now);
                if wait < NEAR_TIMER || !t.fresh {
                    // Near: the turn's own work may have used it up, and a zero wait skips
                    // the kernel's timer and the wake-up behind it. Or compared with a reading
                    // a task took, which may be as old as the turn's work since (a task that
                    // blocked a while): the wait would overshoot by as much.
                    t.deadline.saturating_duration_since(Instant::now())
                } else {
                    wait
                }
            })
        };
        // A timer due sooner than a sleep in the kernel takes to come back from is waited for
        // by going round the loop (no syscall while nothing is flagged): less CPU than the
        // sleep and wake-up, and on time.
        let wait = !runnable && timeout.is_none_or(|t| t >= SPIN_BELOW);
        self.driver.borrow_mut().enter(wait, timeout)?;
        self.turn_clock.set(None);
        self.reap();
        Ok(())
    }

    /// The time of this loop turn: read once, by the first caller after the ring returned
    /// this turn's completions, and shared by every later caller until the next enter.
    #[inline]
    pub(crate) fn turn_instant(&self) -> Instant {
        match self.turn_clock.get() {
            Some(now) => now,
            None => {
                let now = Instant::now();
                self.turn_clock.set(Some(now));
                now
            }
        }
    }

    /// Publishes this core's stats to its runtime's board, if it has one and they changed.
    /// Called before a wait that may sleep and every 1024 loop turns, so readers see current
    /// figures without a timer waking the core. A wait with task work flagged is taken not to
    /// sleep; if that work posts nothing, the core sleeps with the figures of a turn before.
    pub(crate) fn publish_stats(&self) {
        let mut publisher = self.publisher.borrow_mut();
        let Some((board, last)) = publisher.as_mut() else {
            return;
        };
        let progress =
            self.executor.stats().tasks_polled + self.driver.borrow().stats.ops_completed;
        if progress == *last {
            return;
        }
        *last = progress;
        board.publish(self.stats());
    }

    /// This core's counters, now.
    pub(crate) fn stats(&self) -> crate::stats::CoreStats {
        let exec = self.executor.stats();
        let driver = self.driver.borrow();
        let d = driver.stats;
        crate::stats::CoreStats {
            core: self.config.index,
            tasks_polled: exec.tasks_polled,
            tasks_spawned: exec.tasks_spawned,
            tasks_alive: exec.tasks_alive,
            run_queue_depth: exec.run_queue_depth,
            ops_submitted: d.ops_submitted,
            ops_completed: d.ops_completed,
            ops_in_flight: driver.in_flight() as u64,
            ring_enters: d.ring_enters,
            cq_overflows: d.cq_overflows,
            sq_full: d.sq_full,
            cancels: d.cancels,
            timers_pending: self.timers.borrow().len() as u64,
            loop_turns: self.loop_turns(),
            buf_rings: d.buf_rings,
            fixed_files: d.fixed_files,
            zero_copy_sends: d.zero_copy_sends,
        }
    }

    /// Spins on the ring for up to `window`; true if something became runnable.
    fn busy_poll(&self, window: Duration) -> io::Result<bool> {
        let start = Instant::now();
        let next_timer = self.timers.borrow().next_deadline();
        loop {
            self.driver.borrow_mut().enter(false, None)?;
            // A new look at the ring: the turn's clock reading is stale (completions reaped
            // now are later than it, and timers are compared with it).
            self.turn_clock.set(None);
            if self.reap() > 0 && self.executor.has_runnable() {
                return Ok(true);
            }
            let now = Instant::now();
            if next_timer.is_some_and(|t| t <= now) {
                return Ok(true);
            }
            if now.duration_since(start) >= window {
                return Ok(false);
            }
            std::hint::spin_loop();
        }
    }

    /// Reaps completions and cross-thread wakes; returns the number of completions.
    fn reap(&self) -> usize {
        let mut woken = self.woken.borrow_mut();
        let (reaped, dead) = {
            let mut driver = self.driver.borrow_mut();
            let reaped = driver.reap(&mut woken);
            // Looked at first: a busy turn usually frees nothing, and moving the empty list
            // out and dropping it is work on every turn.
            let dead = (!driver.graveyard_is_empty()).then(|| driver.take_graveyard());
            (reaped, dead)
        };
        drop(dead);
        if !self.unregister_later.borrow().is_empty() {
            let slots = std::mem::take(&mut *self.unregister_later.borrow_mut());
            let mut driver = self.driver.borrow_mut();
            for slot in slots {
                driver.unregister_file(slot);
            }
        }
        // Likewise: a turn of relays' completions wakes no task.
        if !woken.is_empty() {
            for w in woken.drain(..) {
                w.wake();
            }
        }
        drop(woken);
        if self.eventfd_fired.replace(false) {
            self.arm_eventfd();
            self.drain_remote();
        } else if reaped.woken {
            self.drain_remote();
        }
        reaped.completions
    }

    /// Schedules the tasks woken from other threads, and looks at the shutdown flag: a request
    /// wakes every core this way.
    fn drain_remote(&self) {
        let mut tasks = self.remote_woken.borrow_mut();
        self.remote.drain(&mut tasks);
        for task in tasks.drain(..) {
            self.executor.schedule(task);
        }
        drop(tasks);
        self.shutdown.check();
    }

    /// Cancels every task, then shuts the ring down; leaks it if the kernel would not finish.
    fn finish(&self) {
        // Cancelling runs user code (futures' destructors, detached tasks' result sinks). A
        // panic there must not skip what follows: the ring would stay alive (the core's remote
        // handle holds a dup of its fd) while the ops' memory was freed. So the panic waits
        // until the ring is shut down, and cancelling goes on (each round gets further: a
        // cancelled task is not cancelled again).
        let mut panicked = None;
        while let Err(payload) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.executor.cancel_all()))
        {
            panicked.get_or_insert(payload);
        }
        self.shut_down_ring();
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }

    /// After every task is cancelled: gives up the core's handles, cancels every op and waits
    /// for the kernel; leaks the ops' memory if it would not finish.
    fn shut_down_ring(&self) {
        // Ops that still use the ring hold their own handles; this is the core's.
        drop(self.default_ring.borrow_mut().take());
        remote::unregister(self.executor.id());
        self.shutdown.shared().remove_core(&self.remote);
        let mut driver = self.driver.borrow_mut();
        let finished = driver.shutdown(self.config.shutdown_limit);
        let slots = driver.drain_slots();
        let dead = driver.take_graveyard();
        drop(driver);
        // Dropped outside the driver's borrow: their destructors may use it.
        drop(dead);
        if !finished {
            // The kernel may still write into op memory: never free it.
            std::mem::forget(slots);
            eprintln!(
                "percore: core {}: the kernel did not finish every op within {:?}; leaking them",
                self.config.index, self.config.shutdown_limit
            );
            return;
        }
        drop(slots);
    }
}

/// A timer due sooner than this after the turn's clock reading gets a fresh reading before
/// the core decides how long to sleep.
const NEAR_TIMER: Duration = Duration::from_micros(100);

/// A timer due within this is not slept for: sleeping in the kernel and being woken costs
/// ~25 µs of CPU and latency on this kind of VM (more than the wait), so the core goes round its
/// loop until the timer is due instead.
const SPIN_BELOW: Duration = Duration::from_micros(10);

/// The nearest pending timer, as [`Core::fire_timers`] saw it.
#[derive(Debug, Clone, Copy)]
struct NextTimer {
    deadline: Instant,
    /// The clock reading the deadline was compared with.
    now: Instant,
    /// Whether `now` was read for the comparison (rather than taken by a task earlier in the
    /// turn, as old as the turn's work since).
    fresh: bool,
}

struct FinishOnDrop<'a>(&'a Core);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}
