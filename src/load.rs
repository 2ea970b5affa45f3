//! `percore load TARGET [options]` and `percore load merge A.hlog B.hlog ... --out M.hlog`: the
//! command line over [`percore::loadtest`].

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use percore::loadtest::config::HttpOptions;
use percore::loadtest::hlog::MergeInput;
use percore::loadtest::{Arrival, LoadConfig, Mode, RunResult, Sinks, Stop, Target};

use crate::load_output::{check_writable, LogFile};
use crate::serve::{parse_cpus, parse_duration, CpuList};

/// Options of `percore load`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct LoadArgs {
    #[command(subcommand)]
    command: Option<LoadCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum LoadCommand {
    /// Merge interval logs of several runs (several machines) into one: intervals are lined
    /// up on absolute time (cells as long as the longest inputs' intervals, from the earliest
    /// start; each interval in the cell that covers most of it) and the histograms of a cell
    /// are added.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// The logs to merge.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Where to write the merged log (replaced only once the merge succeeded; it may be one
    /// of the inputs).
    #[arg(long)]
    out: PathBuf,
}

/// Arrival spacing of the open loop.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ArrivalArg {
    Uniform,
    Poisson,
}

/// Options of one load run.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// `tcp://HOST:PORT` (echo), `udp://HOST:PORT` (datagram echo) or
    /// `http://HOST[:PORT]/PATH` (HTTP/1.1 keep-alive).
    #[arg(required = true)]
    target: Option<String>,
    /// Open loop: total requests per second across all connections and cores; latency is
    /// measured from each request's intended send time.
    #[arg(long, required_unless_present = "closed_loop")]
    rate: Option<f64>,
    /// Open-loop arrival spacing.
    #[arg(long, value_enum, default_value = "uniform")]
    arrival: ArrivalArg,
    /// Closed loop: each connection sends when its previous response arrives.
    #[arg(long, conflicts_with = "rate")]
    closed_loop: bool,
    /// Connections in total (UDP: connected sockets).
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// How long to measure (`10s`, `1m`); default 10 s.
    #[arg(long, short = 'd', value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many requests instead.
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// CPUs to run a generator shard on: `1`, `0-3` or `0,2` (default: every CPU this process
    /// may use).
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<CpuList>,
    /// Load applied before measuring (not recorded).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    warmup: Duration,
    /// Requests outstanding per connection at most.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Echo payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// A request unanswered this long is a timeout error (its connection is reopened).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    timeout: Duration,
    /// HTTP method.
    #[arg(long, short = 'X', default_value = "GET")]
    method: String,
    /// HTTP header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// HTTP request body.
    #[arg(long)]
    body: Option<String>,
    /// Largest response accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_response: usize,
    /// Seed of the Poisson arrivals.
    #[arg(long, default_value_t = 0x5eed_1e55)]
    seed: u64,
    /// Spin this long on the ring before sleeping (`50us`): more precise send times and no
    /// wake-up latency, at the price of CPU.
    #[arg(long, value_parser = parse_duration)]
    busy_poll: Option<Duration>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (format 1.3, nanoseconds) here.
    #[arg(long)]
    hlog: Option<PathBuf>,
    /// Write an SVG plot (latency spectrum and timeline) here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
}

