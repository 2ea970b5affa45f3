//! Engine micro-benchmarks, side by side: percore, glommio 0.9 (`LocalExecutor`) and tokio
//! (`current_thread` runtime + `LocalSet`, tasks via `spawn_local`).
//!
//! Every case is written the same way in the three runtimes and named `<case>/<runtime>`:
//!
//! - `ring_nop/percore`: one io_uring `NOP` round trip, the floor of every percore op.
//! - `spawn_join/*`: spawn an empty task and await its handle.
//! - `yield/*`: one yield round trip of a single task.
//! - `channel_pingpong/*`: one core, two tasks, a value goes out over a bounded(1) channel and
//!   comes back over another; one round trip per iteration.
//! - `timer_insert_cancel/*`: create a one-hour sleep, poll it once so it registers, drop it.
//! - `timer_fire/*`: a 1 µs sleep, awaited (so: timer granularity plus one park and wake-up).
//! - `cross_core_rtt/*`: two executors, on CPU 0 and CPU 1; a value goes A -> B -> A over two
//!   bounded(1) cross-thread channels; one round trip per iteration.
//!
//! # How it measures
//!
//! Each benchmark starts its runtime thread(s) once ([`Harness`]) and keeps them for all of
//! criterion's warm-up and samples. An `iter_custom` call sends the iteration count to the
//! runtime; the timed loop runs inside the runtime (`block_on` / `LocalExecutor::run` /
//! `LocalSet::block_on`) and reports its own `Instant` span back, so neither the start-up nor
//! the hand-off between criterion's thread and the runtime is timed. Per-sample set-up (the
//! channels and the echo task of `channel_pingpong`) happens inside the runtime before the
//! clock starts. Single-core cases run on CPU 0; the cross-core case uses CPUs 0 and 1.
//!
//! The timed loop always runs in a spawned task (`spawn` / `spawn_local`), never in the
//! `block_on` future itself: glommio's `LocalExecutor::run` spawns its future as a task
//! anyway, while percore and tokio poll the `block_on` future on a separate path (percore
//! goes through a whole loop turn for each wake-up of it: a `yield` there costs ~80 ns
//! against ~25 ns in a task), and application code lives in tasks.
//!
//! Run: `cargo bench -p percore-benches --bench engine` (filter with a name, e.g.
//! `-- channel_pingpong`). These are wall-clock figures on a shared machine: compare the
//! runtimes within one run, never absolute numbers across runs (docs/BENCHMARKING.md).

// criterion_group!/criterion_main! generate undocumented public items.
#![allow(missing_docs)]

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::{mpsc, Mutex};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};

/// The CPU of every single-core case, and of side A in `cross_core_rtt`.
const CPU_A: usize = 0;
/// Side B of `cross_core_rtt`.
const CPU_B: usize = 1;

/// Long enough never to fire while the benchmark runs.
const HOUR: Duration = Duration::from_secs(3600);

/// `timer_fire`'s sleep: zero would short-circuit in some runtimes.
const TICK: Duration = Duration::from_micros(1);

// ---------------------------------------------------------------------------------------------
// Harness: runtime threads that run timed loops on request.
// ---------------------------------------------------------------------------------------------

/// Runtime thread(s) kept for one benchmark: [`Harness::time`] runs one timed loop of `iters`
/// iterations inside the runtime and returns how long it took.
struct Harness {
    commands: Option<mpsc::Sender<u64>>,
    results: mpsc::Receiver<Duration>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// The runtime's end of a [`Harness`].
struct Server {
    commands: mpsc::Receiver<u64>,
    results: mpsc::Sender<Duration>,
}

impl Harness {
    /// Starts the runtime thread(s) with `start`, which hands the [`Server`] to the timing side.
    fn start(start: impl FnOnce(Server) -> Vec<thread::JoinHandle<()>>) -> Harness {
        let (commands, command_rx) = mpsc::channel();
        let (result_tx, results) = mpsc::channel();
        let threads = start(Server {
            commands: command_rx,
            results: result_tx,
        });
        Harness {
            commands: Some(commands),
            results,
            threads,
        }
    }

