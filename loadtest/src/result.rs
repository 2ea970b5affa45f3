//! What a run measured, the verdict on who was the bottleneck, and the two ways it is told:
//! a human summary ([`RunResult::summary`]) and JSON ([`RunResult::to_json`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency quantiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest.
    pub max: u64,
}

/// The quantiles of `h` (all zero when it is empty).
pub fn quantiles(h: &Histogram<u64>) -> Quantiles {
    if h.is_empty() {
        return Quantiles::default();
    }
    Quantiles {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        p9999: h.value_at_quantile(0.9999),
        max: h.max(),
    }
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// Seconds since the measured start.
    pub t_s: f64,
    /// The interval's length (1 s, but the last may be shorter).
    pub length_s: f64,
    /// Requests sent in it.
    pub sent: u64,
    /// Successful responses completed in it.
    pub responses: u64,
    /// Requests failed in it.
    pub errors: u64,
    /// Responses per second.
    pub rate: f64,
    /// Latency from the intended send time.
    pub latency_ns: Quantiles,
    /// Latency from the actual send time.
    pub service_time_ns: Quantiles,
    /// Longest delay between a request's intended and actual send time.
    pub schedule_lag_max_ns: u64,
    /// Mean of that delay.
    pub schedule_lag_mean_ns: u64,
    /// CPU share of the busiest generator shard (0..1).
    pub generator_busy: f64,
}

/// Who limited the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `generator`, `target` or `none`.
    pub bottleneck: &'static str,
    /// Why, in a sentence.
    pub reason: String,
}

/// CPU the generator process used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GeneratorCpu {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub system_s: f64,
    /// User CPU per request sent, in nanoseconds.
    pub user_ns_per_request: f64,
    /// System CPU per request sent, in nanoseconds.
    pub system_ns_per_request: f64,
    /// Busiest shard's average CPU share over the run (0..1).
    pub busiest_shard: f64,
    /// Seconds in which some shard was saturated (>= 95% busy).
    pub saturated_seconds: u64,
}

/// Everything a run measured.
#[derive(Debug)]
pub struct RunResult {
    /// The target: `tcp://` and `udp://` ones with the address their host resolved to (the
    /// one loaded), `http://` ones as written (host and path).
    pub target: String,
    /// The protocol's name.
    pub protocol: &'static str,
    /// `open` or `closed`.
    pub mode: &'static str,
    /// `uniform` or `poisson` (open loop).
    pub arrival: Option<&'static str>,
    /// Requests/s asked for (open loop).
    pub offered_rate: Option<f64>,
    /// Successful responses per second of measured time.
    pub achieved_rate: f64,
    /// Measured time, what `achieved_rate` is over: a duration run's duration; a `--requests`
    /// run's time until its last request was settled (in open loop, at least the schedule's
    /// span, `N / rate`); a run stopped early, until its last request was settled.
    pub duration_s: f64,
    /// How long after a duration run's end its last request was settled (answered, or failed:
    /// a timeout, say; nothing is sent after the end).
    pub drain_s: f64,
    /// Connections, shards, pipeline depth, payload size.
    pub connections: usize,
    /// Generator shards (cores).
    pub shards: usize,
    /// Requests outstanding per connection at most.
    pub pipeline: usize,
    /// Echo payload size.
    pub payload: usize,
    /// When the measured part started (Unix time, seconds).
    pub start_unix_s: f64,
    /// Requests sent (measured).
    pub requests: u64,
    /// Successful responses.
    pub responses: u64,
    /// Failed requests (`requests == responses + errors`).
    pub errors: u64,
    /// Failed requests by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// Failed connection attempts by kind (not requests).
    pub connect_errors: BTreeMap<String, u64>,
    /// Connections that broke with no request outstanding (bytes the server sent unasked,
    /// for one), by kind: errors of the server that no request counts.
    pub connection_errors: BTreeMap<String, u64>,
    /// Connections opened again after being lost.
    pub reconnects: u64,
    /// Requests that were due but never sent.
    pub unsent: u64,
    /// Latency from the intended send time (coordinated omission corrected), ns.
    pub latency: Histogram<u64>,
    /// Latency from the actual send time (service time), ns.
    pub service_time: Histogram<u64>,
    /// Longest schedule lag, ns.
    pub schedule_lag_max_ns: u64,
    /// Mean schedule lag, ns.
    pub schedule_lag_mean_ns: u64,
    /// Generator CPU.
    pub generator_cpu: GeneratorCpu,
    /// A signal (Ctrl-C) stopped the run before its end.
    pub stopped_early: bool,
    /// Writing an output (the interval log) failed during the run: that output is lost or
    /// cut short, the measurements here are whole.
    pub sink_error: Option<String>,
    /// Who limited the run.
    pub verdict: Verdict,
    /// Per second.
    pub timeline: Vec<TimelineEntry>,
}

