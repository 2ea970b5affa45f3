//! Recording on a shard: per-second interval histograms and counters, rolled over by the time
//! of each event and shipped to the aggregator, so nothing grows with the run's length.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::protocol::ProtocolError;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// No response within the request timeout.
    Timeout,
    /// The server closed the connection with the request outstanding.
    Closed,
    /// The connection failed (reset, broken pipe, ...).
    Io(io::ErrorKind),
    /// The response broke the protocol.
    Protocol(ProtocolError),
    /// The server answered with an error status (HTTP 4xx/5xx).
    Status(u16),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Closed => f.write_str("closed by server"),
            ErrorKind::Io(kind) => write!(f, "io: {kind}"),
            ErrorKind::Protocol(p) => write!(f, "protocol: {p}"),
            ErrorKind::Status(s) => write!(f, "status {s}"),
        }
    }
}

/// An I/O error's kind, or, for the errnos `io::ErrorKind` leaves unnamed that a load
/// generator meets, the errno's name (running out of file descriptors says `EMFILE`, not
/// "uncategorized error").
pub(crate) fn describe(error: &io::Error) -> String {
    let name = match error.raw_os_error() {
        Some(libc::EMFILE) => "EMFILE: too many open files in this process",
        Some(libc::ENFILE) => "ENFILE: too many open files in the system",
        Some(libc::ENOBUFS) => "ENOBUFS: no buffer space available",
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL: no local address or port free",
        _ => return error.kind().to_string(),
    };
    name.to_string()
}

/// How [`describe`] names the failures that are the generator's own shortage.
pub(crate) const LOCAL_SHORTAGES: [&str; 4] = ["EMFILE", "ENFILE", "ENOBUFS", "EADDRNOTAVAIL"];

/// Counts by a displayable key.
pub(crate) type Counts = BTreeMap<String, u64>;

fn bump(counts: &mut Counts, key: impl fmt::Display, by: u64) {
    *counts.entry(key.to_string()).or_insert(0) += by;
}

/// What one shard recorded in one interval.
#[derive(Debug)]
pub(crate) struct IntervalData {
    /// Completion minus intended send time, ns, of successful responses.
    pub(crate) latency: Histogram<u64>,
    /// Completion minus actual send time, ns.
    pub(crate) service: Histogram<u64>,
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    pub(crate) errors: Counts,
    pub(crate) error_count: u64,
    pub(crate) connect_errors: Counts,
    /// Connections that broke with no measured request outstanding to charge it to (bytes
    /// the server sent unasked, for one), by kind.
    pub(crate) connection_errors: Counts,
    pub(crate) reconnects: u64,
    /// Requests that were due but never sent (the target unreachable at the end).
    pub(crate) unsent: u64,
    pub(crate) lag_max_ns: u64,
    pub(crate) lag_sum_ns: u64,
    /// When the last measured request was settled (answered or failed), ns since the
    /// measured start: the end of the run's measured work.
    pub(crate) last_outcome_ns: u64,
    /// CPU time the shard's thread used while this interval was current: (user, system).
    pub(crate) cpu: (Duration, Duration),
}

/// Histograms start out tracking 1 ns .. 1 s at 3 significant digits and grow, when a
/// longer latency comes, to hold it ([`record`]): no value is ever clamped.
pub(crate) fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_max(1_000_000_000, 3).expect("valid histogram bounds");
    h.auto(true);
    h
}

/// Records `value` in `h`, growing `h` to hold it. (`saturating_record` would clamp a
/// value past the histogram's current top to that top, ignoring `auto`: a 3 s stall would
/// read as ~1.07 s.)
fn record(h: &mut Histogram<u64>, value: u64) {
    if h.record(value).is_err() {
        // Only a value past what any histogram can hold (about 2^62 ns, 146 years) gets here.
        h.saturating_record(value);
    }
}

impl IntervalData {
    pub(crate) fn new() -> IntervalData {
        IntervalData {
            latency: new_histogram(),
            service: new_histogram(),
            sent: 0,
            ok: 0,
            errors: Counts::new(),
            error_count: 0,
            connect_errors: Counts::new(),
            connection_errors: Counts::new(),
            reconnects: 0,
            unsent: 0,
            lag_max_ns: 0,
            lag_sum_ns: 0,
            last_outcome_ns: 0,
            cpu: (Duration::ZERO, Duration::ZERO),
        }
    }

