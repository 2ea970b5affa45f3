//! Checkout against a real echo server: timeouts, FIFO fairness (a connection handed to a
//! waiter stays its own, and idle ones kept for waiters stay within `max_idle`), cancel safety
//! of a waiter that was handed a slot, checkouts dropped while the factory or the health check
//! runs, factory and health-check failures.

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{connect, loopback, round_trip, Conn, EchoServer, MAX_LINE};
use percore_engine::time::sleep;
use percore_pool::{Pool, PoolError, PooledConn};

#[test]
fn checkout_times_out_when_every_connection_is_held() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let pool = Pool::builder(1)
            .checkout_timeout(Duration::from_millis(30))
            .build(move || connect(addr));
        let held = pool.get().await.unwrap();
        let err = pool.get().await.unwrap_err();
        assert!(matches!(err, PoolError::Timeout(d) if d == Duration::from_millis(30)));
        let err = pool
            .get_timeout(Duration::from_millis(5))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        let stats = pool.stats();
        assert_eq!((stats.timeouts, stats.waiting, stats.in_use), (2, 0, 1));
        drop(held);
        let mut conn = pool.get().await.unwrap();
        round_trip(&mut conn, b"after\n").await.unwrap();
        conn.release();
        assert_eq!(pool.stats().created, 1);
    });
}

#[test]
fn waiters_are_served_in_arrival_order() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let pool = {
            let addr = server.addr;
            Pool::builder(2).build(move || connect(addr))
        };
        let held = vec![pool.get().await.unwrap(), pool.get().await.unwrap()];
        let order = Rc::new(RefCell::new(Vec::new()));
        let mut waiters = Vec::new();
        for id in 0..6 {
            let (mine, order) = (pool.clone(), order.clone());
            waiters.push(percore_engine::spawn(async move {
                let mut conn = mine.get().await.unwrap();
                order.borrow_mut().push(id);
                round_trip(&mut conn, format!("waiter {id}\n").as_bytes())
                    .await
                    .unwrap();
                conn.release();
            }));
            // Queue them one at a time, so arrival order is known.
            while pool.stats().waiting < id + 1 {
                percore_engine::yield_now().await;
            }
        }
        // A latecomer that arrives while everyone waits must not barge past them.
        let (late, late_order) = (pool.clone(), order.clone());
        let latecomer = percore_engine::spawn(async move {
            let _conn = late.get().await.unwrap();
            late_order.borrow_mut().push(99);
        });
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        latecomer.await.unwrap();
        assert_eq!(*order.borrow(), [0, 1, 2, 3, 4, 5, 99]);
        assert_eq!(pool.stats().created, 2);
    });
}

/// A returned connection is handed to the oldest waiter; that waiter is dropped before it
/// runs; the next waiter gets the connection and no new one is made.
#[test]
fn waiter_dropped_after_hand_off_passes_the_connection_on() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let pool = {
            let addr = server.addr;
            Pool::builder(1).build(move || connect(addr))
        };
        let held = pool.get().await.unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = Box::pin(pool.get());
        let mut second = Box::pin(pool.get());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert_eq!(pool.stats().waiting, 2);
        drop(held); // handed to `first`, which has not run
        drop(first);
        let Poll::Ready(Ok(mut conn)) = second.as_mut().poll(&mut cx) else {
            panic!("the second waiter should hold the connection");
        };
        round_trip(&mut conn, b"passed on\n").await.unwrap();
        let stats = pool.stats();
        assert_eq!((stats.created, stats.waiting, stats.in_use), (1, 0, 1));
    });
}

/// The factory is slow; the checkout times out (or is dropped) while it runs; the slot is
/// free again and the connection in the making is closed.
#[test]
fn checkout_dropped_during_creation_frees_its_slot() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let slow = Rc::new(Cell::new(true));
        let slow2 = slow.clone();
        let pool = Pool::builder(1).build(move || {
            let slow = slow2.get();
            async move {
                if slow {
                    sleep(Duration::from_secs(10)).await;
                }
                connect(addr).await
            }
        });
        let err = pool
            .get_timeout(Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(err.is_timeout());
        // Dropped outright, after one poll.
        let mut cx = Context::from_waker(Waker::noop());
        let mut dropped = Box::pin(pool.get());
        assert!(dropped.as_mut().poll(&mut cx).is_pending());
        assert_eq!(pool.stats().pending, 1);
        drop(dropped);
        let stats = pool.stats();
        assert_eq!((stats.pending, stats.in_use, stats.created), (0, 0, 0));
        slow.set(false);
        let mut conn = pool.get_timeout(Duration::from_secs(5)).await.unwrap();
        round_trip(&mut conn, b"made\n").await.unwrap();
        assert_eq!(pool.stats().created, 1);
    });
}

#[test]
fn factory_failures_surface_and_free_the_slot() {
    percore_engine::block_on(async {
        // A port that is bound but not listening refuses connections (held, never guessed).
        let holder =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        holder.bind(&loopback().into()).unwrap();
        let refusing = holder.local_addr().unwrap().as_socket().unwrap();
        let pool = Pool::builder(2).build(move || connect(refusing));
        for attempt in 1..=5 {
            match pool.get().await {
                Err(PoolError::Create(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused)
                }
                other => panic!("expected a refused connection, got {other:?}"),
            }
            let stats = pool.stats();
            assert_eq!((stats.create_failures, stats.pending), (attempt, 0));
        }
    });
}

