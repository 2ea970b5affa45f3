//! The aggregator (a plain thread): merges the shards' interval reports once every shard has
//! sent a given second, then writes that second to the interval log, the timeline and the live
//! progress line, and adds it to the totals.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use crate::hlog::HlogWriter;
use crate::record::{IntervalData, Report};
use crate::result::{quantiles, TimelineEntry};

/// A second not yet heard from every shard.
struct Pending {
    data: IntervalData,
    shards_in: usize,
    /// Longest partial length among the shards that ended in it.
    last_len: Option<Duration>,
    /// Busiest shard's CPU share in it.
    busiest: f64,
}

/// Merges reports into totals, timeline and sinks.
pub(crate) struct Aggregator<'a> {
    /// The index of each shard's last report, once it has sent it.
    ended_at: Vec<Option<u64>>,
    pending: BTreeMap<u64, Pending>,
    pub(crate) totals: IntervalData,
    pub(crate) timeline: Vec<TimelineEntry>,
    hlog: Option<HlogWriter<'a>>,
    progress: Option<&'a mut dyn Write>,
    /// The first sink error, reported at the end (the run goes on).
    pub(crate) sink_error: Option<String>,
}

impl<'a> Aggregator<'a> {
    pub(crate) fn new(
        shards: usize,
        hlog: Option<HlogWriter<'a>>,
        progress: Option<&'a mut dyn Write>,
    ) -> Aggregator<'a> {
        Aggregator {
            ended_at: vec![None; shards],
            pending: BTreeMap::new(),
            totals: IntervalData::new(),
            timeline: Vec::new(),
            hlog,
            progress,
            sink_error: None,
        }
    }

    pub(crate) fn add(&mut self, report: Report) {
        let len = report.last_len.unwrap_or(Duration::from_secs(1));
        let busy = if len.is_zero() {
            0.0
        } else {
            (report.data.cpu.0 + report.data.cpu.1).as_secs_f64() / len.as_secs_f64()
        };
        let entry = self.pending.entry(report.index).or_insert_with(|| Pending {
            data: IntervalData::new(),
            shards_in: 0,
            last_len: None,
            busiest: 0.0,
        });
        entry.data.merge(&report.data);
        entry.shards_in += 1;
        entry.busiest = entry.busiest.max(busy.min(1.0));
        if let Some(l) = report.last_len {
            entry.last_len = Some(entry.last_len.map_or(l, |m: Duration| m.max(l)));
            if let Some(slot) = self.ended_at.get_mut(report.shard) {
                *slot = Some(report.index);
            }
        }
        // Every shard reports its seconds in order, so the oldest pending second completes
        // first: once every shard still running at that second has sent it.
        while let Some(first) = self.pending.first_entry() {
            let index = *first.key();
            let expected = self
                .ended_at
                .iter()
                .filter(|end| end.is_none_or(|e| e >= index))
                .count();
            if first.get().shards_in < expected {
                break;
            }
            let (index, done) = first.remove_entry();
            self.complete(index, done);
        }
    }

    /// Completes the seconds some shard never reached (it ended earlier): at the end only.
    pub(crate) fn flush(&mut self) {
        while let Some((index, done)) = self.pending.pop_first() {
            self.complete(index, done);
        }
    }

    fn complete(&mut self, index: u64, done: Pending) {
        // The run's last second is as long as the latest shard ran in it; any other is whole.
        let all_ended_here = self.ended_at.iter().all(|e| e.is_some_and(|e| e <= index));
        let length = match done.last_len {
            Some(l) if all_ended_here => l,
            _ => Duration::from_secs(1),
        };
        let length = if length.is_zero() {
            Duration::from_millis(1)
        } else {
            length
        };
        let d = &done.data;
        let entry = TimelineEntry {
            t_s: index as f64,
            length_s: length.as_secs_f64(),
            sent: d.sent,
            responses: d.ok,
            errors: d.error_count,
            rate: d.ok as f64 / length.as_secs_f64(),
            latency_ns: quantiles(&d.latency),
            service_time_ns: quantiles(&d.service),
            schedule_lag_max_ns: d.lag_max_ns,
            schedule_lag_mean_ns: d.lag_sum_ns.checked_div(d.sent).unwrap_or(0),
            generator_busy: done.busiest,
        };
        if let Some(hlog) = &mut self.hlog {
            let start = Duration::from_secs(index);
            if let Err(e) = hlog.interval(start, length, &d.latency, &d.service) {
                self.sink_error
                    .get_or_insert(format!("writing the interval log: {e}"));
                self.hlog = None;
            }
        }
        if let Some(out) = &mut self.progress {
            let line = format!(
                "\r[{:>4}s] {:>9.0} req/s  sent {:>9}  ok {:>9}  err {:>6}  p99 {:>9}  lag {:>9}  cpu {:>3.0}%   ",
                index + 1,
                entry.rate,
                self.totals.sent + d.sent,
                self.totals.ok + d.ok,
                self.totals.error_count + d.error_count,
                crate::result::human_ns(entry.latency_ns.p99),
                crate::result::human_ns(entry.schedule_lag_max_ns),
                entry.generator_busy * 100.0,
            );
            let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
        }
        self.totals.merge(d);
        self.timeline.push(entry);
    }

    /// Ends the progress line and the log.
    pub(crate) fn close(&mut self) {
        if let Some(out) = &mut self.progress {
            let _ = out.write_all(b"\n");
        }
        if let Some(hlog) = &mut self.hlog {
            if let Err(e) = hlog.flush() {
                self.sink_error
                    .get_or_insert(format!("writing the interval log: {e}"));
            }
        }
    }
}