    /// One timed loop of `iters` iterations.
    fn time(&self, iters: u64) -> Duration {
        self.commands
            .as_ref()
            .and_then(|c| c.send(iters).ok())
            .expect("the runtime thread is gone");
        self.results.recv().expect("the runtime thread died")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Closing the command channel ends `Server::serve`, then the runtime.
        self.commands.take();
        for t in self.threads.drain(..) {
            if t.join().is_err() && !thread::panicking() {
                panic!("a runtime thread panicked");
            }
        }
    }
}

impl Server {
    /// Runs `body(iters)` for each request until the [`Harness`] is dropped. `body` returns the
    /// time of its own timed loop.
    async fn serve<F, Fut>(self, mut body: F)
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = Duration>,
    {
        // A blocking receive: between samples this runtime has nothing else to run (the other
        // side of `cross_core_rtt` waits on its own thread).
        while let Ok(iters) = self.commands.recv() {
            let took = body(iters).await;
            if self.results.send(took).is_err() {
                break;
            }
        }
    }
}

/// Spawns a named thread pinned to `cpu`.
fn spawn_pinned(
    name: &str,
    cpu: usize,
    f: impl FnOnce() + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            assert!(
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu }),
                "cannot pin to CPU {cpu}"
            );
            f()
        })
        .expect("spawning a runtime thread")
}

/// Runs `fut` as a percore task and waits for its output.
async fn percore_task<T: 'static>(fut: impl Future<Output = T> + 'static) -> T {
    percore_engine::spawn(fut).await.expect("timed task")
}

/// Runs `fut` as a glommio task and waits for its output.
async fn glommio_task<T: 'static>(fut: impl Future<Output = T> + 'static) -> T {
    glommio::spawn_local(fut).await
}

/// Runs `fut` as a tokio local task and waits for its output.
async fn tokio_task<T: 'static>(fut: impl Future<Output = T> + 'static) -> T {
    tokio::task::spawn_local(fut).await.expect("timed task")
}

/// Polls `fut` exactly once, with the calling task's context (so a runtime's own sleep finds
/// its core / reactor, which a hand poll with a no-op waker would not give it).
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

// ---------------------------------------------------------------------------------------------
// The three runtimes, single core (CPU 0).
// ---------------------------------------------------------------------------------------------

/// percore on CPU 0: `block_on` on a pinned thread. (`Runtime::builder().cpus([0]).run` would
/// also start the stats publisher, a periodic timer task neither peer has.)
fn percore_local<F, Fut>(mut body: F) -> Harness
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Duration> + 'static,
{
    Harness::start(|server| {
        vec![spawn_pinned("percore-bench", CPU_A, move || {
            percore_engine::block_on(server.serve(|iters| percore_task(body(iters))))
        })]
    })
}

/// A glommio executor on `cpu` (glommio pins its own thread through `Placement::Fixed`).
///
/// Locked memory: glommio 0.9 refuses to start only if RLIMIT_MEMLOCK is under 512 KiB; its
/// 10 MiB `io_memory` buffer registration may fail (then glommio logs a warning and goes on
/// without registered buffers, which none of these cases use). Here the limit is 8 MiB and the
/// bench runs as root with `CAP_IPC_LOCK`, so registration succeeds; it also starts with
/// `CAP_IPC_LOCK` dropped (checked with `setpriv --inh-caps=-ipc_lock`). So no setrlimit and
/// no builder options: every peer runs as shipped.
fn glommio_executor(cpu: usize) -> glommio::LocalExecutor {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
        .name("glommio-bench")
        .make()
        .expect("glommio executor (locked memory? see glommio_executor's docs)")
}

