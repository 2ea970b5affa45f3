//! `send_chunk`: a received chunk sent back from its ring buffer, the buffer returned to the
//! ring by the send's completion. Echo of 1 B .. 16 MiB with every reply read only when the
//! next chunk comes (unwatched), a connection waiting for its peer holding no ring buffer, a
//! send dropped while the peer does not read, a peer that resets, and a core shut down with a
//! send in flight.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use percore_engine::buf::ring::BufRing;
use percore_engine::ops::SendOwned;
use percore_engine::scope::move_on_after;
use percore_engine::time::sleep;
use percore_net::tcp::{TcpListener, TcpStream};

mod support;
use support::{eventually, expect_refused, flood, loopback};

/// Echoes with `send_chunk` until the peer closes; each reply goes out unwatched and its
/// result is read when the next chunk (or the end) comes, as `echo_percore` does.
async fn echo_unwatched(mut conn: TcpStream) -> std::io::Result<()> {
    let mut replying: Option<SendOwned> = None;
    loop {
        let chunk = conn.recv_chunk().await?;
        if let Some(reply) = replying.take() {
            reply.await?;
        }
        let Some(chunk) = chunk else {
            return Ok(());
        };
        replying = conn.send_chunk(chunk).start_unwatched()?;
    }
}

/// Every size comes back whole and in order; between exchanges the connection, waiting for its
/// peer with its last reply unread, holds no ring buffer and no op slot for the reply; at the
/// end every buffer is back.
#[test]
fn chunk_echo_of_1_byte_to_16_mib_holds_no_buffer_between_exchanges() {
    percore_engine::block_on(async {
        let ring = BufRing::core_default().unwrap();
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let (exchanged, next) = (
            std::sync::mpsc::channel::<usize>(),
            std::sync::mpsc::channel::<()>(),
        );
        let (exchanged_tx, exchanged_rx) = exchanged;
        let (next_tx, next_rx) = next;
        let sizes = [1usize, 100, 4096, 65_537, 1 << 20, 16 << 20];
        let client = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            for size in sizes {
                let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
                let mut writer = client.try_clone().unwrap();
                let sent = payload.clone();
                let writing = std::thread::spawn(move || writer.write_all(&sent).unwrap());
                let mut got = vec![0u8; size];
                client.read_exact(&mut got).unwrap();
                writing.join().unwrap();
                assert!(got == payload, "{size} B: the echo differs");
                exchanged_tx.send(size).unwrap();
                next_rx.recv().unwrap();
            }
            client.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "{} bytes after the last echo", rest.len());
        });
        let (conn, _) = listener.accept().await.unwrap();
        // The listener's accept op is in this count; the connection adds its receive.
        let ops_base = percore_engine::stats::current().ops_in_flight;
        let server = percore_engine::spawn(echo_unwatched(conn));
        for size in sizes {
            eventually("the client's exchange", || {
                exchanged_rx.try_recv().is_ok_and(|s| s == size)
            })
            .await;
            // The reply's buffer went back at the send's completion; the server task waits
            // for its next chunk with the reply's result still unread.
            eventually(&format!("{size} B: ring buffers still lent"), || {
                ring.lent() == 0
            })
            .await;
            // Nor an op slot: a whole unwatched send frees it at its completion.
            eventually(&format!("{size} B: the reply's op slot still held"), || {
                percore_engine::stats::current().ops_in_flight == ops_base + 1
            })
            .await;
            next_tx.send(()).unwrap();
        }
        server.await.unwrap().unwrap();
        // Not joined at once: the client waits for the connection's close, which the core
        // finishes (the receive's cancel) only while it runs.
        eventually("the client's end", || client.is_finished()).await;
        client.join().unwrap();
        assert_eq!(ring.lent(), 0);
    });
}

/// A peer that stops reading: a chunk send waits in the kernel; dropped there, it is cancelled,
/// its buffer comes back, and the socket closes once the kernel let go of it (the peer's
/// blocked write fails).
#[test]
fn a_chunk_send_dropped_while_the_peer_does_not_read_returns_its_buffer() {
    percore_engine::block_on(async {
        let ring = BufRing::core_default().unwrap();
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(4096)
            .unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(conn.fd())
            .set_send_buffer_size(4096)
            .unwrap();
        // The peer writes and never reads.
        let writing = flood(&client);
        let ops_before = percore_engine::stats::current().ops_in_flight;
        let mut stuck = false;
        for _ in 0..10_000 {
            let chunk = conn.recv_chunk().await.unwrap().expect("data");
            // Awaited: each send must finish before the next, until one cannot.
            match move_on_after(Duration::from_millis(50), conn.send_chunk(chunk)).await {
                Some(res) => res.unwrap(),
                None => {
                    stuck = true;
                    break;
                }
            }
        }
        assert!(stuck, "a peer that never reads took every reply");
        eventually("the cancelled send's buffer", || ring.lent() == 0).await;
        drop(conn);
        eventually("the cancelled send's op", || {
            percore_engine::stats::current().ops_in_flight <= ops_before
        })
        .await;
        // The socket is closed: the peer's write fails (reset) instead of blocking.
        expect_refused(writing).await;
        drop(client);
    });
}

