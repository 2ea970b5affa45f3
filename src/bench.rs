//! `percore bench`: the one-command demo. Starts percore's own echo service (a child
//! `percore serve`, pinned to one CPU) on a free loopback port, loads it from another CPU and
//! prints what it measured, ending by itself (12 s by default, 20 s at most).
//!
//! Without `--rate` it runs two phases: a closed loop that finds the service's capacity, then
//! an open loop at 75% of that capacity whose latencies are measured from each request's
//! intended send time (coordinated omission corrected). The SVG report is drawn from the last
//! phase. The service's own CPU per request (user and system, from `/proc`) is printed beside
//! the generator's.
//!
//! SIGINT or SIGTERM stops the run and the service, and writes no report. The service also
//! stops by itself when this process is gone, however it ended (its stdin is a pipe from here).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use percore::loadtest::{Arrival, LoadConfig, Mode, RunResult, Stop, Target};

use crate::load_output::check_writable;
use crate::serve::parse_duration;

/// The service under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchService {
    /// TCP echo.
    Echo,
    /// UDP datagram echo.
    UdpEcho,
}

/// Options of `percore bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The service to start and load.
    #[arg(long, value_enum, default_value = "echo")]
    service: BenchService,
    /// Open-loop rate (requests/s); default: 75% of the capacity a closed-loop phase finds.
    #[arg(long)]
    rate: Option<f64>,
    /// Only the closed-loop phase.
    #[arg(long, conflicts_with = "rate")]
    closed_loop: bool,
    /// Total measured time (at most 20 s).
    #[arg(long, value_parser = parse_duration, default_value = "12s")]
    duration: Duration,
    /// Connections (UDP: sockets).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// CPU of the service (default: the first CPU this process may use).
    #[arg(long)]
    server_cpu: Option<usize>,
    /// CPU of the load generator (default: the last CPU this process may use other than the
    /// service's; the service's only if it is the one CPU allowed).
    #[arg(long)]
    client_cpu: Option<usize>,
    /// Where to write the SVG report.
    #[arg(long, default_value = "percore-bench.svg")]
    plot: PathBuf,
    /// Also write the JSON report of the last phase here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The generator's CPU: the one asked for, which must not be the service's (they would share