/// glommio on CPU 0.
fn glommio_local<F, Fut>(mut body: F) -> Harness
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Duration> + 'static,
{
    Harness::start(|server| {
        vec![thread::Builder::new()
            .name("glommio-bench".into())
            .spawn(move || {
                glommio_executor(CPU_A).run(server.serve(|iters| glommio_task(body(iters))))
            })
            .expect("spawning a runtime thread")]
    })
}

/// Runs `fut` on a fresh tokio `current_thread` runtime (I/O and time drivers on, as a server
/// has them) inside a `LocalSet`, on the calling thread.
fn tokio_run<Fut: Future>(fut: Fut) -> Fut::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio::task::LocalSet::new().block_on(&rt, fut)
}

/// tokio on CPU 0.
fn tokio_local<F, Fut>(mut body: F) -> Harness
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Duration> + 'static,
{
    Harness::start(|server| {
        vec![spawn_pinned("tokio-bench", CPU_A, move || {
            tokio_run(server.serve(|iters| tokio_task(body(iters))))
        })]
    })
}

/// Benchmarks `name` in `group`, starting its harness only if the benchmark is selected, and
/// stopping it before the next benchmark.
fn bench(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, start: impl FnOnce() -> Harness) {
    let mut start = Some(start);
    let mut harness = None;
    group.bench_function(name, |b| {
        let harness = harness.get_or_insert_with(|| (start.take().expect("started once"))());
        b.iter_custom(|iters| harness.time(iters));
    });
}

// ---------------------------------------------------------------------------------------------
// Cases.
// ---------------------------------------------------------------------------------------------

