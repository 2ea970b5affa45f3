//! The pool against a server that dies mid-use: connections it dropped are discarded and
//! replaced (by their holders' failures, or by the health check before anyone sees them);
//! once its listener is gone, checkouts fail with the factory's error and leak no slot.

mod common;

use std::io;
use std::time::Duration;

use common::{connect, round_trip, Conn, DyingServer};
use percore_pool::{Pool, PoolError};

/// Round trips from `tasks` concurrent users, each through `with` (an `Err` discards).
async fn use_pool(pool: &Pool<Conn>, tasks: usize, label: &str) -> Vec<io::Result<()>> {
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let pool = pool.clone();
            let line = format!("{label} {task}\n");
            percore_engine::spawn(async move {
                pool.with(async |conn: &mut Conn| round_trip(conn, line.as_bytes()).await)
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

#[test]
fn broken_connections_are_discarded_and_replaced() {
    percore_engine::block_on(async {
        let server = DyingServer::start();
        let addr = server.addr;
        let pool = Pool::builder(3).build(move || connect(addr));
        assert!(use_pool(&pool, 3, "before").await.iter().all(Result::is_ok));
        assert_eq!((pool.stats().created, pool.stats().idle), (3, 3));

        server.kill_connections();
        let failed = use_pool(&pool, 3, "during").await;
        assert!(failed.iter().all(Result::is_err), "{failed:?}");
        let stats = pool.stats();
        assert_eq!((stats.broken, stats.idle, stats.in_use), (3, 0, 0));

        assert!(use_pool(&pool, 3, "after").await.iter().all(Result::is_ok));
        let stats = pool.stats();
        assert_eq!((stats.created, stats.idle, stats.discarded), (6, 3, 3));
        assert_eq!(server.connections(), 3);
    });
}

#[test]
fn health_check_replaces_dead_idle_connections_unseen() {
    percore_engine::block_on(async {
        let server = DyingServer::start();
        let addr = server.addr;
        let pool = Pool::builder(2)
            .health_check(|mut conn: Conn| async move {
                round_trip(&mut conn, b"ping\n").await?;
                Ok(conn)
            })
            .build(move || connect(addr));
        assert!(use_pool(&pool, 2, "warm").await.iter().all(Result::is_ok));
        server.kill_connections();
        // Every checkout finds a dead idle connection first: checked, discarded, replaced.
        assert!(use_pool(&pool, 2, "after").await.iter().all(Result::is_ok));
        let stats = pool.stats();
        assert_eq!((stats.broken, stats.created, stats.idle), (2, 4, 2));
    });
}

#[test]
fn a_dead_listener_fails_checkouts_without_leaking_slots() {
    percore_engine::block_on(async {
        let mut server = DyingServer::start();
        let addr = server.addr;
        let pool = Pool::builder(2)
            .checkout_timeout(Duration::from_secs(5))
            .build(move || connect(addr));
        assert!(use_pool(&pool, 2, "warm").await.iter().all(Result::is_ok));
        server.die().await;
        let failed = use_pool(&pool, 2, "dead").await;
        assert!(failed.iter().all(Result::is_err));
        for _ in 0..4 {
            match pool.get().await {
                Err(PoolError::Create(e)) => {
                    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused)
                }
                other => panic!("expected a refused connection, got {other:?}"),
            }
        }
        let stats = pool.stats();
        assert_eq!((stats.create_failures, stats.broken), (4, 2));
        assert_eq!((stats.pending, stats.in_use, stats.idle), (0, 0, 0));
    });
}