/// it, and the benchmark would measure the sharing), or by default the last CPU `allowed` that
/// is not the service's. Both must be among the CPUs this process may use (`allowed`). With
/// one CPU allowed, both share it, and the run says so.
fn client_cpu(server: usize, asked: Option<usize>, allowed: &[usize]) -> anyhow::Result<usize> {
    let list = || {
        allowed
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if !allowed.contains(&server) {
        bail!(
            "--server-cpu {server}: this process may use CPUs {}",
            list()
        );
    }
    match asked {
        Some(client) if !allowed.contains(&client) => {
            bail!(
                "--client-cpu {client}: this process may use CPUs {}",
                list()
            )
        }
        Some(client) if client == server => {
            bail!("--client-cpu and --server-cpu are both {client}: give them different CPUs")
        }
        Some(client) => Ok(client),
        None => match allowed.iter().rev().find(|&&c| c != server) {
            Some(&client) => Ok(client),
            None => {
                percore::net::log::line(format_args!(
                    "percore bench: one CPU: the service and the generator share it"
                ));
                Ok(server)
            }
        },
    }
}

/// How long the service gets to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many of the service's last stderr lines are kept for an error message.
const KEPT_LINES: usize = 20;

/// The service as a child process; killed when dropped.
///
/// It also stops by itself when its standard input (a pipe from this process) reaches its
/// end, so it does not outlive this process however that ends: an error, SIGINT or SIGTERM
/// (see [`run`]) or a signal nothing can catch (SIGKILL).
struct ServiceProcess {
    child: Child,
    addr: SocketAddr,
    /// The writing end of the service's stdin: closed when this process ends.
    _stdin: ChildStdin,
    /// The service's last stderr lines (a thread reads them all, so the service never blocks
    /// on a full pipe).
    said: Arc<Mutex<VecDeque<String>>>,
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServiceProcess {
    fn start(service: BenchService, cpu: usize) -> anyhow::Result<ServiceProcess> {
        let name = match service {
            BenchService::Echo => "echo",
            BenchService::UdpEcho => "udp-echo",
        };
        let mut child = Command::new(std::env::current_exe().context("finding percore")?)
            .args(["serve", name, "--listen", "127.0.0.1:0", "--grace", "1s"])
            .args(["--stop-at-stdin-end", "--cpus"])
            .arg(cpu.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting percore serve")?;
        let stdin = child.stdin.take().context("service stdin")?;
        let stderr = child.stderr.take().context("service stderr")?;
        let said = Arc::new(Mutex::new(VecDeque::new()));
        // Where the service listens (`Some`), or the end of its stderr (`None`).
        let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
        {
            let said = said.clone();
            // The thread holds SIGINT and SIGTERM, as every thread of this process does during
            // a run: one that did not would take them and end the process, where the run's
            // signalfd is to read them and stop the run.
            let _held =
                percore::runtime::hold_shutdown_signals().context("holding SIGINT/SIGTERM")?;
            std::thread::spawn(move || {
                let mut stderr = BufReader::new(stderr);
                let mut bytes = Vec::new();
                // To its end, whatever it holds (a line that is not UTF-8 must not stop the
                // reading: the service would block on a full pipe).
                while matches!(stderr.read_until(b'\n', &mut bytes), Ok(n) if n > 0) {
                    let line = String::from_utf8_lossy(&bytes).trim_end().to_string();
                    bytes.clear();
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        let _ = tx.send(Some(addr.to_string()));
                    }
                    let mut said = said.lock().unwrap_or_else(|e| e.into_inner());
                    if said.len() == KEPT_LINES {
                        said.pop_front();
                    }
                    said.push_back(line);
                }
                let _ = tx.send(None);
            });
        }
        let mut process = ServiceProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            _stdin: stdin,
            said,
        };
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(addr)) => addr,
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                return Err(process.failure("the service ended before it listened"))
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(process.failure(&format!(
                    "the service did not say where it listens within {START_TIMEOUT:?}"
                )))
            }
        };
        match addr.parse() {
            Ok(addr) => process.addr = addr,
            Err(_) => {
                return Err(process.failure(&format!(
                    "the service said it listens on {addr:?}, expected an address"
                )))
            }
        }
        Ok(process)
    }

    /// Fails if the service has ended (it is to run until this process stops it).
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(self.failure("the service stopped during the run")),
        }
    }

    /// `what` went wrong, with the service's exit status and its last stderr lines.
    fn failure(&mut self, what: &str) -> anyhow::Error {
        // Its stderr ends as it exits: give it a moment to be gone, not more.
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => break "still running, stopped now".to_string(),
                Err(e) => break format!("exit status unknown: {e}"),
            }
        };
        let said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        if said.is_empty() {
            return anyhow::anyhow!("{what} ({status}); it wrote nothing to stderr");
        }
        let lines: Vec<&str> = said.iter().map(String::as_str).collect();
        anyhow::anyhow!("{what} ({status}); it said:\n  {}", lines.join("\n  "))
    }

    /// The service's (user, system) CPU seconds so far.
    fn cpu(&self) -> (f64, f64) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return (0.0, 0.0);
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 100.0
        };
        (tick(11), tick(12))
    }
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.duration > Duration::from_secs(20) || args.duration < Duration::from_secs(2) {
        bail!("--duration must be between 2s and 20s");
    }
    // Checked before the run, without touching what is there: a path that cannot be written
    // must not cost a whole run.
    for path in std::iter::once(&args.plot).chain(&args.json) {
        check_writable(path)?;
    }
    let allowed = crate::serve::allowed_cpus();
    let server_cpu = args.server_cpu.unwrap_or(allowed[0]);
    let client_cpu = client_cpu(server_cpu, args.client_cpu, &allowed)?;
    let mut service = ServiceProcess::start(args.service, server_cpu)?;
    let scheme = match args.service {
        BenchService::Echo => "tcp",
        BenchService::UdpEcho => "udp",
    };
    let target = Target::parse(&format!("{scheme}://{}", service.addr))?;
    println!(
        "percore bench: {scheme} echo service on CPU {}, load from CPU {client_cpu}, {} connections, {} B payloads",
        server_cpu, args.connections, args.payload
    );
    let mut config = LoadConfig::new(target);
    config.cpus = vec![client_cpu];
    config.connections = args.connections;
    config.payload = args.payload;
    config.warmup = Duration::from_millis(500);
    // SIGINT/SIGTERM during a phase end it; the run then stops there (below), and the service
    // is stopped as `service` drops. Outside the phases the signals end this process, and the
    // service stops at the end of its stdin.
    config.stop_on_signals = true;

    let phases: Vec<(&str, Duration)> = if args.closed_loop || args.rate.is_some() {
        vec![("", args.duration)]
    } else {
        let capacity = args.duration.mul_f64(0.4);
        vec![
            ("capacity", capacity),
            ("latency", args.duration - capacity),
        ]
    };
    let mut last = None;
    let mut capacity_rate = None;
    for (name, duration) in phases {
        config.stop = Stop::Duration(duration);
        config.mode = match (name, args.rate, capacity_rate) {
            ("capacity", _, _) => Mode::Closed,
            (_, Some(rate), _) => Mode::Open {
                rate,
                arrival: Arrival::Uniform,
            },
            ("latency", None, Some(cap)) => Mode::Open {
                rate: cap * 0.75,
                arrival: Arrival::Uniform,
            },
            _ => Mode::Closed,
        };
        match config.mode {
            Mode::Closed => println!("\n== closed loop ({name}), {duration:?}"),
            Mode::Open { rate, .. } => {
                println!("\n== open loop at {rate:.0} req/s ({name}), {duration:?}")
            }
        }
        let before = service.cpu();
        let started = Instant::now();
        let result = crate::load::load_with_files(&config, None, true)?;
        let after = service.cpu();
        print!("{}", result.summary());
        print_service_cpu(&result, before, after, started.elapsed());
        if result.stopped_early {
            bail!("interrupted: the service is stopped, and no report was written");
        }
        service.check_running()?;
        if name == "capacity" {
            capacity_rate = Some(result.achieved_rate.max(1.0));
        }
        last = Some(result);
    }
    let last = last.context("no phase ran")?;
    crate::load::write_reports(&last, args.json.as_deref(), Some(&args.plot))?;
    println!("\nreport: {}", args.plot.display());
    Ok(())
}

