//! `TcpStream::linger`: a lingering close's wait, against a real peer that keeps sending and
//! reads late, one that never reads, and one that resets.

use std::io::Read;
use std::time::{Duration, Instant};

mod support;
use support::{eventually, flood, tcp_pair};

/// More than the peer's socket takes while it does not read.
const REPLY: usize = 4 << 20;

fn reply() -> Vec<u8> {
    (0..REPLY).map(|i| (i % 251) as u8).collect()
}

/// A reply that waits in this side's kernel, whole: more than a peer with [`small_window`]
/// takes while it does not read, and within this side's send buffer.
const STUCK: usize = 128 * 1024;

/// Shrinks the peer's receive buffer and grows this side's send buffer (see [`STUCK`]).
fn small_window(conn: &percore_net::tcp::TcpStream, client: &std::net::TcpStream) {
    socket2::SockRef::from(client)
        .set_recv_buffer_size(4096)
        .unwrap();
    socket2::SockRef::from(conn.fd())
        .set_send_buffer_size(1 << 20)
        .unwrap();
}

/// A peer that keeps sending and reads only later: once the reply went to the kernel,
/// `linger` drops what the peer sends until the peer has all of it (on loopback a reader
/// usually has it by the time the send completes: the wait itself is shown below), so the
/// close that follows (with the peer's bytes unread, a reset) loses none of the reply.
#[test]
fn linger_waits_until_the_peer_has_the_reply() {
    percore_engine::block_on(async {
        let (mut conn, client, _listener) = tcp_pair().await;
        let sending = flood(&client);
        let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
        let reader = {
            let mut client = client.try_clone().unwrap();
            std::thread::spawn(move || {
                read_rx.recv().unwrap();
                client
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut got = Vec::new();
                let end = client.read_to_end(&mut got);
                (got, end.map_err(|e| e.kind()))
            })
        };
        // In flight (the peer is not reading), then read: the send completes with every byte
        // in the kernel's hands, some not yet the peer's.
        let sending_reply = conn.send_vec(reply()).start_unwatched().unwrap();
        read_tx.send(()).unwrap();
        if let Some(send) = sending_reply {
            send.await.unwrap();
        }
        let t0 = Instant::now();
        conn.linger(Duration::from_secs(10)).await.unwrap();
        assert_eq!(conn.fd().unsent_bytes().unwrap(), 0, "the peer has it all");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        drop(conn);
        // Joined once done: the core must run meanwhile to let go of the socket.
        eventually("the reader's end", || reader.is_finished()).await;
        let (got, end) = reader.join().unwrap();
        assert!(
            got == reply(),
            "the whole reply ({} of {REPLY} bytes)",
            got.len()
        );
        // The end the half-close sent, or the reset of the close that came after the reply.
        assert!(
            matches!(end, Ok(_) | Err(std::io::ErrorKind::ConnectionReset)),
            "{end:?}"
        );
        drop(client);
        eventually("the flood's end", || sending.is_finished()).await;
    });
}

/// A peer that never reads, with the reply waiting in this side's kernel: the wait ends at its
/// limit, with `TimedOut`, having dropped what the peer sent meanwhile.
#[test]
fn linger_gives_up_at_its_limit() {
    percore_engine::block_on(async {
        let (mut conn, client, _listener) = tcp_pair().await;
        small_window(&conn, &client);
        let sending = flood(&client);
        let (sent, _) = conn.write_all(vec![7u8; STUCK]).await;
        sent.unwrap();
        assert!(conn.fd().unsent_bytes().unwrap() > 0, "the reply waits");
        let t0 = Instant::now();
        let e = conn
            .linger(Duration::from_millis(300))
            .await
            .expect_err("a peer that never reads took everything");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(3),
            "{took:?}"
        );
        drop(conn);
        eventually("the flood's end", || sending.is_finished()).await;
        let writer = sending.join().unwrap();
        assert!(
            matches!(
                writer.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "the flooding peer saw the close: {writer}"
        );
        drop(client);
    });
}

/// A peer that resets with the reply still waiting for it (the queue never empties after a
/// reset): the wait ends at once, by the receive's error or end, not at its limit.
#[test]
fn linger_ends_when_the_peer_is_gone() {
    percore_engine::block_on(async {
        let (mut conn, client, _listener) = tcp_pair().await;
        small_window(&conn, &client);
        let (sent, _) = conn.write_all(vec![7u8; STUCK]).await;
        sent.unwrap();
        assert!(conn.fd().unsent_bytes().unwrap() > 0, "the reply waits");
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let t0 = Instant::now();
        let outcome = conn.linger(Duration::from_secs(5)).await;
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        if let Err(e) = outcome {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
    });
}
