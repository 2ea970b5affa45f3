//! `percore engine-bench`: the engine's self-benchmark (ring, spawn, yield, channels, timers,
//! cross-core messages), one core, a table of ns per operation.
//!
//! Each case runs a fixed number of operations on one pinned core and reports wall time and the
//! core's user/system CPU per operation, median of several rounds. It measures the engine alone;
//! the side-by-side comparisons with glommio and tokio live in `benches/` (criterion).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

/// Options of `percore engine-bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Operations per round (at least 1000: the timer-fire case runs a twentieth of them).
    #[arg(long, default_value_t = 200_000, value_parser = parse_ops)]
    ops: u64,
    /// Rounds per case (at least 1; the median is reported).
    #[arg(long, default_value_t = 5, value_parser = parse_rounds)]
    rounds: usize,
    /// CPU for the measured core (default: the first CPU this process may use; the cross-core
    /// case also uses the next one it may use).
    #[arg(long)]
    cpu: Option<usize>,
}

/// Fewest operations per round: enough for every case (the timer-fire one runs `ops / 20`)
/// to time a few hundred microseconds at least, not a handful of nanoseconds or none.
const MIN_OPS: u64 = 1000;

fn parse_ops(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= MIN_OPS => Ok(n),
        _ => Err(format!(
            "expected a whole number of at least {MIN_OPS} (the timer-fire case runs a \
             twentieth of them), got {s:?}"
        )),
    }
}

fn parse_rounds(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got {s:?}")),
    }
}

/// The second core's CPU for the cross-core case: the next CPU this process may use after
/// `cpu`, wrapping around (`allowed` in ascending order, as [`crate::serve::allowed_cpus`]
/// gives it); `None` if `cpu` is the only one.
fn second_cpu(cpu: usize, allowed: &[usize]) -> Option<usize> {
    allowed
        .iter()
        .copied()
        .find(|&c| c > cpu)
        .or_else(|| allowed.iter().copied().find(|&c| c != cpu))
}

struct Sample {
    wall: Duration,
    user: Duration,
    system: Duration,
}

async fn measure(body: impl Future<Output = ()>) -> Sample {
    let (u0, s0) = percore::thread_cpu_time();
    let t0 = Instant::now();
    body.await;
    let wall = t0.elapsed();
    let (u1, s1) = percore::thread_cpu_time();
    Sample {
        wall,
        user: u1.saturating_sub(u0),
        system: s1.saturating_sub(s0),
    }
}

