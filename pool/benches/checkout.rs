//! Checkout + return of a pooled connection: percore-pool beside deadpool and bb8 on tokio's
//! current-thread runtime.
//!
//! The connection is a trivial in-memory value, so the figures are the pools' own cost (and,
//! when contended, the executor's task switches). Cases:
//!
//! - `checkout/uncontended/*`: one task checks out and returns a connection in a loop.
//! - `checkout/contended_16x4/*`: 16 tasks share 4 connections; each holds its connection
//!   across one yield, so most checkouts queue. Time per checkout.
//!
//! Rows: `percore` (percore-pool on percore's executor), `percore_on_tokio` (the same pool on
//! tokio's current-thread runtime: the pool alone, without the executor difference), then
//! `deadpool` and `bb8` on tokio. Every pool has its defaults except the size: percore-pool a
//! 30 s checkout timeout (armed only when a checkout waits), deadpool no timeout and a no-op
//! `recycle` on every checkout, bb8 its 30 s connection timeout and `test_on_check_out` off.
//! The tokio tasks are spawned on a `LocalSet` (all three pools, so the same spawn path).
//!
//! `taskset -c 1 cargo bench -p percore-pool --bench checkout`

// criterion_group!/criterion_main! generate undocumented public items.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

const TASKS: u64 = 16;
const SHARED: usize = 4;

/// The in-memory "connection".
struct Conn(u64);

fn percore_pool(max: usize) -> percore_pool::Pool<Conn> {
    percore_pool::Pool::builder(max).build(|| async { Ok(Conn(7)) })
}

struct DeadpoolManager;

impl deadpool::managed::Manager for DeadpoolManager {
    type Type = Conn;
    type Error = Infallible;

    async fn create(&self) -> Result<Conn, Infallible> {
        Ok(Conn(7))
    }

    async fn recycle(
        &self,
        _conn: &mut Conn,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

fn deadpool_pool(max: usize) -> deadpool::managed::Pool<DeadpoolManager> {
    deadpool::managed::Pool::builder(DeadpoolManager)
        .max_size(max)
        .build()
        .expect("deadpool without timeouts needs no runtime")
}

struct Bb8Manager;

impl bb8::ManageConnection for Bb8Manager {
    type Connection = Conn;
    type Error = Infallible;

    async fn connect(&self) -> Result<Conn, Infallible> {
        Ok(Conn(7))
    }

    async fn is_valid(&self, _conn: &mut Conn) -> Result<(), Infallible> {
        Ok(())
    }

    fn has_broken(&self, _conn: &mut Conn) -> bool {
        false
    }
}

async fn bb8_pool(max: u32) -> bb8::Pool<Bb8Manager> {
    bb8::Pool::builder()
        .max_size(max)
        .test_on_check_out(false)
        .build(Bb8Manager)
        .await
        .expect("bb8 pool")
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Checks out and returns `iters` times from one task; `get` is the pool's checkout.
macro_rules! uncontended {
    ($iters:expr, $get:expr) => {{
        drop($get); // warm: the connection exists
        let start = Instant::now();
        for _ in 0..$iters {
            let conn = $get;
            black_box(conn.0);
        }
        start.elapsed()
    }};
}

/// `TASKS` tasks, `per_task` checkouts each, holding across one yield; `spawn` starts a task
/// running the body, `join` awaits it, `yield_now` yields.
macro_rules! contended {
    ($iters:expr, $pool:expr, $spawn:path, $yield_now:path) => {{
        let per_task = $iters.div_ceil(TASKS);
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let pool = $pool.clone();
                $spawn(async move {
                    for _ in 0..per_task {
                        let conn = pool.get().await.expect("checkout");
                        $yield_now().await;
                        black_box(conn.0);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        start
            .elapsed()
            .mul_f64($iters as f64 / (per_task * TASKS) as f64)
    }};
}

fn on_local_set<F: std::future::Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    tokio::task::LocalSet::new().block_on(rt, f)
}

fn uncontended_checkout(c: &mut Criterion) {
    let rt = tokio_runtime();
    let mut group = c.benchmark_group("checkout/uncontended");
    group.bench_function("percore", |b| {
        b.iter_custom(|iters| {
            percore_engine::block_on(async {
                let pool = percore_pool(SHARED);
                uncontended!(iters, pool.get().await.expect("checkout"))
            })
        })
    });
    group.bench_function("percore_on_tokio", |b| {
        b.iter_custom(|iters| {
            on_local_set(&rt, async {
                let pool = percore_pool_untimed(SHARED);
                uncontended!(iters, pool.get().await.expect("checkout"))
            })
        })
    });
    group.bench_function("deadpool", |b| {
        b.iter_custom(|iters| {
            on_local_set(&rt, async {
                let pool = deadpool_pool(SHARED);
                uncontended!(iters, pool.get().await.expect("checkout"))
            })
        })
    });
    group.bench_function("bb8", |b| {
        b.iter_custom(|iters| {
            on_local_set(&rt, async {
                let pool = bb8_pool(SHARED as u32).await;
                uncontended!(iters, pool.get().await.expect("checkout"))
            })
        })
    });
    group.finish();
}

/// percore's timers live on a percore core; on tokio the pool runs without a checkout
/// timeout (it never waits uncontended, and a waiter would arm a percore timer).
fn percore_pool_untimed(max: usize) -> percore_pool::Pool<Conn> {
    percore_pool::Pool::builder(max)
        .checkout_timeout(None)
        .build(|| async { Ok(Conn(7)) })
}

fn contended_checkout(c: &mut Criterion) {
    let rt = tokio_runtime();
    let mut group = c.benchmark_group("checkout/contended_16x4");
    group.bench_function("percore", |b| {
        b.iter_custom(|iters| {
            percore_engine::block_on(async {
                let pool = percore_pool(SHARED);
                contended!(
                    iters,
                    pool,
                    percore_engine::spawn,
                    percore_engine::yield_now
                )
            })
        })
    });
    group.bench_function("percore_on_tokio", |b| {
        b.iter_custom(|iters| {
            on_local_set(&rt, async {
                let pool = percore_pool_untimed(SHARED);
                contended!(
                    iters,
                    pool,
                    tokio::task::spawn_local,
                    tokio::task::yield_now
                )
            })
        })
    });
    group.bench_function("deadpool", |b| {
        b.iter_custom(|iters| {
            on_local_set(&rt, async {
                let pool = deadpool_pool(SHARED);
                contended!(
                    iters,
                    pool,
                    tokio::task::spawn_local,
                    tokio::task::yield_now
                )
            })
        })
    });
    group.bench_function("bb8", |b| {
        b.iter_custom(|iters| {
            on_local_set(&rt, async {
                let pool = bb8_pool(SHARED as u32).await;
                contended!(
                    iters,
                    pool,
                    tokio::task::spawn_local,
                    tokio::task::yield_now
                )
            })
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = uncontended_checkout, contended_checkout
}
criterion_main!(benches);
