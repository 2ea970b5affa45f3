//! Dropping net's futures mid-flight leaks nothing: an accept with connections waiting, a
//! buffered read with half a line in, a large write to a peer that does not read. After each,
//! once the objects are gone, the process's open fds, the ops in flight and the receive ring's
//! lent buffers are back where they started. Its own test binary, because it counts the
//! process's fds.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use percore_engine::buf::ring::BufRing;
use percore_engine::scope::move_on_after;
use percore_net::tcp::{TcpListener, TcpStream};
use percore_net::BufStream;

/// (open fds, ops in flight, ring buffers lent out)
type Baseline = (usize, u64, usize);

fn baseline() -> Baseline {
    (
        percore_engine::open_fd_count().unwrap(),
        percore_engine::stats::current().ops_in_flight,
        BufRing::core_default().unwrap().lent(),
    )
}

/// Waits (at most 5 s) until everything is back to `base`; the kernel finishes cancelled ops
/// asynchronously, so this polls.
async fn settles_to(base: Baseline, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = baseline();
        if now == base {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: did not settle: now {now:?}, baseline {base:?}"
        );
        percore_engine::time::sleep(Duration::from_millis(1)).await;
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn dropped_accept_read_and_write_leak_no_fd_op_or_buffer() {
    percore_engine::block_on(async {
        // The ring is registered on first use: do that before the baseline.
        let _ring = BufRing::core_default().unwrap();
        let base = baseline();

        // An accept dropped while it waits; then connections come and wait in the listener's
        // multishot, untaken, and the listener goes.
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let waited = move_on_after(Duration::from_millis(5), listener.accept()).await;
        assert!(waited.is_none(), "no connection yet");
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // Long enough for the kernel to accept them into the multishot's queue.
        percore_engine::time::sleep(Duration::from_millis(20)).await;
        drop(listener);
        drop(clients);
        settles_to(base, "accept").await;

        // A line read dropped with half the line received, then the stream.
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        let mut conn = BufStream::new(conn);
        client.write_all(b"half a li").unwrap();
        let read = move_on_after(Duration::from_millis(20), conn.read_line(100)).await;
        assert!(read.is_none(), "no line yet");
        assert_eq!(conn.buffered(), b"half a li", "the read kept what it got");
        drop(conn);
        drop(client);
        drop(listener);
        settles_to(base, "read").await;

        // An 8 MiB write to a peer that never reads, dropped mid-flight, then the stream.
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        let conn: TcpStream = conn;
        let write = move_on_after(
            Duration::from_millis(50),
            conn.write_all(vec![7u8; 8 << 20]),
        )
        .await;
        assert!(write.is_none(), "the write cannot finish: nobody reads");
        drop(conn);
        drop(client);
        drop(listener);
        settles_to(base, "write").await;
    });
}