/// The local port of a pooled connection: which connection it is.
fn port(conn: &PooledConn<Conn>) -> u16 {
    conn.get_ref().local_addr().unwrap().port()
}

/// max 2; H1 and H2 hold `a` and `b`; W queues; H1 returns `a` (it rests idle, its slot is
/// handed to W, which has not run yet); H2 is marked broken and drops (`b` is closed, a slot
/// is free); a newcomer N checks out before W runs. W must get `a`; N makes a new one.
#[test]
fn newcomer_leaves_the_waiters_connection_alone() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let pool = Pool::builder(2).build(move || connect(addr));
        let h1 = pool.get().await.unwrap();
        let mut h2 = pool.get().await.unwrap();
        let a = port(&h1);
        let mut cx = Context::from_waker(Waker::noop());
        let mut w = Box::pin(pool.get());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        drop(h1); // `a` idle, its slot granted to W
        h2.mark_broken();
        drop(h2); // a free slot
        let mut n = pool.get().await.unwrap(); // before W runs
        let Poll::Ready(Ok(mut w)) = w.as_mut().poll(&mut cx) else {
            panic!("W was handed a slot and must hold a connection");
        };
        assert_eq!(port(&w), a, "W must get the connection returned for it");
        assert_ne!(port(&n), a);
        round_trip(&mut w, b"w\n").await.unwrap();
        round_trip(&mut n, b"n\n").await.unwrap();
        let stats = pool.stats();
        assert_eq!((stats.created, stats.discarded, stats.in_use), (3, 1, 2));
    });
}

/// max 4, max_idle 1; four holders and one waiter W; all four return before W runs. Idle
/// connections never exceed max_idle + the waiters not yet served (1); W gets the connection
/// returned last; when W returns it, it is the one kept and the stale idle one is closed.
#[test]
fn returns_before_a_waiter_runs_keep_max_idle() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let pool = Pool::builder(4).max_idle(1).build(move || connect(addr));
        let mut holders = Vec::new();
        for _ in 0..4 {
            holders.push(pool.get().await.unwrap());
        }
        let last = port(&holders[3]);
        let mut cx = Context::from_waker(Waker::noop());
        let mut w = Box::pin(pool.get());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        for holder in holders {
            holder.release();
            let stats = pool.stats();
            assert!(stats.idle <= 1 + 1, "{stats:?}");
        }
        let Poll::Ready(Ok(mut w)) = w.as_mut().poll(&mut cx) else {
            panic!("W was handed a slot and must hold a connection");
        };
        assert_eq!(port(&w), last, "W gets the connection returned last");
        assert!(pool.stats().idle <= 1, "{:?}", pool.stats());
        round_trip(&mut w, b"w\n").await.unwrap();
        w.release();
        let stats = pool.stats();
        assert_eq!((stats.idle, stats.discarded, stats.created), (1, 3, 4));
        let again = pool.get().await.unwrap();
        assert_eq!(port(&again), last, "the stale idle one is the one closed");
    });
}

/// A health check that waits for a line the echo server never sends: it runs until dropped.
fn stuck_check_pool(server: &EchoServer) -> Pool<Conn> {
    let addr = server.addr;
    Pool::builder(2)
        .checkout_timeout(None)
        .health_check(|mut conn: Conn| async move {
            conn.read_line(MAX_LINE).await?;
            Ok(conn)
        })
        .build(move || connect(addr))
}

/// An idle connection is being health-checked when its checkout is dropped (and another one
/// times out): the connections closed with them are counted as discarded, so created minus
/// discarded is the connections alive.
#[test]
fn checkout_dropped_during_the_health_check_counts_the_discard() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let pool = stuck_check_pool(&server);
        let warm = pool.get().await.unwrap();
        warm.release();
        let mut cx = Context::from_waker(Waker::noop());
        let mut checkout = Box::pin(pool.get());
        assert!(checkout.as_mut().poll(&mut cx).is_pending());
        assert_eq!((pool.stats().pending, pool.stats().idle), (1, 0));
        drop(checkout);
        let stats = pool.stats();
        assert_eq!((stats.pending, stats.created, stats.discarded), (0, 1, 1));
        assert_eq!(
            stats.created - stats.discarded,
            (stats.idle + stats.in_use) as u64
        );

        // The same through the checkout timeout.
        pool.get().await.unwrap().release(); // fresh: not checked
        let err = pool
            .get_timeout(Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(err.is_timeout());
        let stats = pool.stats();
        assert_eq!((stats.created, stats.discarded, stats.pending), (2, 2, 0));
    });
}

/// A health check that refuses every connection it is given: the refusal is counted, its
/// error kept, and the checkout goes on with a new connection.
#[test]
fn failed_health_checks_are_counted_and_their_error_kept() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let pool = Pool::builder(1)
            .health_check(|conn: Conn| async move {
                drop(conn);
                Err(std::io::Error::other("the server said no"))
            })
            .build(move || connect(addr));
        pool.get().await.unwrap().release(); // fresh: not checked
        assert_eq!(pool.last_check_error(), None);
        let mut conn = pool.get().await.unwrap(); // the idle one fails its check
        round_trip(&mut conn, b"replaced\n").await.unwrap();
        conn.release();
        let stats = pool.stats();
        assert_eq!((stats.check_failures, stats.broken), (1, 1));
        assert_eq!((stats.created, stats.discarded, stats.idle), (2, 1, 1));
        assert_eq!(
            pool.last_check_error().as_deref(),
            Some("the server said no")
        );
    });
}