fn ring_nop(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_nop");
    // glommio and tokio have no public "submit a no-op and await it": glommio keeps its rings
    // private and tokio has no ring. This is percore's floor only.
    bench(&mut g, "percore", || {
        percore_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                percore_engine::ops::nop().await.expect("nop");
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn spawn_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_join");
    bench(&mut g, "percore", || {
        percore_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                percore_engine::spawn(async {}).await.expect("join");
            }
            start.elapsed()
        })
    });
    bench(&mut g, "glommio", || {
        glommio_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                glommio::spawn_local(async {}).await;
            }
            start.elapsed()
        })
    });
    bench(&mut g, "tokio", || {
        tokio_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                tokio::task::spawn_local(async {}).await.expect("join");
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn yield_once(c: &mut Criterion) {
    let mut g = c.benchmark_group("yield");
    bench(&mut g, "percore", || {
        percore_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                percore_engine::yield_now().await;
            }
            start.elapsed()
        })
    });
    // glommio's one-yield equivalent is `ExecutorProxy::yield_now`: wake the task, return
    // Pending once, exactly what percore's and tokio's `yield_now` do. `yield_if_needed` only
    // yields when the preemption timer has fired (almost never in a loop this short, so it
    // would time a flag check), and `yield_task_queue_now` yields the whole task queue to the
    // scheduler's queue selection, a different (heavier) operation.
    bench(&mut g, "glommio", || {
        glommio_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                glommio::executor().yield_now().await;
            }
            start.elapsed()
        })
    });
    bench(&mut g, "tokio", || {
        tokio_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                tokio::task::yield_now().await;
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn channel_pingpong(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel_pingpong");
    bench(&mut g, "percore", || {
        percore_local(|iters| async move {
            let (ping_tx, ping_rx) = percore_engine::sync::channel::bounded::<u64>(1);
            let (pong_tx, pong_rx) = percore_engine::sync::channel::bounded::<u64>(1);
            let echo = percore_engine::spawn(async move {
                while let Some(v) = ping_rx.recv().await {
                    if pong_tx.send(v).await.is_err() {
                        break;
                    }
                }
            });
            let start = Instant::now();
            for i in 0..iters {
                ping_tx.send(i).await.expect("echo alive");
                black_box(pong_rx.recv().await.expect("echo alive"));
            }
            let took = start.elapsed();
            drop(ping_tx);
            echo.await.expect("echo task");
            took
        })
    });
    bench(&mut g, "glommio", || {
        glommio_local(|iters| async move {
            let (ping_tx, ping_rx) = glommio::channels::local_channel::new_bounded::<u64>(1);
            let (pong_tx, pong_rx) = glommio::channels::local_channel::new_bounded::<u64>(1);
            let echo = glommio::spawn_local(async move {
                while let Some(v) = ping_rx.recv().await {
                    if pong_tx.send(v).await.is_err() {
                        break;
                    }
                }
            });
            let start = Instant::now();
            for i in 0..iters {
                ping_tx.send(i).await.expect("echo alive");
                black_box(pong_rx.recv().await.expect("echo alive"));
            }
            let took = start.elapsed();
            drop(ping_tx);
            echo.await;
            took
        })
    });
    bench(&mut g, "tokio", || {
        tokio_local(|iters| async move {
            let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u64>(1);
            let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<u64>(1);
            let echo = tokio::task::spawn_local(async move {
                while let Some(v) = ping_rx.recv().await {
                    if pong_tx.send(v).await.is_err() {
                        break;
                    }
                }
            });
            let start = Instant::now();
            for i in 0..iters {
                ping_tx.send(i).await.expect("echo alive");
                black_box(pong_rx.recv().await.expect("echo alive"));
            }
            let took = start.elapsed();
            drop(ping_tx);
            echo.await.expect("echo task");
            took
        })
    });
    g.finish();
}

fn timer_insert_cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer_insert_cancel");
    bench(&mut g, "percore", || {
        percore_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                let sleep = pin!(percore_engine::time::sleep(HOUR));
                assert!(poll_once(sleep).await.is_pending());
            }
            start.elapsed()
        })
    });
    bench(&mut g, "glommio", || {
        glommio_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                let sleep = pin!(glommio::timer::sleep(HOUR));
                assert!(poll_once(sleep).await.is_pending());
            }
            start.elapsed()
        })
    });
    bench(&mut g, "tokio", || {
        tokio_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                let sleep = pin!(tokio::time::sleep(HOUR));
                assert!(poll_once(sleep).await.is_pending());
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn timer_fire(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer_fire");
    bench(&mut g, "percore", || {
        percore_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                percore_engine::time::sleep(TICK).await;
            }
            start.elapsed()
        })
    });
    bench(&mut g, "glommio", || {
        glommio_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                glommio::timer::sleep(TICK).await;
            }
            start.elapsed()
        })
    });
    // tokio's timer wheel has 1 ms resolution: a 1 µs sleep waits for the next millisecond.
    bench(&mut g, "tokio", || {
        tokio_local(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                tokio::time::sleep(TICK).await;
            }
            start.elapsed()
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Cross-core round trip: side A on CPU 0 runs the timed loop, side B on CPU 1 echoes.
// ---------------------------------------------------------------------------------------------

fn percore_cross() -> Harness {
    Harness::start(|server| {
        vec![thread::Builder::new()
            .name("percore-bench".into())
            .spawn(move || {
                let (ping_tx, ping_rx) = percore_engine::cross::channel::bounded::<u64>(1);
                let (pong_tx, pong_rx) = percore_engine::cross::channel::bounded::<u64>(1);
                // `run`'s closure is `Fn` and shared by both cores: each takes its side once.
                let side_a = Mutex::new(Some((server, ping_tx, pong_rx)));
                let side_b = Mutex::new(Some((ping_rx, pong_tx)));
                percore_engine::Runtime::builder()
                    .cpus([CPU_A, CPU_B])
                    .build()
                    .expect("percore runtime")
                    .run(|core| {
                        let a = match core.index {
                            0 => side_a.lock().expect("side lock").take(),
                            _ => None,
                        };
                        let b = match core.index {
                            1 => side_b.lock().expect("side lock").take(),
                            _ => None,
                        };
                        async move {
                            if let Some((server, tx, rx)) = a {
                                let ends = Rc::new((tx, rx));
                                server
                                    .serve(|iters| {
                                        let ends = ends.clone();
                                        percore_task(async move {
                                            let (tx, rx) = &*ends;
                                            let start = Instant::now();
                                            for i in 0..iters {
                                                tx.send(i).await.expect("side B alive");
                                                black_box(rx.recv().await.expect("side B alive"));
                                            }
                                            start.elapsed()
                                        })
                                    })
                                    .await;
                            } else if let Some((rx, tx)) = b {
                                while let Some(v) = rx.recv().await {
                                    if tx.send(v).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    })
                    .expect("percore cores");
            })
            .expect("spawning the runtime thread")]
    })
}

fn glommio_cross() -> Harness {
    let (ping_tx, ping_rx) = glommio::channels::shared_channel::new_bounded::<u64>(1);
    let (pong_tx, pong_rx) = glommio::channels::shared_channel::new_bounded::<u64>(1);
    Harness::start(|server| {
        let a = thread::Builder::new()
            .name("glommio-bench-a".into())
            .spawn(move || {
                glommio_executor(CPU_A).run(async move {
                    let ends = Rc::new((ping_tx.connect().await, pong_rx.connect().await));
                    server
                        .serve(|iters| {
                            let ends = ends.clone();
                            glommio_task(async move {
                                let (tx, rx) = &*ends;
                                let start = Instant::now();
                                for i in 0..iters {
                                    tx.send(i).await.expect("side B alive");
                                    black_box(rx.recv().await.expect("side B alive"));
                                }
                                start.elapsed()
                            })
                        })
                        .await;
                })
            })
            .expect("spawning a runtime thread");
        let b = thread::Builder::new()
            .name("glommio-bench-b".into())
            .spawn(move || {
                glommio_executor(CPU_B).run(async move {
                    let rx = ping_rx.connect().await;
                    let tx = pong_tx.connect().await;
                    while let Some(v) = rx.recv().await {
                        if tx.send(v).await.is_err() {
                            break;
                        }
                    }
                })
            })
            .expect("spawning a runtime thread");
        vec![a, b]
    })
}

fn tokio_cross() -> Harness {
    let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let (pong_tx, pong_rx) = tokio::sync::mpsc::channel::<u64>(1);
    Harness::start(|server| {
        let a = spawn_pinned("tokio-bench-a", CPU_A, move || {
            tokio_run(async move {
                // tokio's `recv` takes `&mut self`: each timed loop takes the receiver out of
                // the cell (outside the clock) and puts it back.
                let ends = Rc::new((ping_tx, Cell::new(Some(pong_rx))));
                server
                    .serve(|iters| {
                        let ends = ends.clone();
                        tokio_task(async move {
                            let (tx, rx) = &*ends;
                            let mut pong_rx = rx.take().expect("one timed loop at a time");
                            let start = Instant::now();
                            for i in 0..iters {
                                tx.send(i).await.expect("side B alive");
                                black_box(pong_rx.recv().await.expect("side B alive"));
                            }
                            let took = start.elapsed();
                            rx.set(Some(pong_rx));
                            took
                        })
                    })
                    .await;
            })
        });
        let b = spawn_pinned("tokio-bench-b", CPU_B, move || {
            tokio_run(async move {
                while let Some(v) = ping_rx.recv().await {
                    if pong_tx.send(v).await.is_err() {
                        break;
                    }
                }
            })
        });
        vec![a, b]
    })
}

fn cross_core_rtt(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_core_rtt");
    bench(&mut g, "percore", percore_cross);
    bench(&mut g, "glommio", glommio_cross);
    bench(&mut g, "tokio", tokio_cross);
    g.finish();
}

criterion_group!(
    benches,
    ring_nop,
    spawn_join,
    yield_once,
    channel_pingpong,
    timer_insert_cancel,
    timer_fire,
    cross_core_rtt
);
criterion_main!(benches);
