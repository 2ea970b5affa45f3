//! A pool survives limits at the edge and user code that panics: `Duration::MAX` for every
//! timeout means "never" (no overflow), and a connection whose `Drop` panics while the pool
//! closes it does not take its slot with it.

mod common;

use std::cell::Cell;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use common::{connect, round_trip, Conn, EchoServer};
use percore_pool::Pool;

/// `Duration::MAX` as checkout timeout, idle timeout and maximum lifetime; checkouts and
/// returns work, including one that has to wait.
#[test]
fn duration_max_limits_mean_never() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let pool = Pool::builder(1)
            .checkout_timeout(Duration::MAX)
            .idle_timeout(Duration::MAX)
            .max_lifetime(Duration::MAX)
            .build(move || connect(addr));
        for i in 0..3 {
            let mut conn = pool.get().await.unwrap();
            round_trip(&mut conn, format!("round {i}\n").as_bytes())
                .await
                .unwrap();
            conn.release();
        }
        let held = pool.get().await.unwrap();
        let p = pool.clone();
        let waiter = percore_engine::spawn(async move { p.get().await.map(|conn| conn.release()) });
        while pool.stats().waiting == 0 {
            percore_engine::yield_now().await;
        }
        held.release();
        waiter.await.unwrap().unwrap();
        assert_eq!(pool.reap(), 0);
        let stats = pool.stats();
        assert_eq!((stats.created, stats.checkouts, stats.idle), (1, 5, 1));
        assert_eq!((stats.discarded, stats.timeouts), (0, 0));
    });
}

/// A real connection whose `Drop` panics once armed (a buggy client library).
struct PanicOnDrop {
    conn: Conn,
    armed: Rc<Cell<bool>>,
}

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if self.armed.replace(false) {
            panic!("the connection's Drop panics");
        }
    }
}

/// One slot; its connection is discarded (marked broken, then surplus) and its `Drop`
/// panics each time. The panic reaches the caller, and the slot is free again.
#[test]
fn a_connection_whose_drop_panics_keeps_no_slot() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let armed = Rc::new(Cell::new(false));
        let made = armed.clone();
        let pool = Pool::builder(1)
            .max_idle(0)
            .checkout_timeout(Duration::from_secs(5))
            .build(move || {
                let armed = made.clone();
                async move {
                    Ok::<_, io::Error>(PanicOnDrop {
                        conn: connect(addr).await?,
                        armed,
                    })
                }
            });

        let mut conn = pool.get().await.unwrap();
        round_trip(&mut conn.conn, b"broken\n").await.unwrap();
        conn.mark_broken();
        armed.set(true);
        assert!(catch_unwind(AssertUnwindSafe(|| drop(conn))).is_err());

        // Free again (no timeout); this one is closed as surplus (max_idle 0).
        let mut conn = pool.get().await.expect("the slot was freed");
        round_trip(&mut conn.conn, b"surplus\n").await.unwrap();
        armed.set(true);
        assert!(catch_unwind(AssertUnwindSafe(|| conn.release())).is_err());

        let mut conn = pool.get().await.expect("the slot was freed");
        round_trip(&mut conn.conn, b"fine\n").await.unwrap();
        conn.release();
        let stats = pool.stats();
        assert_eq!((stats.in_use, stats.pending, stats.idle), (0, 0, 0));
        assert_eq!((stats.created, stats.discarded), (3, 3));
    });
}