fn print_service_cpu(result: &RunResult, before: (f64, f64), after: (f64, f64), wall: Duration) {
    let requests = (result.requests.max(1)) as f64;
    println!(
        "  service   {:.2} µs user + {:.2} µs system CPU per request ({:.0}% of its core over {:.1} s)",
        (after.0 - before.0) * 1e6 / requests,
        (after.1 - before.1) * 1e6 / requests,
        100.0 * ((after.0 - before.0) + (after.1 - before.1)) / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::client_cpu;

    #[test]
    fn the_generator_never_shares_the_service_cpu_unless_it_must() {
        assert_eq!(client_cpu(0, None, &[0, 1]).unwrap(), 1);
        assert_eq!(client_cpu(1, None, &[0, 1]).unwrap(), 0);
        assert_eq!(client_cpu(3, None, &[0, 1, 2, 3]).unwrap(), 2);
        assert_eq!(client_cpu(0, None, &[0]).unwrap(), 0);
        assert_eq!(client_cpu(0, Some(1), &[0, 1]).unwrap(), 1);
        // A cpuset of CPUs 4 and 5 on a bigger machine.
        assert_eq!(client_cpu(4, None, &[4, 5]).unwrap(), 5);
        assert_eq!(client_cpu(4, Some(5), &[4, 5]).unwrap(), 5);
        assert!(client_cpu(0, None, &[4, 5]).is_err());
        assert!(client_cpu(1, Some(1), &[0, 1]).is_err());
        assert!(client_cpu(0, Some(5), &[0, 1]).is_err());
        assert!(client_cpu(2, None, &[0, 1]).is_err());
    }
}
