//! Each connection's request schedule.
//!
//! Open loop: connection `i` of `n` sends at `t0 + i / rate + k * n / rate` (uniform), so the
//! connections interleave into one even stream of the total rate; or with exponential gaps of
//! mean `n / rate` (Poisson: the sum of the connections' Poisson streams is a Poisson stream of
//! the total rate). Times are computed from `k`, not accumulated, so they never drift.
//! Closed loop: a request is due whenever the window has room.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{Arrival, Mode};

/// What comes next on a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A request is due now (closed loop).
    Now,
    /// The next request is intended at this time.
    At(Instant),
    /// The schedule is over.
    Done,
}

#[derive(Debug)]
enum Spacing {
    Uniform {
        first: Instant,
        gap_s: f64,
        k: u64,
    },
    Poisson {
        next: Instant,
        mean_gap_s: f64,
        rng: SplitMix64,
    },
    /// Each request is due when the window has room, from `start` (the schedule's origin) on.
    Closed {
        start: Instant,
    },
}

/// When a run's requests are intended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// The schedule's origin (the warm-up starts here).
    pub(crate) t0: Instant,
    /// Measuring starts here (`t0` plus the warm-up).
    pub(crate) measure_from: Instant,
    /// No request is intended at or after this (duration runs).
    pub(crate) end: Option<Instant>,
}

/// A `--requests` run's measured requests left, shared by a shard's connections: each takes
/// from it as its requests come due, so the shard's arrivals keep their rate to the last
/// request. (With a fixed share each, Poisson connections finish at scattered times and the
/// rate thins out towards the end.)
#[derive(Debug)]
pub(crate) struct Quota {
    left: Cell<u64>,
    /// Schedules drawing on it that have not finished.
    holders: Cell<usize>,
    /// Set once nothing is left: connections waiting for their next slot stop at once, not
    /// at a slot they no longer have (the run would end up to a whole gap late).
    spent: percore_engine::sync::Event,
}

impl Quota {
    /// A quota of `n` measured requests, for the schedules made with it.
    pub(crate) fn new(n: u64) -> Rc<Quota> {
        let quota = Rc::new(Quota {
            left: Cell::new(n),
            holders: Cell::new(0),
            spent: percore_engine::sync::Event::new(),
        });
        if n == 0 {
            quota.spent.set();
        }
        quota
    }

    /// Completes once the quota is spent.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: waiting changes nothing.
    pub(crate) async fn spent(&self) {
        self.spent.wait().await;
    }
}

/// One connection's schedule.
#[derive(Debug)]
pub(crate) struct Schedule {
    spacing: Spacing,
    /// No request is intended (or, closed loop, sent) at or after this.
    end: Option<Instant>,
    /// Measured requests left (a `--requests` run), shared with the shard's other schedules.
    quota: Option<Rc<Quota>>,
    /// Stopped early (the run was interrupted): nothing more is taken.
    stopped: bool,
    /// Requests intended before this are warm-up: they do not count against the quota.
    measure_from: Instant,
}

impl Schedule {
    /// The schedule of connection `index` of `total` (across every core), with a quota of its
    /// own.
    #[cfg(test)]
    pub(crate) fn new(
        mode: Mode,
        window: Window,
        index: usize,
        total: usize,
        quota: Option<u64>,
        seed: u64,
    ) -> Schedule {
        let quota = quota.map(Quota::new);
        Schedule::sharing(mode, window, index, total, quota.as_ref(), seed)
    }

    /// The schedule of connection `index` of `total` (across every core), drawing on `quota`
    /// (a `--requests` run) with the other schedules made with it.
    pub(crate) fn sharing(
        mode: Mode,
        window: Window,
        index: usize,
        total: usize,
        quota: Option<&Rc<Quota>>,
        seed: u64,
    ) -> Schedule {
        let Window {
            t0,
            measure_from,
            end,
        } = window;
        let spacing = match mode {
            Mode::Closed => Spacing::Closed { start: t0 },
            Mode::Open { rate, arrival } => {
                let gap_s = total as f64 / rate;
                match arrival {
                    Arrival::Uniform => Spacing::Uniform {
                        first: t0 + Duration::from_secs_f64(index as f64 / rate),
                        gap_s,
                        k: 0,
                    },
                    Arrival::Poisson => {
                        let mut rng = SplitMix64(seed ^ (index as u64).wrapping_mul(0x9e37));
                        let first = t0 + Duration::from_secs_f64(rng.exponential(gap_s));
                        Spacing::Poisson {
                            next: first,
                            mean_gap_s: gap_s,
                            rng,
                        }
                    }
                }
            }
        };
        if let Some(q) = quota {
            q.holders.set(q.holders.get() + 1);
        }
        Schedule {
            spacing,
            end,
            quota: quota.cloned(),
            stopped: false,
            measure_from,
        }
    }

