//! A run from start to end: check the target, start one shard per CPU on a percore runtime,
//! aggregate on this thread, and judge the result.

use std::fmt;
use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use percore_engine::Runtime;

use crate::aggregate::Aggregator;
use crate::config::{Arrival, LoadConfig, Mode, Stop};
use crate::hlog::HlogWriter;
use crate::record::Report;
use crate::result::{verdict, GeneratorCpu, RunResult};
use crate::schedule::Window;
use crate::shard::{run_shard, Plan};

/// Time given to the shards to start and connect before the schedule begins.
const SETUP: Duration = Duration::from_millis(100);

/// Where a run writes as it goes.
#[derive(Default)]
pub struct Sinks<'a> {
    /// The interval log (`--hlog`).
    pub hlog: Option<&'a mut dyn Write>,
    /// The live progress line (a TTY's stderr).
    pub progress: Option<&'a mut dyn Write>,
}

impl fmt::Debug for Sinks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sinks")
            .field("hlog", &self.hlog.is_some())
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Why a run could not be made.
#[derive(Debug)]
pub enum LoadError {
    /// The options do not fit together.
    Config(String),
    /// The target is unusable (refused, unreachable, not the protocol expected).
    Target(String),
    /// The generator itself failed (runtime set-up, a shard's panic).
    Generator(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Config(m) => write!(f, "bad options: {m}"),
            LoadError::Target(m) => write!(f, "bad target: {m}"),
            LoadError::Generator(m) => write!(f, "generator failed: {m}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Runs the load described by `config`, writing to `sinks` as it goes.
///
/// # Errors
///
/// Bad options, an unusable target (checked with one request before the run), or a failure
/// of the generator itself. Errors of the target during the run are results, not failures.
pub fn run(config: &LoadConfig, sinks: Sinks<'_>) -> Result<RunResult, LoadError> {
    config.validate().map_err(LoadError::Config)?;
    let protocol = crate::protocol::for_config(config);
    if config.pipeline > 1 && !protocol.pipelines() {
        return Err(LoadError::Config(format!(
            "{} does not pipeline",
            protocol.name()
        )));
    }
    crate::preflight::check(config, &*protocol).map_err(LoadError::Target)?;
    make_room_for(config.connections);

    let t0 = Instant::now() + SETUP;
    let measure_from = t0 + config.warmup;
    let end = match config.stop {
        Stop::Duration(d) => Some(measure_from + d),
        Stop::Requests(_) => None,
    };
    let start_wall = SystemTime::now() + (measure_from - Instant::now());
    let plan = Arc::new(Plan {
        config: config.clone(),
        protocol,
        window: Window {
            t0,
            measure_from,
            end,
        },
        stopped_early: std::sync::atomic::AtomicBool::new(false),
    });
    let aggregator_cpu = percore_engine::thread_cpu_time();
    let (tx, rx) = mpsc::channel::<Report>();
    let cpus = config.cpus.clone();
    let shards = cpus.len();
    let busy_poll = config.busy_poll;
    // A connection holds a receive buffer only while the chunk just received is parsed, so a
    // shard needs few; a ring sized to its connections (twice their window, at least 64) keeps
    // the buffers the kernel copies responses into warm in the cache, where the engine's
    // default 2048 are 8 MiB handed out in turn.
    let per_shard = config.connections.div_ceil(shards.max(1));
    let receive_buffers = (2 * per_shard * config.pipeline).clamp(
        64,
        usize::from(percore_engine::buf::ring::CORE_RING_ENTRIES),
    ) as u16;
    let stop_on_signals = config.stop_on_signals;
    let grace = config.timeout + Duration::from_secs(1);
    // Held here (and so in the generator thread started below) so the signals reach the
    // runtime's signalfd and stop the run, rather than kill the process.
    let _held = if stop_on_signals {
        Some(
            percore_engine::runtime::hold_shutdown_signals()
                .map_err(|e| LoadError::Generator(format!("holding SIGINT/SIGTERM: {e}")))?,
        )
    } else {
        None
    };
    let generator = {
        let plan = plan.clone();
        std::thread::Builder::new()
            .name("percore-load".into())
            .spawn(move || -> Result<(), String> {
                let mut builder = Runtime::builder()
                    .receive_buffers(receive_buffers)
                    .cpus(cpus)
                    .handle_signals(stop_on_signals)
                    .grace_period(grace);
                if let Some(window) = busy_poll {
                    builder = builder.busy_poll(window);
                }
                let runtime = builder
                    .build()
                    .map_err(|e| format!("starting the runtime: {e}"))?;
                let tx = std::sync::Mutex::new(tx);
                runtime
                    .run(|core| {
                        let out = tx.lock().map(|tx| tx.clone());
                        let plan = &plan;
                        async move {
                            if let Ok(out) = out {
                                run_shard(plan, core, out).await;
                            }
                        }
                    })
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| LoadError::Generator(format!("starting the generator thread: {e}")))?
    };

    let mut hlog_error = None;
    let hlog = match sinks.hlog {
        Some(out) => match HlogWriter::begin(out, start_wall, "percore load") {
            Ok(w) => Some(w),
            Err(e) => {
                hlog_error = Some(format!("writing the interval log: {e}"));
                None
            }
        },
        None => None,
    };
    let mut agg = Aggregator::new(shards, hlog, sinks.progress);
    for report in rx {
        agg.add(report);
    }
    agg.flush();
    agg.close();
    match generator.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(LoadError::Generator(e)),
        Err(_) => return Err(LoadError::Generator("the generator thread panicked".into())),
    }
    // A log that could not be written loses the log, not the run: the measurements are whole.
    let sink_error = hlog_error.or(agg.sink_error.take());
    let aggregator_cpu = {
        let now = percore_engine::thread_cpu_time();
        (now.0 - aggregator_cpu.0, now.1 - aggregator_cpu.1)
    };

    let stopped_early = plan
        .stopped_early
        .load(std::sync::atomic::Ordering::Relaxed);
    let totals = agg.totals;
    // From the measured start to the last request's outcome (an answer, or an error such as
    // a timeout); with none, to the shards' end.
    let until_last = if totals.last_outcome_ns > 0 {
        totals.last_outcome_ns as f64 / 1e9
    } else {
        agg.timeline.last().map_or(0.0, |e| e.t_s + e.length_s)
    }
    .max(1e-3);
    let (duration_s, drain_s) = measured_time(config, until_last, stopped_early, &totals);
    let achieved = totals.ok as f64 / duration_s;
    let shortages = local_shortages(&totals.connect_errors);
    let requests = totals.sent.max(1) as f64;
    let timeline = agg.timeline;
    let busiest_shard = if timeline.is_empty() {
        0.0
    } else {
        timeline.iter().map(|e| e.generator_busy).sum::<f64>() / timeline.len() as f64
    };
    // The shards' threads over the measured time, plus this (aggregating) thread.
    let user_s = (totals.cpu.0 + aggregator_cpu.0).as_secs_f64();
    let system_s = (totals.cpu.1 + aggregator_cpu.1).as_secs_f64();
    let generator_cpu = GeneratorCpu {
        user_s,
        system_s,
        user_ns_per_request: user_s * 1e9 / requests,
        system_ns_per_request: system_s * 1e9 / requests,
        busiest_shard,
        saturated_seconds: timeline.iter().filter(|e| e.generator_busy >= 0.95).count() as u64,
    };
    let (mode, arrival, offered) = match config.mode {
        Mode::Open { rate, arrival } => (
            "open",
            Some(match arrival {
                Arrival::Uniform => "uniform",
                Arrival::Poisson => "poisson",
            }),
            Some(rate),
        ),
        Mode::Closed => ("closed", None, None),
    };
    Ok(RunResult {
        target: config.target.to_string(),
        protocol: plan.protocol.name(),
        mode,
        arrival,
        offered_rate: offered,
        achieved_rate: achieved,
        duration_s,
        drain_s,
        connections: config.connections,
        shards,
        pipeline: config.pipeline,
        payload: config.payload,
        start_unix_s: start_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64(),
        requests: totals.sent,
        responses: totals.ok,
        errors: totals.error_count,
        error_kinds: totals.errors,
        connect_errors: totals.connect_errors,
        connection_errors: totals.connection_errors,
        reconnects: totals.reconnects,
        unsent: totals.unsent,
        schedule_lag_max_ns: totals.lag_max_ns,
        schedule_lag_mean_ns: totals.lag_sum_ns.checked_div(totals.sent).unwrap_or(0),
        latency: totals.latency,
        service_time: totals.service,
        stopped_early,
        sink_error,
        verdict: verdict(offered, achieved, &timeline, &generator_cpu, shortages),
        generator_cpu,
        timeline,
    })
}

/// The measured time a run's achieved rate is taken over, and how long after a duration
/// run's end its last request was settled (answers then count: they answer requests sent in
/// time). `until_last`: from the measured start to the last request's outcome.
///
/// - A duration run: its duration. Nothing is sent after the end; what was due and not
///   sent is counted unsent, so a target that fell behind shows in the rate.
/// - A `--requests` run in open loop: until the last request was settled, but at least the
///   schedule's span (`N` requests at rate `R` take `N / R`: the last one's slot ends
///   there), so a target that keeps up achieves the rate offered, not more.
/// - Closed loop, or a run stopped early: until the last request was settled.
fn measured_time(
    config: &LoadConfig,
    until_last: f64,
    stopped_early: bool,
    totals: &crate::record::IntervalData,
) -> (f64, f64) {
    if stopped_early {
        return (until_last, 0.0);
    }
    match (config.stop, config.mode) {
        (Stop::Duration(d), _) => {
            let d = d.as_secs_f64();
            (d, (until_last - d).max(0.0))
        }
        (Stop::Requests(_), Mode::Open { rate, .. }) => {
            let span = (totals.sent + totals.unsent) as f64 / rate;
            (until_last.max(span), 0.0)
        }
        (Stop::Requests(_), Mode::Closed) => (until_last, 0.0),
    }
}

/// Connection attempts that failed for want of something local (file descriptors, ports,
/// buffers): the generator's shortage, not the target's.
fn local_shortages(connect_errors: &crate::record::Counts) -> u64 {
    connect_errors
        .iter()
        .filter(|(kind, _)| {
            crate::record::LOCAL_SHORTAGES
                .iter()
                .any(|s| kind.starts_with(s))
        })
        .map(|(_, n)| n)
        .sum()
}

/// File descriptors a run needs besides its connections' sockets (rings, eventfds, the
/// outputs, the runtime's own).
const FD_MARGIN: u64 = 256;

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) towards its hard limit
/// when `connections` sockets would not fit under it: the soft limit is often 1024 where
/// the hard one allows far more. A hard limit that is still too low is left to show: the
/// connections past it fail with `EMFILE`, counted, and the verdict names the generator.
fn make_room_for(connections: usize) {
    // Failing leaves the limit as it was, which the run then shows the same way.
    let _ = percore_engine::raise_fd_limit(connections as u64 + FD_MARGIN);
}
