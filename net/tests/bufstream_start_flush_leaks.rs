//! `BufStream::start_flush` leaves nothing behind: a peer that does not read times the next
//! flush out, and a stream dropped with a send in flight, or a dropped settle, leaks no fd, op
//! or ring buffer. Its own test binary with one test, because it counts the process's fds.

use std::io::Read;
use std::time::{Duration, Instant};

use percore_engine::buf::ring::BufRing;
use percore_engine::scope::move_on_after;

mod support;
use support::pair;

/// (open fds, ops in flight, ring buffers lent out)
fn baseline() -> (usize, u64, usize) {
    (
        percore_engine::open_fd_count().unwrap(),
        percore_engine::stats::current().ops_in_flight,
        BufRing::core_default().unwrap().lent(),
    )
}

/// Waits (at most 5 s) until the fds, ops and ring buffers are back to `base`.
async fn settles_to(base: (usize, u64, usize), what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while baseline() != base {
        assert!(
            Instant::now() < deadline,
            "{what}: now {:?}, baseline {base:?}",
            baseline()
        );
        percore_engine::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn sends_behind_leave_nothing_behind() {
    percore_engine::block_on(async {
        // The ring is registered on first use: do that before the baselines.
        let _ring = BufRing::core_default().unwrap();
        a_peer_that_does_not_read_times_out_the_next_flush().await;
        dropped_sends_behind_leak_nothing().await;
    });
}

/// A peer that does not read: the first reply behind fills the sockets' buffers and stays in
/// flight; the next flush waits for it within the idle timeout, fails with `TimedOut`, and
/// the stream then goes leaving no fd, op or ring buffer behind.
async fn a_peer_that_does_not_read_times_out_the_next_flush() {
    let base = baseline();
    let (mut conn, client) = pair(64 << 20).await;
    conn.set_idle_timeout(Some(Duration::from_millis(200)));
    conn.write_vec(vec![7u8; 32 << 20]).await.unwrap();
    conn.start_flush().await.unwrap();
    conn.write(b"more\n").await.unwrap();
    let started = Instant::now();
    let err = conn.start_flush().await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    drop((conn, client));
    settles_to(base, "after the timed-out send").await;
}

/// Dropped with a send in flight (the peer does not read), the stream leaves no fd, op or
/// ring buffer behind; a start_flush dropped while it waits for the send before leaves that
/// send in flight, unwatched again, and the next flush settles it.
async fn dropped_sends_behind_leak_nothing() {
    let base = baseline();

    let (mut conn, client) = pair(64 << 20).await;
    conn.write_vec(vec![3u8; 32 << 20]).await.unwrap();
    conn.start_flush().await.unwrap();
    assert!(format!("{conn:?}").contains("sending: true"));
    drop(conn);
    drop(client);
    settles_to(base, "a stream dropped with a send in flight").await;

    let (mut conn, mut client) = pair(64 << 20).await;
    conn.write_vec(vec![5u8; 16 << 20]).await.unwrap();
    conn.start_flush().await.unwrap();
    conn.write(b"tail").await.unwrap();
    let waited = move_on_after(Duration::from_millis(20), conn.start_flush()).await;
    assert!(
        waited.is_none(),
        "the peer has not read: the send before is in flight"
    );
    assert!(format!("{conn:?}").contains("sending: true"));
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; 16 << 20];
        client.read_exact(&mut got).unwrap();
        client.read_to_end(&mut got).unwrap();
        got
    });
    // The dropped wait left the send unwatched again: taken whole, it frees its op slot at
    // the completion (a waker left behind would keep the slot, completed, for the next poll).
    let deadline = Instant::now() + Duration::from_secs(5);
    while percore_engine::stats::current().ops_in_flight != base.1 {
        assert!(
            Instant::now() < deadline,
            "the send's slot is kept: still watched"
        );
        percore_engine::time::sleep(Duration::from_millis(1)).await;
    }
    conn.shutdown_write().await.unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), (16 << 20) + 4);
    assert!(got[..16 << 20].iter().all(|&b| b == 5) && got.ends_with(b"tail"));
    drop(conn);
    settles_to(base, "after the settled sends").await;
}