/// The JSON document (`--json`).
#[derive(Serialize)]
struct Json<'a> {
    target: &'a str,
    protocol: &'a str,
    mode: &'a str,
    arrival: Option<&'a str>,
    offered_rate: Option<f64>,
    achieved_rate: f64,
    duration_s: f64,
    drain_s: f64,
    connections: usize,
    shards: usize,
    pipeline: usize,
    payload: usize,
    start_unix_s: f64,
    requests: u64,
    responses: u64,
    errors: u64,
    error_kinds: &'a BTreeMap<String, u64>,
    connect_errors: &'a BTreeMap<String, u64>,
    connection_errors: &'a BTreeMap<String, u64>,
    reconnects: u64,
    unsent: u64,
    latency_ns: Quantiles,
    service_time_ns: Quantiles,
    schedule_lag_ns: Lag,
    generator_cpu: GeneratorCpu,
    generator_bottleneck: bool,
    stopped_early: bool,
    sink_error: Option<&'a str>,
    verdict: &'a Verdict,
    timeline: &'a [TimelineEntry],
}

#[derive(Serialize)]
struct Lag {
    mean: u64,
    max: u64,
}

impl RunResult {
    /// The JSON document: at least `target, mode, offered_rate, achieved_rate, duration_s,
    /// requests, errors, latency_ns, service_time_ns, timeline`.
    pub fn to_json(&self) -> String {
        let json = Json {
            target: &self.target,
            protocol: self.protocol,
            mode: self.mode,
            arrival: self.arrival,
            offered_rate: self.offered_rate,
            achieved_rate: self.achieved_rate,
            duration_s: self.duration_s,
            drain_s: self.drain_s,
            connections: self.connections,
            shards: self.shards,
            pipeline: self.pipeline,
            payload: self.payload,
            start_unix_s: self.start_unix_s,
            requests: self.requests,
            responses: self.responses,
            errors: self.errors,
            error_kinds: &self.error_kinds,
            connect_errors: &self.connect_errors,
            connection_errors: &self.connection_errors,
            reconnects: self.reconnects,
            unsent: self.unsent,
            latency_ns: quantiles(&self.latency),
            service_time_ns: quantiles(&self.service_time),
            schedule_lag_ns: Lag {
                mean: self.schedule_lag_mean_ns,
                max: self.schedule_lag_max_ns,
            },
            generator_cpu: self.generator_cpu,
            generator_bottleneck: self.verdict.bottleneck == "generator",
            stopped_early: self.stopped_early,
            sink_error: self.sink_error.as_deref(),
            verdict: &self.verdict,
            timeline: &self.timeline,
        };
        serde_json::to_string_pretty(&json).expect("the report serialises")
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let mode = match (self.mode, self.arrival) {
            ("open", Some(a)) => format!("open loop, {a} arrivals"),
            (m, _) => format!("{m} loop"),
        };
        let drain = if self.drain_s >= 0.005 {
            format!(" (the last request settled {:.2} s after it)", self.drain_s)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "{} ({}), {mode}, {} connections on {} core(s), pipeline {}, {:.2} s{drain}",
            self.target,
            self.protocol,
            self.connections,
            self.shards,
            self.pipeline,
            self.duration_s
        );
        if self.stopped_early {
            let _ = writeln!(
                s,
                "  stopped early by a signal: what follows covers the time it ran"
            );
        }
        match self.offered_rate {
            Some(offered) => {
                let _ = writeln!(
                    s,
                    "  rate      offered {offered:.0}/s, achieved {:.0}/s ({:.1}%)",
                    self.achieved_rate,
                    100.0 * self.achieved_rate / offered
                );
            }
            None => {
                let _ = writeln!(s, "  rate      achieved {:.0}/s", self.achieved_rate);
            }
        }
        let _ = writeln!(
            s,
            "  requests  {} sent, {} ok, {} errors, {} unsent; {} reconnects",
            self.requests, self.responses, self.errors, self.unsent, self.reconnects
        );
        for (kind, n) in &self.error_kinds {
            let _ = writeln!(s, "            error  {kind}: {n}");
        }
        for (kind, n) in &self.connect_errors {
            let _ = writeln!(s, "            connect failed  {kind}: {n}");
        }
        for (kind, n) in &self.connection_errors {
            let _ = writeln!(
                s,
                "            connection broken, no request outstanding  {kind}: {n}"
            );
        }
        let _ = writeln!(
            s,
            "  {:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, h) in [
            ("latency (from intended time)", &self.latency),
            ("service time (from send)", &self.service_time),
        ] {
            let q = quantiles(h);
            let _ = writeln!(
                s,
                "  {name:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                human_ns(q.p50),
                human_ns(q.p90),
                human_ns(q.p99),
                human_ns(q.p999),
                human_ns(q.p9999),
                human_ns(q.max)
            );
        }
        let _ = writeln!(
            s,
            "  lag       schedule lag mean {}, max {}",
            human_ns(self.schedule_lag_mean_ns),
            human_ns(self.schedule_lag_max_ns)
        );
        let c = &self.generator_cpu;
        let _ = writeln!(
            s,
            "  generator {:.2} µs user + {:.2} µs system CPU per request; busiest core {:.0}% busy",
            c.user_ns_per_request / 1000.0,
            c.system_ns_per_request / 1000.0,
            c.busiest_shard * 100.0
        );
        let _ = writeln!(
            s,
            "  verdict   bottleneck: {} — {}",
            self.verdict.bottleneck, self.verdict.reason
        );
        s
    }
}

