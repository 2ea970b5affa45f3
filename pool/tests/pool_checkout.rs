//! Checkout against a real echo server: timeouts, FIFO fairness, cancel safety of a waiter
//! that was handed a slot, checkouts dropped while the factory runs, factory failures.

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{connect, loopback, round_trip, EchoServer};
use percore_engine::time::sleep;
use percore_pool::{Pool, PoolError};

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

/// The pool is closed while a checkout waits for the factory: the new connection is closed
/// and the checkout fails with `Closed`.
#[test]
fn close_during_creation_discards_the_new_connection() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let addr = server.addr;
        let pool = Pool::builder(1).build(move || async move {
            sleep(Duration::from_millis(20)).await;
            connect(addr).await
        });
        let p = pool.clone();
        let checkout = percore_engine::spawn(async move { p.get().await.map(drop) });
        while pool.stats().pending == 0 {
            percore_engine::yield_now().await;
        }
        pool.close();
        assert!(matches!(checkout.await.unwrap(), Err(PoolError::Closed)));
        let stats = pool.stats();
        assert_eq!((stats.created, stats.discarded, stats.pending), (1, 1, 0));
    });
}
