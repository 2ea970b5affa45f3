//! 100,000 checkouts against the echo server, some with a round trip, some discarded as
//! broken (so connections are closed and made again), alone and contended; afterwards the
//! process has exactly the fds it had before. Its own test binary: fds are process-wide.

mod common;

use std::time::Duration;

use common::{connect, round_trip, settle_fds, EchoServer};
use percore_pool::Pool;

const CHECKOUTS: usize = 100_000;
const TASKS: usize = 8;

#[test]
fn no_fd_leak_after_100_000_checkouts() {
    percore_engine::block_on(async {
        let before = percore_engine::open_fd_count().unwrap();
        let server = EchoServer::start();
        let addr = server.addr;
        let pool = Pool::builder(4)
            .max_idle(2)
            .checkout_timeout(Duration::from_secs(10))
            .build(move || connect(addr));

        // Half uncontended: one task.
        for i in 0..CHECKOUTS / 2 {
            let mut conn = pool.get().await.unwrap();
            if i % 100 == 0 {
                round_trip(&mut conn, format!("alone {i}\n").as_bytes())
                    .await
                    .unwrap();
            }
            if i % 1000 == 999 {
                conn.mark_broken();
            }
            conn.release(); // the exchange is complete (a broken one is still discarded)
        }
        // Half contended: 8 tasks over 4 connections, yielding while they hold one.
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let pool = pool.clone();
                percore_engine::spawn(async move {
                    for i in 0..CHECKOUTS / 2 / TASKS {
                        let mut conn = pool.get().await.unwrap();
                        if i % 250 == 0 {
                            round_trip(&mut conn, format!("{task}.{i}\n").as_bytes())
                                .await
                                .unwrap();
                        } else {
                            percore_engine::yield_now().await;
                        }
                        if i % 2000 == 1999 {
                            conn.mark_broken();
                        }
                        conn.release();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = pool.stats();
        assert_eq!(stats.checkouts, CHECKOUTS as u64);
        assert!(stats.created > 50 && stats.broken > 50, "{stats:?}");
        assert_eq!(stats.created - stats.discarded, stats.idle as u64);
        pool.close();
        drop(pool);
        server.stop().await;
        let after = settle_fds(before).await;
        assert_eq!(after, before, "fds open before {before}, after {after}");
    });
}