    /// Adds `other` into `self`.
    pub(crate) fn merge(&mut self, other: &IntervalData) {
        // Both auto-resize, so adding cannot fail on range.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        self.sent += other.sent;
        self.ok += other.ok;
        for (k, v) in &other.errors {
            bump(&mut self.errors, k, *v);
        }
        self.error_count += other.error_count;
        for (k, v) in &other.connect_errors {
            bump(&mut self.connect_errors, k, *v);
        }
        for (k, v) in &other.connection_errors {
            bump(&mut self.connection_errors, k, *v);
        }
        self.reconnects += other.reconnects;
        self.unsent += other.unsent;
        self.lag_max_ns = self.lag_max_ns.max(other.lag_max_ns);
        self.last_outcome_ns = self.last_outcome_ns.max(other.last_outcome_ns);
        self.lag_sum_ns = self.lag_sum_ns.saturating_add(other.lag_sum_ns);
        self.cpu.0 += other.cpu.0;
        self.cpu.1 += other.cpu.1;
    }
}

/// One shard's interval, sent to the aggregator.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) shard: usize,
    /// Seconds since the measured start.
    pub(crate) index: u64,
    /// The interval's length when the shard ended inside it (its last report).
    pub(crate) last_len: Option<Duration>,
    pub(crate) data: IntervalData,
}

/// A shard's recorder: shared by its connection tasks (core-local, behind a `RefCell`).
#[derive(Debug)]
pub(crate) struct Recorder {
    shard: usize,
    /// The measured start; events before it (warm-up) are not recorded.
    start: Instant,
    current: u64,
    /// When the current interval ends (`start` + `current` + 1 s): events before it need no
    /// arithmetic to find their interval.
    current_end: Instant,
    data: IntervalData,
    /// This interval's answers whose latency and service time are one span (sent when
    /// intended: every closed-loop request): recorded once here, added to both of `data`'s
    /// histograms when the interval is shipped.
    equal: Histogram<u64>,
    /// The thread's CPU time when the current interval began (set by the first measured
    /// event, so warm-up CPU is not counted).
    cpu_mark: Option<(Duration, Duration)>,
    /// The last instant [`Recorder::stamp`] converted, and what it gave.
    last_stamp: (Instant, u64),
    out: Sender<Report>,
}