impl RunArgs {
    fn config(&self) -> anyhow::Result<LoadConfig> {
        let target = self.target.as_deref().unwrap_or_default();
        let mut config = LoadConfig::new(Target::parse(target)?);
        config.mode = match (self.rate, self.closed_loop) {
            (_, true) => Mode::Closed,
            (Some(rate), false) => Mode::Open {
                rate,
                arrival: match self.arrival {
                    ArrivalArg::Uniform => Arrival::Uniform,
                    ArrivalArg::Poisson => Arrival::Poisson,
                },
            },
            (None, false) => bail!("give --rate R (open loop) or --closed-loop"),
        };
        config.connections = self.connections;
        config.stop = match self.requests {
            Some(n) => Stop::Requests(n),
            None => Stop::Duration(self.duration.unwrap_or(Duration::from_secs(10))),
        };
        config.cpus = match &self.cpus {
            Some(list) => list.0.clone(),
            None => crate::serve::allowed_cpus(),
        };
        config.warmup = self.warmup;
        config.pipeline = self.pipeline;
        config.payload = self.payload;
        config.timeout = self.timeout;
        config.max_response = self.max_response;
        config.seed = self.seed;
        config.busy_poll = self.busy_poll;
        config.stop_on_signals = true;
        let mut headers = Vec::new();
        for h in &self.headers {
            let Some((name, value)) = h.split_once(':') else {
                bail!("bad --header {h:?}: expected `Name: value`");
            };
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        config.http = HttpOptions {
            method: self.method.clone(),
            headers,
            body: self.body.clone().unwrap_or_default().into_bytes(),
        };
        Ok(config)
    }
}

pub(crate) fn run(args: LoadArgs) -> anyhow::Result<()> {
    match args.command {
        Some(LoadCommand::Merge(merge)) => run_merge(&merge),
        None => run_load(&args.run),
    }
}

/// Runs one load, prints its summary, then writes its files. The options are checked, and
/// every output path is checked writable (without touching a file already there), before the
/// run; an output that fails after the run has started is reported after the summary, which
/// is printed whatever happens.
fn run_load(args: &RunArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    config.validate().map_err(anyhow::Error::msg)?;
    for path in [&args.json, &args.plot, &args.hlog].into_iter().flatten() {
        check_writable(path)?;
    }
    let result = load_with_files(&config, args.hlog.as_deref(), !args.quiet)?;
    print!("{}", result.summary());
    let mut failed = Vec::new();
    if let Err(e) = write_reports(&result, args.json.as_deref(), args.plot.as_deref()) {
        failed.push(format!("{e:#}"));
    }
    if let Some(e) = &result.sink_error {
        failed.push(e.clone());
    }
    if !failed.is_empty() {
        bail!("{} (the summary above is whole)", failed.join("; "));
    }
    Ok(())
}

/// Runs `config`, writing the interval log to `hlog` if given (see [`LogFile`]: opened once
/// the run is under way); an error writing it is left in the result's `sink_error`.
pub(crate) fn load_with_files(
    config: &LoadConfig,
    hlog: Option<&Path>,
    progress: bool,
) -> anyhow::Result<RunResult> {
    let mut log = hlog.map(LogFile::new);
    let mut stderr = std::io::stderr();
    let sinks = Sinks {
        hlog: log.as_mut().map(|f| f as &mut dyn Write),
        progress: (progress && stderr.is_terminal()).then_some(&mut stderr as &mut dyn Write),
    };
    let ran = percore::loadtest::run(config, sinks);
    let Some(log) = log else {
        return Ok(ran?);
    };
    match ran {
        Ok(mut result) => {
            if let Err(e) = log.finish() {
                result.sink_error.get_or_insert(e);
            }
            Ok(result)
        }
        Err(e) => {
            log.abandon();
            Err(e.into())
        }
    }
}

/// Writes the JSON report and the SVG plot where asked.
pub(crate) fn write_reports(
    result: &RunResult,
    json: Option<&Path>,
    plot: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        std::fs::write(path, result.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = plot {
        percore::loadtest::plot::write_svg(result, path).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Merges in memory, then writes `--out` as the interval log of a run is written ([`LogFile`]:
/// a regular file is replaced whole, a FIFO or device written in place): a merge that fails
/// leaves it as it was.
fn run_merge(args: &MergeArgs) -> anyhow::Result<()> {
    let mut logs = Vec::new();
    for path in &args.inputs {
        logs.push(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    }
    let names: Vec<String> = args
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let inputs: Vec<MergeInput<'_>> = names
        .iter()
        .zip(&logs)
        .map(|(name, log)| MergeInput { name, log })
        .collect();
    let merged = percore::loadtest::hlog::merge(&inputs).map_err(anyhow::Error::msg)?;
    let mut out = LogFile::new(&args.out);
    if let Err(e) = out.write_all(&merged.log) {
        out.abandon();
        return Err(e).with_context(|| format!("writing {}", args.out.display()));
    }
    out.finish().map_err(anyhow::Error::msg)?;
    let summary = merged.summary;
    // On stderr: `--out /dev/stdout` gets the log alone.
    percore::net::log::line(format_args!(
        "merged {} logs on {:?} intervals: {} intervals in, {} out, {} latency samples -> {}",
        inputs.len(),
        summary.cell,
        summary.intervals_in,
        summary.intervals_out,
        summary.latency_count,
        args.out.display()
    ));
    Ok(())
}