/// A chunk send to a peer that has reset fails (an error, or `WriteZero` for a part sent),
/// and never panics.
#[test]
fn a_chunk_send_to_a_reset_peer_fails() {
    percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        client.write_all(b"ping").unwrap();
        let chunk = conn.recv_chunk().await.unwrap().unwrap();
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        sleep(Duration::from_millis(20)).await;
        let e = conn
            .send_chunk(chunk)
            .await
            .expect_err("a send to a reset peer succeeded");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::WriteZero
            ),
            "{e}"
        );
    });
}

/// A core that ends with an unwatched chunk send stuck in the kernel (its peer does not read):
/// the shutdown cancels it and gives its buffer back (ASan, which runs this suite, sees any
/// leak or use after free).
#[test]
fn a_core_ends_with_a_chunk_send_in_flight() {
    let client = percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(conn.fd())
            .set_send_buffer_size(4096)
            .unwrap();
        client.write_all(&[5u8; 4096]).unwrap();
        let chunk = conn.recv_chunk().await.unwrap().unwrap();
        // A big send first fills the socket buffers (the peer never reads), so the chunk's
        // send waits in the kernel too.
        let big = conn.send_whole(vec![0u8; 8 << 20]);
        let big = percore_engine::spawn(big);
        sleep(Duration::from_millis(20)).await;
        let mut send = conn.send_chunk(chunk);
        assert!(send.poll_unwatched().is_pending());
        // The stream, the big send and the chunk's send are left to the core's end.
        percore_engine::spawn(async move {
            let _keep = (conn, send);
            let _ = big.await;
            std::future::pending::<()>().await;
        })
        .detach(|_| {});
        sleep(Duration::from_millis(20)).await;
        client
    });
    drop(client);
}

/// An owned send in flight when its core ends is cancelled by the core's shutdown; its future,
/// kept past the core and polled under the next core on the same thread, reads an error, never
/// success (a whole unwatched send frees its slot, so a key found nowhere means sent only on
/// the send's own core), and dropping it there touches nothing of the new core's.
#[test]
fn a_send_that_outlived_its_core_reads_as_failed_under_the_next() {
    let (send, conn, client) = percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(conn.fd())
            .set_send_buffer_size(4096)
            .unwrap();
        // More than the sockets' buffers take from a peer that never reads: it stays in flight.
        let mut send = conn.send_vec(vec![1u8; 32 << 20]);
        assert!(send.poll_unwatched().is_pending());
        sleep(Duration::from_millis(20)).await;
        assert!(send.poll_unwatched().is_pending());
        (send, conn, client)
    });
    let mut send = send;
    percore_engine::block_on(async {
        // The new core's slots, under keys the old one handed out too.
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let _peer = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (other, _) = listener.accept().await.unwrap();
        let mut others: Vec<_> = (0..4).map(|_| other.send_vec(vec![2u8; 16])).collect();
        for s in &mut others {
            let _ = s.poll_unwatched();
        }
        sleep(Duration::from_millis(20)).await;
        match send.poll_unwatched() {
            std::task::Poll::Ready(res) => assert!(res.is_err(), "a cancelled send read as sent"),
            std::task::Poll::Pending => panic!("a send of an ended core still pending"),
        }
        drop(send);
        for s in others {
            assert!(s.await.is_ok(), "the new core's own sends");
        }
    });
    drop((conn, client));
}

/// Polled under a nested core (`block_on` inside its own core), an owned send in flight reads
/// an error and is left as it was: its socket stays open and the send queued on its own core,
/// where it later completes whole.
#[test]
fn a_send_polled_under_a_nested_core_is_left_to_its_own() {
    percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        let size = 8 << 20;
        let mut send = conn.send_vec(vec![4u8; size]);
        assert!(send.poll_unwatched().is_pending());
        sleep(Duration::from_millis(20)).await;
        let nested = percore_engine::block_on(async { send.poll_unwatched() });
        match nested {
            std::task::Poll::Ready(Err(e)) => {
                assert!(e.to_string().contains("off its core"), "{e}")
            }
            other => panic!("polled under a nested core: {other:?}"),
        }
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; size];
            client.read_exact(&mut got).unwrap();
            got.iter().all(|&b| b == 4)
        });
        send.await.unwrap();
        eventually("the reader", || reader.is_finished()).await;
        assert!(reader.join().unwrap(), "the bytes came whole");
        drop(conn);
    });
}

/// A core ends with an owned send in flight (its future kept past the core) to a peer that
/// reads slowly but steadily: the shutdown's cancel ends the send part-way and the driver does
/// not continue it, so the core ends at once, not at its shutdown limit (10 s) with its ops
/// leaked; the future then reads the send as failed.
#[test]
fn a_core_ends_promptly_with_a_send_to_a_slow_reader() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut reader = None;
    let (started, mut send, conn) = percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(conn.fd())
            .set_send_buffer_size(4096)
            .unwrap();
        let stop_reading = stop.clone();
        reader = Some(std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while !stop_reading.load(std::sync::atomic::Ordering::Relaxed) {
                if matches!(client.read(&mut buf), Ok(0) | Err(_)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }));
        let mut send = conn.send_vec(vec![6u8; 64 << 20]);
        assert!(send.poll_unwatched().is_pending());
        sleep(Duration::from_millis(50)).await;
        (std::time::Instant::now(), send, conn)
    });
    let took = started.elapsed();
    assert!(matches!(
        send.poll_unwatched(),
        std::task::Poll::Ready(Err(_))
    ));
    drop((send, conn));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.unwrap().join().unwrap();
    assert!(
        took < Duration::from_secs(3),
        "the core took {took:?} to end"
    );
}