fn thread_cpu() -> (Duration, Duration) {
    percore_engine::thread_cpu_time()
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Recorder {
    pub(crate) fn new(shard: usize, start: Instant, out: Sender<Report>) -> Recorder {
        Recorder {
            shard,
            start,
            current: 0,
            current_end: start + Duration::from_secs(1),
            data: IntervalData::new(),
            equal: new_histogram(),
            cpu_mark: None,
            last_stamp: (start, 0),
            out,
        }
    }

    /// Whether an event at `at` is measured (not warm-up).
    pub(crate) fn measures(&self, at: Instant) -> bool {
        at >= self.start
    }

    /// Makes the interval holding `now` current, shipping the ones before it.
    pub(crate) fn roll(&mut self, now: Instant) {
        if now < self.current_end && self.cpu_mark.is_some() {
            return;
        }
        let Some(since) = now.checked_duration_since(self.start) else {
            return;
        };
        if self.cpu_mark.is_none() {
            self.cpu_mark = Some(thread_cpu());
        }
        let index = since.as_secs();
        while self.current < index {
            self.ship(None);
        }
    }

    fn ship(&mut self, last_len: Option<Duration>) {
        let cpu = thread_cpu();
        let mut data = std::mem::replace(&mut self.data, IntervalData::new());
        if !self.equal.is_empty() {
            // Both auto-resize, so adding cannot fail on range.
            let _ = data.latency.add(&self.equal);
            let _ = data.service.add(&self.equal);
            self.equal.reset();
        }
        if let Some(mark) = self.cpu_mark {
            data.cpu = (cpu.0.saturating_sub(mark.0), cpu.1.saturating_sub(mark.1));
        }
        self.cpu_mark = Some(cpu);
        // The aggregator only goes away when the run is being torn down.
        let _ = self.out.send(Report {
            shard: self.shard,
            index: self.current,
            last_len,
            data,
        });
        self.current += 1;
        self.current_end = self.start + Duration::from_secs(self.current + 1);
    }

    /// A measured request went out at `sent`, intended at `intended`. Returns its send time as
    /// a [`Recorder::stamp`] and how late it went out, both in nanoseconds, for
    /// [`Recorder::answered`].
    pub(crate) fn sent(&mut self, intended: Instant, sent: Instant) -> (u64, u64) {
        self.roll(sent);
        // Closed loop (and an open loop on time): no lag, and no clock arithmetic for it.
        let lag = if sent > intended {
            ns(sent.duration_since(intended))
        } else {
            0
        };
        self.data.sent += 1;
        self.data.lag_max_ns = self.data.lag_max_ns.max(lag);
        self.data.lag_sum_ns = self.data.lag_sum_ns.saturating_add(lag);
        (self.stamp(sent), lag)
    }

    /// A measured request sent at `sent_ns` ([`Recorder::sent`]'s stamp), `lag_ns` after its
    /// intended time, was answered at `done`.
    pub(crate) fn answered(&mut self, sent_ns: u64, lag_ns: u64, done: Instant) {
        self.roll(done);
        self.data.ok += 1;
        let at = self.stamp(done);
        self.data.last_outcome_ns = self.data.last_outcome_ns.max(at);
        let service = at.saturating_sub(sent_ns).max(1);
        if lag_ns == 0 {
            // Sent when intended (closed loop, or an open loop on time): one span, one record.
            record(&mut self.equal, service);
        } else {
            record(&mut self.data.latency, service.saturating_add(lag_ns));
            record(&mut self.data.service, service);
        }
    }

    /// `at` in nanoseconds since the measured start (0 before it). The last conversion is
    /// kept: the events of one loop turn share the turn's clock reading, so a turn pays for
    /// one `Instant` subtraction (a few dozen instructions) rather than one per event.
    fn stamp(&mut self, at: Instant) -> u64 {
        if at != self.last_stamp.0 {
            self.last_stamp = (at, ns(at.saturating_duration_since(self.start)));
        }
        self.last_stamp.1
    }

    /// A measured request failed at `now`.
    pub(crate) fn failed(&mut self, kind: ErrorKind, now: Instant) {
        self.roll(now);
        let at = self.stamp(now);
        self.data.last_outcome_ns = self.data.last_outcome_ns.max(at);
        self.data.error_count += 1;
        bump(&mut self.data.errors, kind, 1);
    }

    /// A connection attempt failed. Failures before the measured start (while the run was
    /// being set up or warming up) count in the first interval: a target that could not be
    /// reached then is worth saying.
    pub(crate) fn connect_failed(&mut self, error: &io::Error, now: Instant) {
        self.roll(now);
        bump(&mut self.data.connect_errors, describe(error), 1);
    }

    /// A connection broke with no measured request outstanding.
    pub(crate) fn connection_failed(&mut self, kind: ErrorKind, now: Instant) {
        if !self.measures(now) {
            return;
        }
        self.roll(now);
        bump(&mut self.data.connection_errors, kind, 1);
    }

    /// A connection was opened again after it had been lost.
    pub(crate) fn reconnected(&mut self, now: Instant) {
        if !self.measures(now) {
            return;
        }
        self.roll(now);
        self.data.reconnects += 1;
    }

    /// A connection stopped with `count` requests due but unsent.
    pub(crate) fn unsent(&mut self, count: u64) {
        self.data.unsent += count;
    }

    /// The shard is done: ships the last, partial interval.
    pub(crate) fn finish(&mut self, now: Instant) {
        self.roll(now);
        let in_interval = now
            .checked_duration_since(self.start)
            .map(|d| d - Duration::from_secs(d.as_secs()))
            .unwrap_or_default();
        self.ship(Some(in_interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Latencies past the histograms' starting top (1 s) are recorded as they are, in both
    /// the corrected and the service-time view, and through the closed loop's shared one.
    #[test]
    fn long_latencies_are_not_clamped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let start = Instant::now();
        let mut recorder = Recorder::new(0, start, tx);
        let secs = |s: f64| Duration::from_secs_f64(s);
        // Sent 3 s late and answered 2.5 s after it went out (an open loop against a stall).
        let (stamp, lag) = recorder.sent(start, start + secs(3.0));
        recorder.answered(stamp, lag, start + secs(5.5));
        // Sent on time, answered 7 s later (a closed loop: one span).
        let (stamp, lag) = recorder.sent(start + secs(5.6), start + secs(5.6));
        recorder.answered(stamp, lag, start + secs(12.6));
        recorder.roll(start + secs(13.5));
        let mut latency = new_histogram();
        let mut service = new_histogram();
        while let Ok(report) = rx.try_recv() {
            latency.add(&report.data.latency).unwrap();
            service.add(&report.data.service).unwrap();
        }
        let near = |h: &Histogram<u64>, q: f64, want: f64| {
            let got = h.value_at_quantile(q) as f64 / 1e9;
            assert!((got - want).abs() < 0.01, "{q}: {got} s, want {want} s");
        };
        near(&latency, 0.0, 5.5);
        near(&latency, 1.0, 7.0);
        near(&service, 0.0, 2.5);
        near(&service, 1.0, 7.0);
    }
}
