//! Closing a pool: waiters fail, idle connections close at once and connections in use when
//! they come back (their server ends read EOF), and checkouts that are creating or
//! health-checking a connection stop with `Closed`.

mod common;

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{connect, loopback, round_trip, Conn, DyingServer, MAX_LINE};
use percore_engine::time::timeout;
use percore_pool::{Pool, PoolError};

/// One connection held, another idle, three checkouts queued (the first already handed the
/// idle one's slot); close: the idle connection is closed at once (discarded rises by one,
/// its server end reads EOF), the waiters fail with `Closed`, the held one is closed when it
/// comes back.
#[test]
fn close_fails_waiters_and_closes_connections() {
    percore_engine::block_on(async {
        let server = DyingServer::start();
        let addr = server.addr;
        let pool = Pool::builder(2).build(move || connect(addr));
        let mut held = pool.get().await.unwrap();
        let mut idle = pool.get().await.unwrap();
        round_trip(&mut held, b"held\n").await.unwrap();
        round_trip(&mut idle, b"idle\n").await.unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut waiters: Vec<_> = (0..3).map(|_| Box::pin(pool.get())).collect();
        for waiter in &mut waiters {
            assert!(waiter.as_mut().poll(&mut cx).is_pending());
        }
        idle.release();
        let before = pool.stats();
        assert_eq!((before.idle, before.in_use, before.waiting), (1, 1, 3));
        assert_eq!((before.discarded, server.hung_up()), (0, 0));

        pool.close();
        assert!(pool.is_closed());
        let stats = pool.stats();
        assert_eq!(
            (stats.idle, stats.discarded),
            (0, 1),
            "the idle one, at once"
        );
        assert_eq!(server.wait_hung_up(1).await, 1, "its socket is closed");
        for mut waiter in waiters {
            let Poll::Ready(result) = waiter.as_mut().poll(&mut cx) else {
                panic!("a waiter still waits after close");
            };
            assert!(matches!(result, Err(PoolError::Closed)), "{result:?}");
        }

        held.release(); // complete, but the pool is closed: closed too
        let stats = pool.stats();
        assert_eq!((stats.idle, stats.in_use, stats.waiting), (0, 0, 0));
        assert_eq!((stats.discarded, stats.broken), (2, 0));
        assert_eq!(server.wait_hung_up(2).await, 2);
        assert!(pool.get().await.unwrap_err().is_closed());
        pool.close(); // idempotent
        assert_eq!(pool.stats().discarded, 2);
    });
}

/// The factory connects to a listener whose accept queue is full, so the connect never
/// completes; close() stops the checkout at once with `Closed` (no checkout timeout is set).
#[test]
fn close_interrupts_a_checkout_creating_a_connection() {
    percore_engine::block_on(async {
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener.bind(&loopback().into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // Backlog 0 holds one connection: this one; later SYNs are dropped unanswered.
        let _filler = std::net::TcpStream::connect(addr).unwrap();
        let pool = Pool::builder(1)
            .checkout_timeout(None)
            .build(move || connect(addr));
        let p = pool.clone();
        let checkout = percore_engine::spawn(async move { p.get().await.map(drop) });
        while pool.stats().pending == 0 {
            percore_engine::yield_now().await;
        }
        pool.close();
        let result = timeout(Duration::from_secs(5), checkout)
            .await
            .expect("close must interrupt the factory")
            .unwrap();
        assert!(matches!(result, Err(PoolError::Closed)), "{result:?}");
        let stats = pool.stats();
        assert_eq!(
            (stats.created, stats.pending, stats.create_failures),
            (0, 0, 0)
        );
    });
}

/// The health check waits for a line the server never sends; close() stops the checkout with
/// `Closed`, and the connection it was checking is closed and counted.
#[test]
fn close_interrupts_a_checkout_health_checking_a_connection() {
    percore_engine::block_on(async {
        let server = DyingServer::start();
        let addr = server.addr;
        let pool = Pool::builder(1)
            .checkout_timeout(None)
            .health_check(|mut conn: Conn| async move {
                conn.read_line(MAX_LINE).await?;
                Ok(conn)
            })
            .build(move || connect(addr));
        pool.get().await.unwrap().release(); // one idle connection
        let p = pool.clone();
        let checkout = percore_engine::spawn(async move { p.get().await.map(drop) });
        while pool.stats().pending == 0 {
            percore_engine::yield_now().await;
        }
        pool.close();
        let result = timeout(Duration::from_secs(5), checkout)
            .await
            .expect("close must interrupt the health check")
            .unwrap();
        assert!(matches!(result, Err(PoolError::Closed)), "{result:?}");
        let stats = pool.stats();
        assert_eq!((stats.created, stats.discarded, stats.pending), (1, 1, 0));
        assert_eq!(server.wait_hung_up(1).await, 1);
    });
}
