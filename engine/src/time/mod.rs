//! Time: sleeps, intervals and timeouts on the core's timer wheel.
//!
//! # Design
//!
//! Each core owns one hierarchical timing wheel (`wheel.rs`) with microsecond ticks: insert and
//! cancel are O(1), a million pending timers cost memory, not time. A [`Sleep`] registers
//! itself on its first pending poll and cancels its entry when dropped; polled again while its
//! entry is still in the wheel it reads no clock. The core's loop fires expired timers once per
//! turn and sleeps in `io_uring_enter` no longer than the nearest deadline, so no timeout op is
//! ever submitted; a deadline less than 10 µs away is waited for without sleeping.
//!
//! A timer never fires early: deadlines round up to the next tick, and the expiry pass compares
//! them with a reading of the clock taken this turn (never later than the real time). A
//! [`Sleep`] reads no clock of its own: on its first poll it compares its deadline with the
//! turn's reading (see [`turn_instant`]), and once its entry has left the wheel it was fired.

pub(crate) mod wheel;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use std::time::Instant;

use crate::runtime::context;
use wheel::TimerKey;

/// Waits until `duration` has passed.
///
/// # Cancel safety
///
/// Cancel-safe: dropping the future removes its timer.
///
/// # Panics
///
/// Polling it off a percore core panics.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(deadline_after(Instant::now(), duration))
}

/// How far ahead a deadline too far for an `Instant` is put: never, in practice.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `from + duration`, or, past what an `Instant` can hold (`Duration::MAX` for "forever"),
/// a century from `from`: a wait that long never ends in practice, and the arithmetic never
/// panics.
pub(crate) fn deadline_after(from: Instant, duration: Duration) -> Instant {
    from.checked_add(duration)
        .unwrap_or_else(|| from + NEVER.min(duration))
}

/// Waits until `deadline`. A deadline the loop turn's clock reading (see [`turn_instant`]) has
/// passed completes at the first poll; one only the real clock has passed completes at this
/// turn's expiry pass, after the core's other ready tasks (so `sleep(Duration::ZERO)` yields
/// once, if the turn's reading was taken before it was made).
///
/// # Cancel safety
///
/// Cancel-safe: dropping the future removes its timer.
///
/// # Panics
///
/// Polling it off a percore core panics.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        key: None,
    }
}

/// The future of [`sleep`] and [`sleep_until`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    key: Option<TimerKey>,
}

impl Sleep {
    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline (earlier or later); the sleep is pending again if it moved later.
    pub fn reset(&mut self, deadline: Instant) {
        self.cancel_timer();
        self.deadline = deadline;
    }

