//! percore benchmarks, side by side with peer runtimes.
//!
//! This crate holds no library code: its content is the benchmarks under `benches/benches/`,
//! which keep the peer programs next to percore's so anyone can rerun the comparison
//! (docs/BENCHMARKING.md).
//!
//! # `engine`: engine micro-benchmarks (criterion)
//!
//! Each case is written the same way for percore, glommio 0.9 (`LocalExecutor`) and tokio
//! (`current_thread` runtime + `LocalSet`), named `<case>/<runtime>`:
//!
//! | case | one iteration |
//! | --- | --- |
//! | `ring_nop` | one io_uring `NOP` round trip (percore only: the floor; the peers expose none) |
//! | `spawn_join` | spawn an empty task and await its handle |
//! | `yield` | one yield round trip of a single task |
//! | `channel_pingpong` | two tasks on one core, a value out over a bounded(1) channel and back |
//! | `timer_insert_cancel` | a one-hour sleep, polled once (registered), then dropped |
//! | `timer_fire` | a 1 µs sleep, awaited |
//! | `cross_core_rtt` | executors on CPU 0 and CPU 1, a value A -> B -> A over cross-thread channels |
//!
//! Single-core cases run pinned to CPU 0. Each benchmark starts its runtime thread(s) once;
//! the timed loop runs inside the runtime, in a spawned task, and only the loop is timed.
//!
//! Run all of them (about two minutes with the short times below):
//!
//! ```text
//! cargo bench -p percore-benches --bench engine
//! cargo bench -p percore-benches --bench engine -- --warm-up-time 1 --measurement-time 3
//! cargo bench -p percore-benches --bench engine -- channel_pingpong   # one case
//! ```
//!
//! # TCP echo (`src/bin/echo_*.rs`, `echo/run.sh`)
//!
//! One echo server per runtime, written the same way on one core: `echo_raw_uring` (the
//! floor: a runtime-free io_uring loop with multishot accept, multishot recv into a provided
//! buffer ring and batched submits), `echo_percore`, `echo_tokio` (`current_thread`),
//! `echo_glommio` and `echo_monoio` (io_uring driver); and `echo_client`, a closed-loop tokio
//! load client that prints one JSON line (round trips/s, p50/p99/p99.9/max µs, and with
//! `--server-pid` the server's user and system CPU µs per round trip).
//! `benches/echo/run.sh` builds them, pins server to CPU 0 and client to CPU 1, alternates the
//! servers for several rounds per point and prints a table of medians and ratios:
//!
//! ```text
//! benches/echo/run.sh
//! DURATION=5 ROUNDS=5 SIZES=64 CONNS="64 512" SERVERS="raw percore tokio" benches/echo/run.sh
//! ```
//!
//! The machines here are shared 2-vCPU VMs: compare runtimes within one run and record ratios
//! with the command that produced them in BENCHMARKS.md, never absolute figures alone.

#![forbid(unsafe_code)]
