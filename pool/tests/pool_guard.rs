//! The guard against percore's echo service: a connection used mutably and not released
//! (its holder errored out with `?`, timed out or was cancelled mid-exchange) is discarded; a
//! released one, or one never used mutably, goes back into the pool.

mod common;

use std::time::Duration;

use common::{connect, round_trip, Conn, EchoServer, MAX_LINE};
use percore_engine::time::timeout;
use percore_pool::Pool;

fn echo_pool(server: &EchoServer, max: usize) -> Pool<Conn> {
    let addr = server.addr;
    Pool::builder(max).build(move || connect(addr))
}

/// A holder writes a request, then times out before it reads the reply: its guard drops with
/// the reply unread. The next checkout must get a fresh connection and read its own reply, not
/// the stale one.
#[test]
fn holder_timed_out_after_the_write_loses_its_connection() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let pool = echo_pool(&server, 2);
        let timed_out = timeout(Duration::from_millis(20), async {
            let mut conn = pool.get().await?;
            conn.write(b"first\n").await?;
            conn.flush().await?;
            // The holder is held up before reading (a slow step, a lock): the timeout fires.
            std::future::pending::<()>().await;
            conn.read_line(MAX_LINE).await
        })
        .await;
        assert!(timed_out.is_err());
        let after_timeout = pool.stats();
        assert_eq!(after_timeout.created, 1);
        assert_eq!((after_timeout.discarded, after_timeout.idle), (1, 0));

        let mut conn = pool.get().await.unwrap();
        round_trip(&mut conn, b"second\n").await.unwrap(); // its own reply, not "first"
        let stats = pool.stats();
        assert_eq!((stats.created, stats.discarded, stats.broken), (2, 1, 1));
    });
}

/// Released after use: reused. Dropped after use without `release` (an error returned with
/// `?`): discarded. Never used mutably: returned on drop. Marked broken: discarded even when
/// released.
#[test]
fn release_returns_and_an_unreleased_used_guard_is_discarded() {
    let server = EchoServer::start();
    percore_engine::block_on(async {
        let pool = echo_pool(&server, 2);
        let mut conn = pool.get().await.unwrap();
        round_trip(&mut conn, b"one\n").await.unwrap();
        conn.release();
        assert_eq!((pool.stats().created, pool.stats().idle), (1, 1));

        // A holder that bails out with `?` after using the connection.
        let failed: std::io::Result<()> = async {
            let mut conn = pool.get().await?;
            round_trip(&mut conn, b"two\n").await?;
            Err(std::io::Error::other(
                "the holder gives up before it releases",
            ))
        }
        .await;
        assert!(failed.is_err());
        let stats = pool.stats();
        assert_eq!((stats.idle, stats.discarded, stats.broken), (0, 1, 1));

        // Looked at only through `&`: nothing was started on it, so it goes back.
        let conn = pool.get().await.unwrap();
        assert!(conn.get_ref().peer_addr().is_ok());
        drop(conn);
        assert_eq!((pool.stats().idle, pool.stats().discarded), (1, 1));

        let mut conn = pool.get().await.unwrap();
        conn.mark_broken();
        conn.release();
        let stats = pool.stats();
        assert_eq!((stats.idle, stats.discarded, stats.created), (0, 2, 2));
    });
}
