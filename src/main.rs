//! The `percore` command line.

#![forbid(unsafe_code)]

mod selfbench;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => selfbench::run(args),
    }
}