/// A duration in ns, written with a unit that suits it.
pub fn human_ns(ns: u64) -> String {
    let v = ns as f64;
    if v >= 1e9 {
        format!("{:.2}s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}µs", v / 1e3)
    } else {
        format!("{ns}ns")
    }
}

/// Decides who limited the run.
///
/// - Connection attempts that failed for want of local resources (`EMFILE`, ...) make the
///   generator the bottleneck, whatever else happened.
/// - A shard at >= 95% CPU for at least a quarter of the seconds, while the run fell short
///   (open loop: achieved < 99% of offered, or the schedule lag grew; closed loop: always, as
///   the generator then caps what is measured), means the generator was the bottleneck.
/// - An open-loop run that fell short while no shard was saturated was limited by the target
///   (or the network).
/// - Otherwise, nothing limited it: the target kept up with the schedule.
pub(crate) fn verdict(
    offered: Option<f64>,
    achieved: f64,
    timeline: &[TimelineEntry],
    cpu: &GeneratorCpu,
    local_shortages: u64,
) -> Verdict {
    if local_shortages > 0 {
        return Verdict {
            bottleneck: "generator",
            reason: format!(
                "{local_shortages} connection attempts failed for want of local resources (file descriptors, ports or buffers; see the connect errors): raise `ulimit -n` or use fewer --connections"
            ),
        };
    }
    let seconds = timeline.len().max(1) as u64;
    let saturated = cpu.saturated_seconds * 4 >= seconds && cpu.saturated_seconds > 0;
    let third = timeline.len() / 3;
    let mean_lag = |part: &[TimelineEntry]| {
        if part.is_empty() {
            0.0
        } else {
            part.iter()
                .map(|e| e.schedule_lag_mean_ns as f64)
                .sum::<f64>()
                / part.len() as f64
        }
    };
    let (early, late) = (
        mean_lag(&timeline[..third]),
        mean_lag(&timeline[timeline.len() - third..]),
    );
    let lag_grew = third > 0 && late > 10e6 && late > 2.0 * early + 1e6;
    match offered {
        Some(offered) => {
            let short = achieved < 0.99 * offered;
            if (short || lag_grew) && saturated {
                Verdict {
                    bottleneck: "generator",
                    reason: format!(
                        "a generator core was saturated in {} of {seconds} s while the run fell behind its schedule (achieved {:.1}% of offered); add --cpus or lower --rate",
                        cpu.saturated_seconds,
                        100.0 * achieved / offered
                    ),
                }
            } else if short || lag_grew {
                Verdict {
                    bottleneck: "target",
                    reason: format!(
                        "the target fell behind the schedule (achieved {:.1}% of offered, schedule lag {} early vs {} late) while the generator had CPU to spare",
                        100.0 * achieved / offered,
                        human_ns(early as u64),
                        human_ns(late as u64)
                    ),
                }
            } else {
                Verdict {
                    bottleneck: "none",
                    reason: "the target kept up with the offered rate".into(),
                }
            }
        }
        None if saturated => Verdict {
            bottleneck: "generator",
            reason: format!(
                "a generator core was saturated in {} of {seconds} s: the rate measured is a lower bound of the target's capacity; add --cpus",
                cpu.saturated_seconds
            ),
        },
        None => Verdict {
            bottleneck: "target",
            reason: "closed loop with generator CPU to spare: the target (or the network) set the rate".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(lag_ms: u64, busy: f64) -> TimelineEntry {
        TimelineEntry {
            t_s: 0.0,
            length_s: 1.0,
            sent: 100,
            responses: 100,
            errors: 0,
            rate: 100.0,
            latency_ns: Quantiles::default(),
            service_time_ns: Quantiles::default(),
            schedule_lag_max_ns: lag_ms * 1_000_000,
            schedule_lag_mean_ns: lag_ms * 1_000_000,
            generator_busy: busy,
        }
    }

    #[test]
    fn verdicts() {
        let calm: Vec<_> = (0..9).map(|_| second(0, 0.3)).collect();
        let idle = GeneratorCpu::default();
        assert_eq!(
            verdict(Some(1000.0), 999.0, &calm, &idle, 0).bottleneck,
            "none"
        );
        let growing: Vec<_> = (0..9).map(|i| second(i * 20, 0.5)).collect();
        assert_eq!(
            verdict(Some(1000.0), 1000.0, &growing, &idle, 0).bottleneck,
            "target"
        );
        let busy = GeneratorCpu {
            saturated_seconds: 8,
            ..GeneratorCpu::default()
        };
        assert_eq!(
            verdict(Some(1000.0), 700.0, &growing, &busy, 0).bottleneck,
            "generator"
        );
        assert_eq!(
            verdict(None, 700.0, &calm, &busy, 0).bottleneck,
            "generator"
        );
        assert_eq!(verdict(None, 700.0, &calm, &idle, 0).bottleneck, "target");
        // Out of file descriptors: the generator's shortage, though it had CPU to spare.
        for offered in [Some(1000.0), None] {
            let v = verdict(offered, 700.0, &growing, &idle, 3);
            assert_eq!(v.bottleneck, "generator", "{offered:?}");
            assert!(v.reason.contains("3 connection attempts"), "{}", v.reason);
        }
    }

    #[test]
    fn units() {
        assert_eq!(human_ns(999), "999ns");
        assert_eq!(human_ns(1_500), "1.5µs");
        assert_eq!(human_ns(2_340_000), "2.34ms");
        assert_eq!(human_ns(1_000_000_000), "1.00s");
    }
}
