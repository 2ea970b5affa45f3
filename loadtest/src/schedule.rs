//! Each connection's request schedule.
//!
//! Open loop: connection `i` of `n` sends at `t0 + i / rate + k * n / rate` (uniform), so the
//! connections interleave into one even stream of the total rate; or with exponential gaps of
//! mean `n / rate` (Poisson: the sum of the connections' Poisson streams is a Poisson stream of
//! the total rate). Times are computed from `k`, not accumulated, so they never drift.
//! Closed loop: a request is due whenever the window has room.

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

/// One connection's schedule.
#[derive(Debug)]
pub(crate) struct Schedule {
    spacing: Spacing,
    /// No request is intended (or, closed loop, sent) at or after this.
    end: Option<Instant>,
    /// Measured requests left (a `--requests` run).
    left: Option<u64>,
    /// Requests intended before this are warm-up: they do not count against `left`.
    measure_from: Instant,
}

impl Schedule {
    /// The schedule of connection `index` of `total` (across every core).
    pub(crate) fn new(
        mode: Mode,
        window: Window,
        index: usize,
        total: usize,
        quota: Option<u64>,
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
        Schedule {
            spacing,
            end,
            left: quota,
            measure_from,
        }
    }

    /// What comes next, without taking it.
    pub(crate) fn peek(&self, now: Instant) -> Next {
        if self.left == Some(0) {
            return Next::Done;
        }
        let at = match &self.spacing {
            // Nothing is sent before the origin: connections opened during set-up wait for it,
            // so a run without warm-up sends only requests it measures.
            Spacing::Closed { start } if now < *start => *start,
            Spacing::Closed { .. } => {
                return match self.end {
                    Some(end) if now >= end => Next::Done,
                    _ => Next::Now,
                }
            }
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
        if let Some(left) = &mut self.left {
            if intended >= self.measure_from {
                *left -= 1;
            }
        }
        Some(intended)
    }

    /// Ends the schedule now (the run was stopped early).
    pub(crate) fn stop(&mut self) {
        self.left = Some(0);
    }

    /// How many requests were due at `now` but not taken (what a stopped connection leaves).
    pub(crate) fn overdue(&self, now: Instant) -> u64 {
        let count = match &self.spacing {
            Spacing::Closed { .. } => 0,
            Spacing::Uniform { first, gap_s, k } => {
                // Intended times due by `now` (at or before it), or all before the end once it
                // has passed; estimated, then settled on the exact times `peek` uses.
                let at = |n: u64| *first + Duration::from_secs_f64(*gap_s * n as f64);
                let due = |n: u64| match self.end {
                    Some(end) if now >= end => at(n) < end,
                    _ => at(n) <= now,
                };
                let mut n = match now.checked_duration_since(*first) {
                    Some(d) => (d.as_secs_f64() / gap_s) as u64,
                    None => 0,
                };
                while n > 0 && !due(n - 1) {
                    n -= 1;
                }
                while due(n) {
                    n += 1;
                }
                n.saturating_sub(*k)
            }
            Spacing::Poisson { next, .. } => u64::from(*next <= now),
        };
        match self.left {
            Some(left) => count.min(left),
            None => count,
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
            while let Some(t) = s.take_due(end) {
                all.push(t - t0);
            }
            assert_eq!(s.peek(end), Next::Done);
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