    /// Measured requests left to take, if there is a quota.
    fn left(&self) -> Option<u64> {
        self.quota.as_ref().map(|q| q.left.get())
    }

    /// What comes next, without taking it. Once the end has passed nothing more is taken,
    /// not even requests intended before it that are still waiting (a schedule running
    /// behind): they are [`Schedule::overdue`], counted as unsent, so a run never sends past
    /// its end.
    pub(crate) fn peek(&self, now: Instant) -> Next {
        if self.stopped || self.left() == Some(0) || self.end.is_some_and(|end| now >= end) {
            return Next::Done;
        }
        let at = match &self.spacing {
            // Nothing is sent before the origin: connections opened during set-up wait for it,
            // so a run without warm-up sends only requests it measures.
            Spacing::Closed { start } if now < *start => *start,
            // (The end was looked at above.)
            Spacing::Closed { .. } => return Next::Now,
            Spacing::Uniform { first, gap_s, k } => {
                *first + Duration::from_secs_f64(*gap_s * *k as f64)
            }
            Spacing::Poisson { next, .. } => *next,
        };
        match self.end {
            Some(end) if at >= end => Next::Done,
            _ => Next::At(at),
        }
    }

    /// Takes the next request if it is due at `now`: returns its intended send time (`now`
    /// in closed loop).
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Instant> {
        let intended = match self.peek(now) {
            Next::Now => now,
            Next::At(at) if at <= now => at,
            Next::At(_) | Next::Done => return None,
        };
        match &mut self.spacing {
            Spacing::Closed { .. } => {}
            Spacing::Uniform { k, .. } => *k += 1,
            Spacing::Poisson {
                next,
                mean_gap_s,
                rng,
            } => *next += Duration::from_secs_f64(rng.exponential(*mean_gap_s)),
        }
        if let Some(q) = &self.quota {
            if intended >= self.measure_from {
                q.left.set(q.left.get() - 1);
                if q.left.get() == 0 {
                    q.spent.set();
                }
            }
        }
        Some(intended)
    }

    /// Ends the schedule now (the run was stopped early).
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
    }

    /// How many measured requests a connection that stops for good at `now` leaves unsent
    /// (called once, as it stops): in a `--requests` run (a quota and no end), its share of
    /// the quota left, taken off the quota (the last schedule drawing on it takes all that is
    /// left). The others go on at their own spacing, so they would send the share late, and
    /// the run would last longer than planned at a lower rate than offered. Otherwise its
    /// [`Schedule::overdue`] requests. None once stopped early.
    pub(crate) fn unsent(&self, now: Instant) -> u64 {
        if self.stopped {
            return 0;
        }
        match (&self.quota, self.end) {
            (Some(q), None) => {
                let left = q.left.get();
                let share = match q.holders.get() {
                    0 | 1 => left,
                    n => left / n as u64,
                };
                q.left.set(left - share);
                if q.left.get() == 0 {
                    q.spent.set();
                }
                share
            }
            _ => self.overdue(now),
        }
    }

    /// How many measured requests were due at `now` (or, once the end has passed, before the
    /// end) but not taken: intended times from the measured start on, at most the quota left.
    /// Warm-up requests are not counted (they are not counted as sent either).
    pub(crate) fn overdue(&self, now: Instant) -> u64 {
        let limit_passed = |at: Instant| match self.end {
            Some(end) if now >= end => at >= end,
            _ => at > now,
        };
        let count = match &self.spacing {
            Spacing::Closed { .. } => 0,
            Spacing::Uniform { first, gap_s, k } => {
                let at = |n: u64| *first + Duration::from_secs_f64(*gap_s * n as f64);
                // The first `n` whose time passes `bound`: estimated from the rate, then
                // settled on the exact times `peek` uses.
                let first_past = |bound: &dyn Fn(Instant) -> bool, estimate: Instant| {
                    let mut n = match estimate.checked_duration_since(*first) {
                        Some(d) => (d.as_secs_f64() / gap_s) as u64,
                        None => 0,
                    };
                    while n > 0 && bound(at(n - 1)) {
                        n -= 1;
                    }
                    while !bound(at(n)) {
                        n += 1;
                    }
                    n
                };
                let limit = match self.end {
                    Some(end) if now >= end => end,
                    _ => now,
                };
                let due = first_past(&limit_passed, limit);
                let measured = first_past(&|at| at >= self.measure_from, self.measure_from);
                due.saturating_sub((*k).max(measured))
            }
            Spacing::Poisson {
                next,
                mean_gap_s,
                rng,
            } => {
                // The same arrivals `take_due` would produce, drawn on a copy of the
                // generator; past `POISSON_DRAWS` of them, the rest of the interval counts
                // its expected number.
                const POISSON_DRAWS: u32 = 1 << 20;
                let mut rng = rng.clone();
                let mut at = *next;
                let mut count = 0u64;
                let mut draws = 0;
                while !limit_passed(at) {
                    if draws == POISSON_DRAWS {
                        let limit = match self.end {
                            Some(end) if now >= end => end,
                            _ => now,
                        };
                        let from = at.max(self.measure_from);
                        let rest = limit.saturating_duration_since(from).as_secs_f64();
                        count += (rest / mean_gap_s).round() as u64;
                        break;
                    }
                    count += u64::from(at >= self.measure_from);
                    at += Duration::from_secs_f64(rng.exponential(*mean_gap_s));
                    draws += 1;
                }
                count
            }
        };
        match self.left() {
            Some(left) => count.min(left),
            None => count,
        }
    }
}