    fn cancel_timer(&mut self) {
        if let Some(key) = self.key.take() {
            context::with_core(|core| {
                if let Ok(mut timers) = core.timers.try_borrow_mut() {
                    timers.cancel(key);
                }
            });
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Still in the wheel: not fired, so pending (a timer never fires early, and one whose
        // deadline has just passed fires on this turn's expiry pass). No clock read: a task
        // polled for another reason (its socket) while its timeout is armed pays one lookup.
        if let Some(key) = self.key {
            let live =
                context::with_core(|core| core.timers.borrow_mut().update_waker(key, cx.waker()))
                    .expect("percore::time::sleep polled off a percore core");
            if live {
                return Poll::Pending;
            }
            // Gone from the wheel: its expiry pass fired it, which it does only by a clock
            // reading at or past the deadline (rounded up to the wheel's tick). No clock read.
            self.key = None;
            debug_assert!(Instant::now() >= self.deadline, "a timer fired early");
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let new_key = context::with_core(|core| {
            // Due by the turn's clock (never later than the real time): due. Otherwise it
            // goes in the wheel, even if the real time has just passed it: this turn's expiry
            // pass fires it. One clock read per turn, not one per sleep.
            if core.turn_instant() >= deadline {
                return None;
            }
            Some(
                core.timers
                    .borrow_mut()
                    .insert(deadline, cx.waker().clone()),
            )
        })
        .expect("percore::time::sleep polled off a percore core");
        match new_key {
            None => Poll::Ready(()),
            Some(key) => {
                self.key = Some(key);
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel_timer();
    }
}

/// What an [`Interval`] does when ticks were missed (the task was busy past a tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedTicks {
    /// Fire the missed ticks back to back until caught up (keeps the average rate).
    Burst,
    /// Fire once now, then continue one period after now (keeps the spacing).
    #[default]
    Delay,
    /// Fire once now, then continue on the original schedule (skips the missed ones).
    Skip,
}

/// Ticks every `period`, the first tick at once.
///
/// # Panics
///
/// Panics if `period` is zero.
pub fn interval(period: Duration) -> Interval {
    interval_at(Instant::now(), period)
}

/// Ticks every `period`, the first tick at `start`.
///
/// # Panics
///
/// Panics if `period` is zero.
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be non-zero");
    Interval {
        next: start,
        period,
        missed: MissedTicks::default(),
        sleep: sleep_until(start),
    }
}

/// A periodic timer; see [`interval`].
#[derive(Debug)]
pub struct Interval {
    next: Instant,
    period: Duration,
    missed: MissedTicks,
    sleep: Sleep,
}

impl Interval {
    /// Chooses what happens to missed ticks.
    pub fn set_missed_ticks(&mut self, missed: MissedTicks) {
        self.missed = missed;
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Waits for the next tick and returns its scheduled time.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a tick is consumed only when this returns it.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let tick = self.next;
        let now = Instant::now();
        let after = |from: Instant, d: Duration| deadline_after(from, d);
        let next_tick = after(tick, self.period);
        self.next = match self.missed {
            MissedTicks::Burst => next_tick,
            MissedTicks::Delay if now > next_tick => after(now, self.period),
            MissedTicks::Skip if now > next_tick => {
                // Every period missed is skipped: the next tick is the first one after now.
                let behind = now.duration_since(tick).as_nanos();
                let period = self.period.as_nanos().max(1);
                let skip = (behind / period + 1) * period;
                let skip = u64::try_from(skip).map_or(Duration::MAX, Duration::from_nanos);
                after(tick, skip)
            }
            _ => next_tick,
        };
        self.sleep.reset(self.next);
        Poll::Ready(tick)
    }
}

/// The error of a [`timeout`] whose deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// Runs `future` for at most `duration`: `Err(Elapsed)` if the deadline passes first.
///
/// The inner future is polled before the deadline is checked, so a future that is ready at the
/// deadline wins: a result that exists is never thrown away.
///
/// # Cancel safety
///
/// Dropping the returned future drops the inner one: as cancel-safe as `future` is.
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    timeout_at(deadline_after(Instant::now(), duration), future)
}

/// Like [`timeout`], with an absolute deadline.
///
/// # Cancel safety
///
/// As [`timeout`].
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep_until(deadline),
    }
}

/// The future of [`timeout`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Timeout<F> {
    future: F,
    sleep: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned (never moved out of the pinned Timeout);
        // `sleep` is Unpin and not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above: `future` is never moved while pinned.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(out) = future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The time of the current loop turn: one clock read per turn, shared by every caller on this
/// core until the ring is entered again. Taken by the first caller after the turn's completions
/// were reaped, so for a completion handled in this turn it lies after the completion arrived
/// and before (or at) the moment it is handled; for stamping many events of one batch (a load
/// generator's responses) it saves a clock read per event. Off a percore core it is
/// [`Instant::now`].
pub fn turn_instant() -> Instant {
    context::with_core(|core| core.turn_instant()).unwrap_or_else(Instant::now)
}

/// The number of timers pending on this core.
pub fn pending_timers() -> usize {
    context::with_core(|core| core.timers.borrow().len()).unwrap_or(0)
}
