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
//! # UDP conversations (`src/bin/udp_conv_*.rs`, `udp-conversation/run.sh`)
//!
//! `udp_conv_echo --server conv|plain|tokio`: the numbered echo (`k:payload` per peer) on
//! percore's conversation service, on a plain percore UDP loop with a `HashMap` of per-peer
//! counters, and on tokio the same way; `udp_conv_client`: a closed-loop tokio client with one
//! socket per peer that checks every reply and prints one JSON line like `echo_client`.
//! `benches/udp-conversation/run.sh` alternates the three servers and prints medians and ratios.
//!
//! The machines here are shared 2-vCPU VMs: compare runtimes within one run and record ratios
//! with the command that produced them in BENCHMARKS.md, never absolute figures alone.

#![forbid(unsafe_code)]

use std::io;

use hdrhistogram::Histogram;

/// A process's (utime, stime) in clock ticks, from `/proc/PID/stat`: the load clients read the
/// server's CPU time at the start and the end of the measured window.
///
/// # Errors
///
/// The file cannot be read or does not parse.
pub fn proc_times(pid: u32) -> io::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, so split after its ')').
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let parse = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("bad /proc/PID/stat"))
    };
    Ok((parse(11)?, parse(12)?))
}

/// The latency fields of a load client's JSON line, from a histogram of nanoseconds:
/// `"p50_us":..,"p99_us":..,"p999_us":..,"max_us":..`.
pub fn latency_json(hist: &Histogram<u64>) -> String {
    let us = |ns: u64| ns as f64 / 1000.0;
    format!(
        "\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1}",
        us(hist.value_at_quantile(0.50)),
        us(hist.value_at_quantile(0.99)),
        us(hist.value_at_quantile(0.999)),
        us(hist.max()),
    )
}

/// The server-CPU fields of a load client's JSON line (with a leading comma): user and system
/// µs per round trip between two [`proc_times`] readings; `ticks_per_sec` is `_SC_CLK_TCK`.
pub fn server_cpu_json(
    before: (u64, u64),
    after: (u64, u64),
    round_trips: u64,
    ticks_per_sec: f64,
) -> String {
    let tick_us = 1e6 / ticks_per_sec;
    let per = |d: u64| {
        if round_trips == 0 {
            0.0
        } else {
            d as f64 * tick_us / round_trips as f64
        }
    };
    format!(
        ",\"server_user_us_per_rt\":{:.3},\"server_sys_us_per_rt\":{:.3}",
        per(after.0.saturating_sub(before.0)),
        per(after.1.saturating_sub(before.1)),
    )
}

/// Runs `future` on a tokio `current_thread` runtime (I/O and timers enabled) on this thread,
/// pinned to `cpu`: how the load clients run.
///
/// # Errors
///
/// The runtime cannot be built.
pub fn block_on_pinned<F: std::future::Future>(cpu: usize, future: F) -> io::Result<F::Output> {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future))
}