impl Drop for Schedule {
    fn drop(&mut self) {
        if let Some(q) = &self.quota {
            q.holders.set(q.holders.get() - 1);
        }
    }
}

/// A small, fast, seedable generator (SplitMix64); plenty for arrival times.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform sample in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// An exponential sample of the given mean.
    pub(crate) fn exponential(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intended_times(mode: Mode, conns: usize, horizon: Duration) -> Vec<Duration> {
        let t0 = Instant::now();
        let end = t0 + horizon;
        let mut all = Vec::new();
        for i in 0..conns {
            let mut s = Schedule::new(
                mode,
                Window {
                    t0,
                    measure_from: t0,
                    end: Some(end),
                },
                i,
                conns,
                None,
                7,
            );
            let last_moment = end - Duration::from_nanos(1);
            while let Some(t) = s.take_due(last_moment) {
                all.push(t - t0);
            }
            assert_eq!(s.peek(end), Next::Done, "nothing is taken at the end");
            assert_eq!(s.take_due(end + Duration::from_secs(1)), None);
        }
        all.sort();
        all
    }

    #[test]
    fn uniform_connections_interleave_into_one_even_stream() {
        let mode = Mode::Open {
            rate: 1000.0,
            arrival: Arrival::Uniform,
        };
        let times = intended_times(mode, 8, Duration::from_secs(2));
        assert_eq!(times.len(), 2000);
        for pair in times.windows(2) {
            let gap = (pair[1] - pair[0]).as_secs_f64();
            assert!((gap - 0.001).abs() < 1e-6, "gap {gap}");
        }
    }

    #[test]
    fn poisson_has_the_rate_and_the_spread_of_a_poisson_stream() {
        let mode = Mode::Open {
            rate: 5000.0,
            arrival: Arrival::Poisson,
        };
        let times = intended_times(mode, 16, Duration::from_secs(4));
        let n = times.len() as f64;
        assert!((n - 20_000.0).abs() < 600.0, "{n} arrivals");
        // Exponential gaps: the coefficient of variation is 1.
        let gaps: Vec<f64> = times
            .windows(2)
            .map(|p| (p[1] - p[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let cv = var.sqrt() / mean;
        assert!((cv - 1.0).abs() < 0.1, "cv {cv}");
    }

    #[test]
    fn a_late_connection_catches_up_one_request_at_a_time() {
        let t0 = Instant::now();
        let mode = Mode::Open {
            rate: 100.0,
            arrival: Arrival::Uniform,
        };
        let mut s = Schedule::new(
            mode,
            Window {
                t0,
                measure_from: t0,
                end: None,
            },
            0,
            1,
            Some(50),
            1,
        );
        let late = t0 + Duration::from_millis(95);
        assert_eq!(s.overdue(late), 10);
        // Each take returns the next intended time, in order; the backlog is never merged.
        for k in 0..10u64 {
            assert_eq!(s.take_due(late), Some(t0 + Duration::from_millis(10 * k)));
        }
        assert_eq!(s.take_due(late), None);
        assert_eq!(s.overdue(late), 0);

        // An end that falls exactly on an intended time excludes it.
        let window = Window {
            t0,
            measure_from: t0,
            end: Some(t0 + Duration::from_millis(100)),
        };
        let s = Schedule::new(mode, window, 0, 1, None, 1);
        assert_eq!(s.overdue(t0 + Duration::from_secs(5)), 10);
        assert_eq!(s.overdue(t0 + Duration::from_millis(100)), 10);
        assert_eq!(s.overdue(t0 + Duration::from_millis(99)), 10);
        assert_eq!(s.overdue(t0 + Duration::from_millis(90)), 10);
        assert_eq!(s.overdue(t0 + Duration::from_millis(89)), 9);
    }

    /// Poisson connections drawing on one quota keep the total rate to the last request
    /// (each with a fixed share, they finish at scattered times and the rate thins out).
    #[test]
    fn a_shared_quota_keeps_the_rate_to_the_end() {
        let t0 = Instant::now();
        let window = Window {
            t0,
            measure_from: t0,
            end: None,
        };
        let mode = Mode::Open {
            rate: 1000.0,
            arrival: Arrival::Poisson,
        };
        let quota = Quota::new(2000);
        let mut schedules: Vec<Schedule> = (0..16)
            .map(|i| Schedule::sharing(mode, window, i, 16, Some(&quota), 5))
            .collect();
        let mut times = Vec::new();
        let mut now = t0;
        while times.len() < 2000 && now < t0 + Duration::from_secs(10) {
            now += Duration::from_micros(100);
            for s in &mut schedules {
                while let Some(at) = s.take_due(now) {
                    times.push(at - t0);
                }
            }
        }
        assert_eq!(times.len(), 2000);
        assert!(schedules.iter().all(|s| s.peek(now) == Next::Done));
        times.sort();
        let last = *times.last().unwrap();
        // The last 10% of the requests came at the full rate: over ~200 ms, not spread out.
        let tail = last - times[1800];
        assert!(
            tail < Duration::from_millis(300),
            "the last 200 requests took {tail:?}"
        );
        // Nothing left: no schedule counts any unsent.
        assert_eq!(schedules[0].unsent(now), 0);
        schedules.truncate(1);
        assert_eq!(schedules[0].unsent(now), 0);
    }

    /// A connection that stops for good in a `--requests` run leaves its share of what is left
    /// unsent, taken off the quota; the last one to stop, all that is left.
    #[test]
    fn a_connection_that_gives_up_leaves_its_share_unsent() {
        let t0 = Instant::now();
        let window = Window {
            t0,
            measure_from: t0,
            end: None,
        };
        let quota = Quota::new(100);
        let mut schedules: Vec<Schedule> = (0..4)
            .map(|i| Schedule::sharing(Mode::Closed, window, i, 4, Some(&quota), 1))
            .collect();
        for _ in 0..10 {
            schedules[0].take_due(t0).unwrap();
        }
        // 90 left over 4 connections: the one giving up leaves 22 of them unsent.
        let gone = schedules.remove(0);
        assert_eq!(gone.unsent(t0), 22);
        drop(gone);
        assert_eq!(quota.left.get(), 68);
        // The others take the rest; the last to stop, early, leaves all that is left.
        for _ in 0..60 {
            schedules[1].take_due(t0).unwrap();
        }
        let gone = schedules.remove(0);
        assert_eq!(gone.unsent(t0), 2, "8 left over 3");
        drop(gone);
        let last = schedules.remove(0);
        drop(schedules);
        assert_eq!(last.unsent(t0), 6, "the last takes all that is left");
        assert!(quota.spent.is_set());
    }

    /// A connection running behind takes nothing once the end has passed: what it had not
    /// sent by then is unsent, not sent late.
    #[test]
    fn nothing_is_taken_after_the_end() {
        let t0 = Instant::now();
        let window = Window {
            t0,
            measure_from: t0,
            end: Some(t0 + Duration::from_millis(100)),
        };
        let mode = Mode::Open {
            rate: 100.0,
            arrival: Arrival::Uniform,
        };
        let mut s = Schedule::new(mode, window, 0, 1, None, 1);
        assert_eq!(s.take_due(t0 + Duration::from_millis(25)), Some(t0));
        let after = t0 + Duration::from_millis(150);
        assert_eq!(s.peek(after), Next::Done);
        assert_eq!(s.take_due(after), None);
        assert_eq!(s.unsent(after), 9, "the 9 intended before the end, unsent");
    }

    /// What a connection that gives up leaves unsent, counted exactly: every Poisson arrival
    /// due (not one at most), none of the warm-up, and a `--requests` run's whole quota.
    #[test]
    fn unsent_counts_measured_arrivals_and_the_quota_left() {
        let t0 = Instant::now();
        let warm = Window {
            t0,
            measure_from: t0 + Duration::from_millis(200),
            end: Some(t0 + Duration::from_secs(1)),
        };
        for arrival in [Arrival::Uniform, Arrival::Poisson] {
            let mode = Mode::Open {
                rate: 1000.0,
                arrival,
            };
            for now in [
                t0 + Duration::from_millis(500),
                t0 + Duration::from_secs(3),
                t0 + Duration::from_millis(100),
            ] {
                // What taking them would give: the measured arrivals due by `now`, or before
                // the end once it has passed (taken just before it: at the end nothing is).
                let mut taker = Schedule::new(mode, warm, 0, 1, None, 9);
                let mut expected = 0;
                let last_moment = warm.end.unwrap() - Duration::from_nanos(1);
                while let Some(at) = taker.take_due(now.min(last_moment)) {
                    expected += u64::from(at >= warm.measure_from);
                }
                let s = Schedule::new(mode, warm, 0, 1, None, 9);
                assert_eq!(s.unsent(now), expected, "{arrival:?} at {:?}", now - t0);
                if now >= t0 + Duration::from_millis(500) {
                    assert!(expected > 250, "{arrival:?}: {expected}");
                } else {
                    assert_eq!(expected, 0);
                }
            }
        }
        // A quota run stopped by a lost target: the quota it had left, due or not.
        let quota = Window {
            t0,
            measure_from: t0,
            end: None,
        };
        let mode = Mode::Open {
            rate: 100.0,
            arrival: Arrival::Poisson,
        };
        let mut s = Schedule::new(mode, quota, 0, 1, Some(40), 3);
        let mut taken = 0;
        while s.take_due(t0 + Duration::from_millis(100)).is_some() {
            taken += 1;
        }
        assert_eq!(s.unsent(t0 + Duration::from_millis(100)), 40 - taken);
        assert_eq!(closed_quota(t0, 7).unsent(t0), 7);
        let mut stopped = closed_quota(t0, 7);
        stopped.stop();
        assert_eq!(stopped.unsent(t0), 0);
    }

    /// One closed-loop connection from `t0`, measured from it, `quota` requests.
    fn closed_quota(t0: Instant, quota: u64) -> Schedule {
        let window = Window {
            t0,
            measure_from: t0,
            end: None,
        };
        Schedule::new(Mode::Closed, window, 0, 1, Some(quota), 1)
    }

    #[test]
    fn quotas_and_closed_loop() {
        let t0 = Instant::now();
        let mut s = closed_quota(t0, 3);
        let now = Instant::now();
        assert_eq!(s.peek(now), Next::Now);
        assert_eq!(s.take_due(now), Some(now));
        assert_eq!(s.take_due(now), Some(now));
        assert_eq!(s.take_due(now), Some(now));
        assert_eq!(s.peek(now), Next::Done);
        let ended = Schedule::new(
            Mode::Closed,
            Window {
                t0,
                measure_from: t0,
                end: Some(t0),
            },
            0,
            1,
            None,
            1,
        );
        assert_eq!(ended.peek(now), Next::Done);
    }

    #[test]
    fn a_closed_loop_sends_nothing_before_the_origin() {
        let t0 = Instant::now() + Duration::from_millis(100);
        let mut s = closed_quota(t0, 2);
        let early = t0 - Duration::from_millis(60);
        assert_eq!(s.peek(early), Next::At(t0));
        assert_eq!(s.take_due(early), None);
        assert_eq!(s.take_due(t0), Some(t0));
        let later = t0 + Duration::from_millis(1);
        assert_eq!(s.take_due(later), Some(later));
        assert_eq!(s.peek(later), Next::Done);
    }
}
