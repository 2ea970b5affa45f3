//! A `BufStream`'s idle timeout bounds every wait for the peer: a read that brings no bytes,
//! and a flush the peer does not take (it does not read). A peer that reads gets a write far
//! longer than the buffer, which goes out in bounded flushes.

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use percore_net::tcp::TcpListener;
use percore_net::BufStream;

/// A server-side `BufStream` with `idle` as its idle timeout, and the client's std socket.
async fn pair(idle: Duration) -> (BufStream, std::net::TcpStream) {
    let mut listener = TcpListener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
    let (conn, _) = listener.accept().await.unwrap();
    let mut conn = BufStream::new(conn);
    conn.set_idle_timeout(Some(idle));
    (conn, client)
}

#[test]
fn a_read_that_brings_nothing_times_out() {
    percore_engine::block_on(async {
        let (mut conn, _client) = pair(Duration::from_millis(100)).await;
        let started = Instant::now();
        let err = conn.read_some(64).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() >= Duration::from_millis(100));
    });
}

#[test]
fn a_flush_the_peer_takes_nothing_of_times_out() {
    percore_engine::block_on(async {
        let (mut conn, client) = pair(Duration::from_millis(200)).await;
        // More than both sockets' buffers hold: the peer never reads, so it cannot all go.
        // (Past the write buffer's bound, `write_vec` flushes at once.)
        let started = Instant::now();
        let err = conn.write_vec(vec![7u8; 32 << 20]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        // The same through buffered writes, which flush as the buffer fills.
        let (mut conn, client2) = pair(Duration::from_millis(200)).await;
        let mut failed = None;
        for _ in 0..512 {
            if let Err(err) = conn.write(&[7u8; 64 << 10]).await {
                failed = Some(err);
                break;
            }
        }
        let err = failed.expect("32 MiB cannot all go to a peer that does not read");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        drop((client, client2));
    });
}

#[test]
fn a_peer_that_reads_gets_the_whole_write() {
    percore_engine::block_on(async {
        // 64 MiB to a peer that reads at most 64 KiB every 2 ms: about 2 s in all, past the
        // 1 s timeout, but every bounded flush is taken well within it. (A
        // flush waits for the kernel's send buffer to be half drained, a few MiB here: a
        // peer reading much slower than that in a timeout is cut off.)
        let (mut conn, mut client) = pair(Duration::from_secs(1)).await;
        let (done_tx, done_rx) = percore_engine::cross::channel::bounded::<usize>(1);
        let reader = std::thread::spawn(move || {
            let mut got = 0;
            let mut piece = vec![0u8; 64 << 10];
            loop {
                std::thread::sleep(Duration::from_millis(2));
                match client.read(&mut piece) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            done_tx.try_send(got).unwrap();
        });
        let started = Instant::now();
        conn.write_vec(vec![7u8; 64 << 20]).await.unwrap();
        conn.flush().await.unwrap();
        let took = started.elapsed();
        drop(conn);
        assert_eq!(done_rx.recv().await, Some(64 << 20));
        reader.join().unwrap();
        assert!(
            took > Duration::from_secs(1),
            "the peer read slowly: {took:?}"
        );
    });
}
