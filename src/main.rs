//! The `percore` command line.

#![forbid(unsafe_code)]

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
    /// Measure the engine on this machine: ring round trips, spawn, yield, channels, timers,
    /// cross-core messages. Ends by itself and prints a table.
    Bench(selfbench::BenchArgs),
    /// Run a built-in service (echo, holla, udp-echo) on every chosen CPU until Ctrl-C or
    /// SIGTERM.
    Serve(serve::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => selfbench::run(args),
        Command::Serve(args) => serve::run(args),
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
