//! The pool against percore's echo service on another thread: reuse, the hard maximum,
//! `max_idle`, discarding on failure (Err, panic, cancellation, `mark_broken`), idle expiry
//! (on checkouts and returns, and by `maintain`) and maximum lifetime, `detach`. Closing is in
//! `pool_close.rs`.

mod common;

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::{connect, round_trip, Conn, EchoServer};
use percore_engine::time::sleep;
use percore_pool::Pool;

fn echo_pool(server: &EchoServer, max: usize) -> Pool<Conn> {
    let addr = server.addr;
    Pool::builder(max).build(move || connect(addr))
}

#[test]
fn sequential_checkouts_reuse_one_connection() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let pool = echo_pool(&server, 4);
        for i in 0..50 {
            let mut conn = pool.get().await.unwrap();
            round_trip(&mut conn, format!("line {i}\n").as_bytes())
                .await
                .unwrap();
            conn.release();
        }
        let stats = pool.stats();
        assert_eq!((stats.created, stats.checkouts, stats.idle), (1, 50, 1));
        assert_eq!((stats.in_use, stats.pending, stats.waiting), (0, 0, 0));
    });
}

#[test]
fn concurrent_users_never_exceed_the_maximum() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let pool = echo_pool(&server, 3);
        let peak = Rc::new(Cell::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let (pool, peak) = (pool.clone(), peak.clone());
                percore_engine::spawn(async move {
                    for i in 0..20 {
                        let mut conn = pool.get().await.unwrap();
                        let s = pool.stats();
                        peak.set(peak.get().max(s.in_use + s.idle + s.pending));
                        round_trip(&mut conn, format!("{task}.{i}\n").as_bytes())
                            .await
                            .unwrap();
                        conn.release();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = pool.stats();
        assert!(peak.get() <= 3, "peak {} connections", peak.get());
        assert_eq!(stats.created, 3);
        assert_eq!(stats.checkouts, 160);
        assert_eq!((stats.idle, stats.in_use, stats.waiting), (3, 0, 0));
    });
}

#[test]
fn returns_beyond_max_idle_are_closed() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let pool = Pool::builder(4).max_idle(1).build(move || connect(addr));
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.get().await.unwrap());
        }
        assert_eq!(pool.stats().created, 4);
        drop(held);
        let stats = pool.stats();
        assert_eq!((stats.idle, stats.discarded, stats.broken), (1, 3, 0));
    });
}

#[test]
fn failed_holders_lose_their_connection() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let pool = echo_pool(&server, 2);

        // `with` returning Err.
        let failed: io::Result<()> = pool
            .with(async |conn: &mut Conn| {
                round_trip(conn, b"x\n").await?;
                Err(io::Error::other("the holder gave up"))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(pool.stats().broken, 1);

        // `with` returning Ok keeps it.
        pool.with(async |conn: &mut Conn| round_trip(conn, b"ok\n").await)
            .await
            .unwrap();
        assert_eq!((pool.stats().broken, pool.stats().idle), (1, 1));

        // A panicking holder (the guard is dropped while unwinding).
        let p = pool.clone();
        let panicked = percore_engine::spawn(async move {
            let _conn = p.get().await.unwrap();
            panic!("holder panics");
        })
        .await;
        assert!(panicked.is_err());
        assert_eq!(pool.stats().broken, 2);

        // `with` cancelled half-way.
        let cancelled = percore_engine::time::timeout(
            Duration::from_millis(20),
            pool.with(async |_conn: &mut Conn| {
                sleep(Duration::from_secs(10)).await;
                Ok::<_, io::Error>(())
            }),
        )
        .await;
        assert!(cancelled.is_err());
        assert_eq!(pool.stats().broken, 3);

        // An explicit mark.
        let mut conn = pool.get().await.unwrap();
        conn.mark_broken();
        assert!(conn.is_broken());
        drop(conn);
        let stats = pool.stats();
        assert_eq!((stats.broken, stats.discarded), (4, 4));
        assert_eq!((stats.in_use, stats.idle), (0, 0));
        assert_eq!(stats.created, 4); // the panicking holder reused the idle one
    });
}

#[test]
fn idle_connections_expire() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let pool = Pool::builder(2)
            .idle_timeout(Duration::from_millis(30))
            .build(move || connect(addr));
        drop(pool.get().await.unwrap());
        sleep(Duration::from_millis(50)).await;
        let mut conn = pool.get().await.unwrap(); // the idle one expired: a new one
        round_trip(&mut conn, b"fresh\n").await.unwrap();
        conn.release();
        assert_eq!((pool.stats().created, pool.stats().expired), (2, 1));

        // A pool left alone: `maintain` reaps, and returns once the pool closes.
        let p = pool.clone();
        let maintainer =
            percore_engine::spawn(async move { p.maintain(Duration::from_millis(10)).await });
        while pool.stats().idle > 0 {
            sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.stats().expired, 2);
        pool.close();
        maintainer.await.unwrap();
    });
}

/// A burst makes three connections; then one user at a time, past the idle timeout, keeps
/// taking the newest. The two older ones expire on those checkouts and returns, with no reap.
#[test]
fn idle_connections_expire_in_a_pool_in_use() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let idle_timeout = Duration::from_millis(40);
        let pool = Pool::builder(4)
            .idle_timeout(idle_timeout)
            .build(move || connect(addr));
        let burst = vec![
            pool.get().await.unwrap(),
            pool.get().await.unwrap(),
            pool.get().await.unwrap(),
        ];
        burst.into_iter().for_each(|conn| conn.release());
        assert_eq!((pool.stats().created, pool.stats().idle), (3, 3));
        let start = std::time::Instant::now();
        let mut i = 0;
        while start.elapsed() < idle_timeout * 2 {
            let mut conn = pool.get().await.unwrap();
            round_trip(&mut conn, format!("one at a time {i}\n").as_bytes())
                .await
                .unwrap();
            conn.release();
            sleep(idle_timeout / 4).await;
            i += 1;
        }
        let stats = pool.stats();
        assert_eq!(
            (stats.expired, stats.idle, stats.created),
            (2, 1, 3),
            "{stats:?}"
        );
    });
}

#[test]
fn old_connections_are_retired() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let pool = Pool::builder(2)
            .max_lifetime(Duration::from_millis(30))
            .build(move || connect(addr));
        let conn = pool.get().await.unwrap();
        sleep(Duration::from_millis(50)).await;
        drop(conn); // too old to go back
        assert_eq!((pool.stats().idle, pool.stats().expired), (0, 1));

        drop(pool.get().await.unwrap());
        sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.reap(), 1);
        assert_eq!(pool.stats().expired, 2);
    });
}

#[test]
fn detached_connections_leave_the_pool() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let pool = echo_pool(&server, 1);
        let mut conn = pool.get().await.unwrap().detach();
        assert_eq!((pool.stats().in_use, pool.stats().idle), (0, 0));
        let mut other = pool.get().await.unwrap(); // the slot was freed
        round_trip(&mut conn, b"mine\n").await.unwrap();
        round_trip(&mut other, b"pooled\n").await.unwrap();
        other.release();
        assert_eq!(pool.stats().created, 2);
    });
}
