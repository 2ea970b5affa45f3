//! The `percore` command line.

#![forbid(unsafe_code)]

mod bench;
mod load;
mod load_output;
mod selfbench;
mod serve;

use clap::{Parser, Subcommand};

/// percore: a thread-per-core io_uring runtime, and the tools around it.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The demo: start percore's echo service on one CPU, load it from another, print the
    /// capacity and the latency (coordinated omission corrected) and write an SVG report.
    /// Ends by itself (12 s by default).
    Bench(bench::BenchArgs),
    /// Load a server: `tcp://`, `udp://` or `http://` targets, open loop (`--rate`) or closed
    /// loop, HDR latency, JSON, interval logs and plots. `percore load merge` combines
    /// interval logs.
    Load(Box<load::LoadArgs>),
    /// Run a built-in service (echo, holla, udp-echo) on every chosen CPU until Ctrl-C or
    /// SIGTERM.
    Serve(serve::ServeArgs),
    /// Measure the engine on this machine: ring round trips, spawn, yield, channels, timers,
    /// cross-core messages. Ends by itself and prints a table.
    EngineBench(selfbench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Load(args) => load::run(*args),
        Command::Serve(args) => serve::run(args),
        Command::EngineBench(args) => selfbench::run(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with its causes; no backtrace, whatever RUST_BACKTRACE says. A stderr
            // that cannot be written loses it (`eprintln!` would panic: exit 101, not 1).
            percore::net::log::line(format_args!("percore: {e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