fn ns_per(d: Duration, ops: u64) -> f64 {
    d.as_nanos() as f64 / ops as f64
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let allowed = crate::serve::allowed_cpus();
    let cpu = args.cpu.unwrap_or(allowed[0]);
    if !allowed.contains(&cpu) {
        let list: Vec<String> = allowed.iter().map(usize::to_string).collect();
        anyhow::bail!("--cpu {cpu}: this process may use CPUs {}", list.join(","));
    }
    let runtime = percore::Runtime::builder()
        .cpus([cpu])
        .build()
        .context("building the runtime")?;
    let ops = args.ops;
    type CaseFuture = Pin<Box<dyn Future<Output = ()>>>;
    type Case = (&'static str, fn(u64) -> CaseFuture);
    let cases: [Case; 6] = [
        ("ring nop round trip", |n| {
            Box::pin(async move {
                for _ in 0..n {
                    percore::ops::nop().await.expect("nop");
                }
            })
        }),
        ("spawn + join empty task", |n| {
            Box::pin(async move {
                for _ in 0..n {
                    percore::spawn(async {}).await.expect("join");
                }
            })
        }),
        ("yield round trip", |n| {
            Box::pin(async move {
                for _ in 0..n {
                    percore::yield_now().await;
                }
            })
        }),
        ("channel ping-pong (one core)", |n| {
            Box::pin(async move {
                let (ping_tx, ping_rx) = percore::sync::channel::bounded::<u64>(1);
                let (pong_tx, pong_rx) = percore::sync::channel::bounded::<u64>(1);
                let echo = percore::spawn(async move {
                    while let Some(v) = ping_rx.recv().await {
                        if pong_tx.send(v).await.is_err() {
                            break;
                        }
                    }
                });
                for i in 0..n {
                    ping_tx.send(i).await.expect("send");
                    pong_rx.recv().await.expect("recv");
                }
                drop(ping_tx);
                echo.await.expect("echo task");
            })
        }),
        ("timer insert + cancel", |n| {
            Box::pin(async move {
                for _ in 0..n {
                    // Poll once so the timer is really in the wheel, then drop (cancel) it.
                    let mut s = std::pin::pin!(percore::time::sleep(Duration::from_secs(3600)));
                    std::future::poll_fn(|cx| {
                        assert!(s.as_mut().poll(cx).is_pending());
                        std::task::Poll::Ready(())
                    })
                    .await;
                }
            })
        }),
        ("timer fire (1 us sleep)", |n| {
            Box::pin(async move {
                for _ in 0..n / 20 {
                    percore::time::sleep(Duration::from_micros(1)).await;
                }
            })
        }),
    ];
    println!(
        "percore engine-bench: engine self-benchmark, {ops} ops x {} rounds, core on CPU {}",
        args.rounds, cpu
    );
    let features = runtime
        .run(|_| async { percore::ring_features() })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(f) = features.first() {
        println!("ring: {f}");
    }
    println!(
        "{:<34} {:>12} {:>12} {:>12}",
        "case", "ns/op wall", "ns/op user", "ns/op sys"
    );
    for (name, case) in cases {
        let mut samples: Vec<Sample> = (0..args.rounds)
            .map(|_| {
                let out = runtime
                    .run(|_| async move { measure(case(ops)).await })
                    .map_err(|e| anyhow::anyhow!("{e}"));
                out.map(|mut v| v.remove(0))
            })
            .collect::<anyhow::Result<_>>()?;
        samples.sort_by_key(|s| s.wall);
        let m = &samples[samples.len() / 2];
        // The fire case runs 1/20 of the operations (each one sleeps in the kernel).
        let done = if name.starts_with("timer fire") {
            ops / 20
        } else {
            ops
        };
        println!(
            "{name:<34} {:>12.1} {:>12.1} {:>12.1}",
            ns_per(m.wall, done),
            ns_per(m.user, done),
            ns_per(m.system, done)
        );
    }
    cross_core(&args, cpu, &allowed)
}

/// Round trips of a message between two pinned cores over cross-core channels: `cpu` and the
/// next CPU `allowed`.
fn cross_core(args: &BenchArgs, cpu: usize, allowed: &[usize]) -> anyhow::Result<()> {
    let Some(second) = second_cpu(cpu, allowed) else {
        println!("cross-core round trip: skipped (one CPU)");
        return Ok(());
    };
    let runtime = percore::Runtime::builder()
        .cpus([cpu, second])
        .build()
        .context("building the two-core runtime")?;
    let n = (args.ops / 20).max(1000);
    let (to_b, from_a) = percore::cross::channel::bounded::<u64>(1);
    let (to_a, from_b) = percore::cross::channel::bounded::<u64>(1);
    let side_a = std::sync::Mutex::new(Some((to_b, from_b)));
    let side_b = std::sync::Mutex::new(Some((to_a, from_a)));
    let results = runtime
        .run(|core| {
            let a = if core.index == 0 {
                side_a.lock().expect("side a").take()
            } else {
                None
            };
            let b = if core.index == 1 {
                side_b.lock().expect("side b").take()
            } else {
                None
            };
            async move {
                if let Some((to_b, from_b)) = a {
                    let t0 = Instant::now();
                    for i in 0..n {
                        to_b.send(i).await.expect("send");
                        from_b.recv().await.expect("recv");
                    }
                    return Some(t0.elapsed());
                }
                if let Some((to_a, from_a)) = b {
                    while let Some(v) = from_a.recv().await {
                        if to_a.send(v).await.is_err() {
                            break;
                        }
                    }
                }
                None
            }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(Some(wall)) = results.first() {
        println!(
            "{:<34} {:>12.1}   (CPUs {} and {})",
            "cross-core round trip",
            ns_per(*wall, n),
            cpu,
            second
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::second_cpu;

    #[test]
    fn the_second_core_is_the_next_cpu_this_process_may_use() {
        assert_eq!(second_cpu(0, &[0, 1]), Some(1));
        assert_eq!(second_cpu(1, &[0, 1]), Some(0));
        assert_eq!(second_cpu(0, &[0]), None);
        // A cpuset of CPUs 4 and 5 on a bigger machine (the old `(cpu + 1) % count` gave CPU
        // 0 for 5, and 1 for 4: neither allowed).
        assert_eq!(second_cpu(4, &[4, 5]), Some(5));
        assert_eq!(second_cpu(5, &[4, 5]), Some(4));
        // Gaps: 2, 5, 7.
        assert_eq!(second_cpu(2, &[2, 5, 7]), Some(5));
        assert_eq!(second_cpu(5, &[2, 5, 7]), Some(7));
        assert_eq!(second_cpu(7, &[2, 5, 7]), Some(2));
    }
}
