//! TCP over real loopback sockets: echo of 1 B .. 16 MiB, many connections, half-close,
//! peer reset, limits, cancel safety of buffered reads, IPv6, refused and timed-out connects.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use percore_engine::buf::ring::BufRing;
use percore_engine::time::sleep;
use percore_net::tcp::{TcpListener, TcpStream};
use percore_net::BufStream;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A listener, a std client connected to it, and the accepted percore side.
async fn accepted_pair() -> (TcpListener, std::net::TcpStream, TcpStream) {
    let mut listener = TcpListener::bind(loopback()).unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
    let (conn, _) = listener.accept().await.unwrap();
    (listener, client, conn)
}

/// Echoes every byte of every connection until the peer closes (a task per connection).
fn spawn_echo_server(mut listener: TcpListener) -> percore_engine::JoinHandle<()> {
    percore_engine::spawn(async move {
        let mut conns = Vec::new();
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            conns.push(percore_engine::spawn(async move {
                let mut conn = BufStream::new(conn);
                while let Ok(Some(bytes)) = conn.read_some(64 * 1024).await {
                    if conn.write(&bytes).await.is_err() || conn.flush().await.is_err() {
                        return;
                    }
                }
                let _ = conn.shutdown_write().await;
            }));
        }
    })
}

#[test]
fn echo_from_one_byte_to_sixteen_mebibytes() {
    percore_engine::block_on(async {
        let listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let _server = spawn_echo_server(listener);
        for size in [1usize, 100, 4096, 65_536, 1 << 20, 16 << 20] {
            let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let stream = TcpStream::connect(addr).await.unwrap();
            // Send and receive at the same time: 16 MiB does not fit in the socket buffers.
            let fd = stream.fd().clone();
            let to_send = payload.clone();
            let writer = percore_engine::spawn(async move {
                let mut sent = 0;
                while sent < to_send.len() {
                    let (res, _) =
                        percore_engine::ops::send(&fd, to_send[sent..].to_vec(), 0).await;
                    sent += res?;
                }
                Ok::<_, std::io::Error>(sent)
            });
            let mut client = BufStream::new(stream);
            let echoed = client.read_exact(size).await.unwrap();
            assert_eq!(writer.await.unwrap().unwrap(), size);
            assert!(echoed == payload, "echo of {size} bytes differs");
        }
    });
}

#[test]
fn many_concurrent_connections() {
    percore_engine::block_on(async {
        let listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let _server = spawn_echo_server(listener);
        let clients: Vec<_> = (0..300u32)
            .map(|i| {
                percore_engine::spawn(async move {
                    let mut c = BufStream::new(TcpStream::connect(addr).await?);
                    let msg = format!("client {i}\n");
                    c.write(msg.as_bytes()).await?;
                    c.flush().await?;
                    let back = c.read_line(100).await?.unwrap();
                    assert_eq!(back, msg.as_bytes());
                    Ok::<_, std::io::Error>(())
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap().unwrap();
        }
    });
}

#[test]
fn half_close_then_reply() {
    percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let server = percore_engine::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let mut conn = BufStream::new(conn);
            let mut all = Vec::new();
            while let Some(b) = conn.read_some(1024).await.unwrap() {
                all.extend_from_slice(&b);
            }
            // The client half-closed; we can still answer.
            conn.write(format!("got {} bytes", all.len()).as_bytes())
                .await
                .unwrap();
            conn.shutdown_write().await.unwrap();
        });
        let mut c = BufStream::new(TcpStream::connect(addr).await.unwrap());
        c.write(&[7u8; 5000]).await.unwrap();
        c.shutdown_write().await.unwrap();
        let reply = c.read_until(b'\0', 100).await.unwrap().unwrap();
        assert_eq!(reply, b"got 5000 bytes");
        assert_eq!(c.read_some(10).await.unwrap(), None);
        server.await.unwrap();
    });
}

#[test]
fn a_line_over_the_limit_fails_only_that_connection_and_loses_nothing() {
    percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let server = percore_engine::spawn(async move {
            let mut results = Vec::new();
            let mut rest = Vec::new();
            for i in 0..2 {
                let (conn, _) = listener.accept().await.unwrap();
                let mut conn = BufStream::new(conn);
                let r = conn.read_line(64).await;
                results.push((r.map_err(|e| e.kind()), conn.buffered().len()));
                if i == 0 {
                    // Nothing was consumed by the refused line: all 100 bytes can still be read.
                    rest = conn.read_exact(100).await.unwrap();
                }
            }
            (results, rest)
        });
        let bad = TcpStream::connect(addr).await.unwrap();
        let sent: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
        let (r, _) = bad.write(sent.clone()).await;
        r.unwrap();
        let good = TcpStream::connect(addr).await.unwrap();
        let (r, _) = good.write(b"fine\n".to_vec()).await;
        r.unwrap();
        let (results, rest) = server.await.unwrap();
        assert_eq!(results[0].0, Err(std::io::ErrorKind::InvalidData));
        assert!(
            results[0].1 >= 64,
            "the long line stays buffered: {}",
            results[0].1
        );
        assert_eq!(
            rest, sent,
            "the refused line's bytes, all there and in order"
        );
        assert_eq!(results[1].0, Ok(Some(b"fine\n".to_vec())));
        drop((bad, good));
    });
}

#[test]
fn a_dropped_read_loses_no_bytes() {
    percore_engine::block_on(async {
        let (_listener, mut client, conn) = accepted_pair().await;
        let mut conn = BufStream::new(conn);
        // Half a line, then the read is cancelled by a deadline.
        client.write_all(b"hello, ").unwrap();
        let r =
            percore_engine::scope::move_on_after(Duration::from_millis(20), conn.read_line(100))
                .await;
        assert!(r.is_none(), "no full line yet");
        // The rest arrives; the next read sees the whole line.
        client.write_all(b"world\n").unwrap();
        let line = conn.read_line(100).await.unwrap().unwrap();
        assert_eq!(line, b"hello, world\n");
        // Reads cancelled at many points: every line still arrives, once, in order.
        let mut next = 0u32;
        for i in 0..200u32 {
            client.write_all(format!("line {i}\n").as_bytes()).unwrap();
            let deadline = Duration::from_micros(u64::from(i % 7) * 20);
            if let Some(line) =
                percore_engine::scope::move_on_after(deadline, conn.read_line(100)).await
            {
                assert_eq!(
                    line.unwrap().unwrap(),
                    format!("line {next}\n").into_bytes()
                );
                next += 1;
            }
        }
        client.shutdown(Shutdown::Write).unwrap();
        while let Some(line) = conn.read_line(100).await.unwrap() {
            assert_eq!(line, format!("line {next}\n").into_bytes());
            next += 1;
        }
        assert_eq!(next, 200, "no line lost, none duplicated");
    });
}

#[test]
fn an_idle_connection_pins_no_receive_buffer() {
    percore_engine::block_on(async {
        let (_listener, mut client, conn) = accepted_pair().await;
        let mut conn = BufStream::new(conn);
        client.write_all(b"ping\n").unwrap();
        assert_eq!(conn.read_line(10).await.unwrap().unwrap(), b"ping\n");
        // The multishot receive is armed and idle: no buffer of the ring is lent out.
        let ring = BufRing::core_default().unwrap();
        assert_eq!(ring.lent(), 0);
        let waiting =
            percore_engine::scope::move_on_after(Duration::from_millis(5), conn.read_line(10))
                .await;
        assert!(waiting.is_none());
        assert_eq!(ring.lent(), 0, "waiting for data holds no buffer");
    });
}

#[test]
fn peer_reset_mid_write_is_an_error_not_a_panic() {
    percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        // SO_LINGER 0 then close: the peer resets the connection.
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        sleep(Duration::from_millis(5)).await;
        let mut failed = false;
        for _ in 0..100 {
            let (r, _) = conn.write(vec![1u8; 64 * 1024]).await;
            if r.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "writing to a reset peer must fail");
        let mut conn = BufStream::new(conn);
        assert!(conn.read_some(10).await.is_err() || conn.read_some(10).await.unwrap().is_none());
    });
}

#[test]
fn ipv6_loopback() {
    percore_engine::block_on(async {
        let Ok(mut listener) = TcpListener::bind("[::1]:0".parse().unwrap()) else {
            eprintln!("skipped: no IPv6 loopback on this host");
            return;
        };
        let addr = listener.local_addr();
        let server = percore_engine::spawn(async move {
            let (conn, peer) = listener.accept().await.unwrap();
            assert!(peer.is_ipv6());
            let mut conn = BufStream::new(conn);
            let l = conn.read_line(100).await.unwrap().unwrap();
            conn.write(&l).await.unwrap();
            conn.flush().await.unwrap();
        });
        let mut c = BufStream::new(TcpStream::connect(addr).await.unwrap());
        c.write(b"six\n").await.unwrap();
        c.flush().await.unwrap();
        assert_eq!(c.read_line(100).await.unwrap().unwrap(), b"six\n");
        server.await.unwrap();
    });
}

#[test]
fn refused_and_timed_out_connects() {
    percore_engine::block_on(async {
        // A port that is bound but not listening: held (no other test can be handed it) and
        // refusing connections.
        let holder =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        holder.bind(&loopback().into()).unwrap();
        let port = holder.local_addr().unwrap().as_socket().unwrap();
        let err = TcpStream::connect(port).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

        // A listener with a full backlog drops SYNs: the connect hangs until the deadline.
        let full = TcpListener::bind_with_backlog(loopback(), 0).unwrap();
        let addr = full.local_addr();
        let _fill: Vec<_> = (0..4)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)).ok()
            })
            .collect();
        let t0 = std::time::Instant::now();
        let err = TcpStream::connect_timeout(addr, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(t0.elapsed() >= Duration::from_millis(100));
    });
}

#[test]
fn std_interop_and_addresses() {
    percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (conn, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(conn.local_addr().unwrap(), addr);
        conn.set_keepalive(Some(Duration::from_secs(30))).unwrap();
        let std_conn: std::net::TcpStream = conn.into_owned_fd().unwrap().into();
        let mut std_conn = std_conn;
        std_conn.write_all(b"via std").unwrap();
        let mut buf = [0u8; 7];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"via std");
        client.shutdown(Shutdown::Both).unwrap();
        assert_eq!(listener.stats().accepted, 1);
    });
}

/// `write_vec` adopts the vector when nothing is buffered and appends after buffered bytes
/// otherwise: the peer reads everything, in order.
#[test]
fn write_vec_keeps_order_with_buffered_bytes() {
    percore_engine::block_on(async {
        let (_listener, mut client, conn) = accepted_pair().await;
        let mut conn = BufStream::with_write_limit(conn, 8);
        conn.write_vec(b"abc".to_vec()).await.unwrap();
        conn.write(b"de").await.unwrap();
        conn.write_vec(b"fghijklmn".to_vec()).await.unwrap();
        conn.flush().await.unwrap();
        conn.write_vec(b"o".to_vec()).await.unwrap();
        conn.flush().await.unwrap();
        drop(conn);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut got).unwrap();
        assert_eq!(got, b"abcdefghijklmno");
    });
}

/// `send_whole` with 8 MiB, far more than the socket buffers hold, to a peer that reads
/// slowly: one op, completed with the whole length (the kernel retried the short sends), every
/// byte arriving in order. Then a peer that resets mid-send: an error or a short count, never
/// the whole length, and no panic.
#[test]
fn send_whole_completes_in_full_or_fails() {
    percore_engine::block_on(async {
        let (_listener, mut client, conn) = accepted_pair().await;
        let payload: Vec<u8> = (0..8 << 20).map(|i| (i * 7 % 253) as u8).collect();
        let expected = payload.clone();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            while got.len() < expected.len() {
                let n = client.read(&mut buf).unwrap();
                assert!(n > 0, "closed early");
                got.extend_from_slice(&buf[..n]);
                std::thread::sleep(Duration::from_micros(200));
            }
            assert!(got == expected, "bytes differ");
            client
        });
        let (res, back) = conn.send_whole(payload).await;
        assert_eq!(res.unwrap(), back.len());
        let client = reader.join().unwrap();

        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        let send = percore_engine::spawn(async move { conn.send_whole(vec![7u8; 32 << 20]).await });
        // The send fills the socket buffers and waits in the kernel; then the peer resets.
        sleep(Duration::from_millis(20)).await;
        drop(client);
        let (res, back) = send.await.unwrap();
        match res {
            Ok(n) => assert!(n < back.len(), "a reset peer took all {n} bytes"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
                "{e}"
            ),
        }
    });
}

/// The core's receive ring runs dry (the reader holds every buffer): the receive waits instead
/// of failing, resumes when the buffers come back, and no byte is lost or reordered.
#[test]
fn a_dry_receive_ring_pauses_the_receive_and_loses_nothing() {
    use percore_engine::buf::ring::CORE_RING_ENTRIES;
    percore_engine::block_on(async {
        let (_listener, mut client, mut conn) = accepted_pair().await;
        let total = (usize::from(CORE_RING_ENTRIES) + 512) * 4096;
        let payload: Vec<u8> = (0..total).map(|i| (i * 13 % 241) as u8).collect();
        let expected = payload.clone();
        let writer = std::thread::spawn(move || {
            client.write_all(&payload).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            client
        });
        let mut got = Vec::with_capacity(total);
        let mut held = Vec::new();
        while held.len() < usize::from(CORE_RING_ENTRIES) {
            let chunk = conn
                .recv_chunk()
                .await
                .unwrap()
                .expect("data before the end");
            held.push(chunk);
        }
        let ring = BufRing::core_default().unwrap();
        assert_eq!(
            ring.lent(),
            usize::from(CORE_RING_ENTRIES),
            "every buffer is held"
        );
        // Dry: nothing can be received until buffers come back.
        {
            let recv = std::pin::pin!(conn.recv_chunk());
            let timer = std::pin::pin!(sleep(Duration::from_millis(20)));
            assert!(matches!(
                percore_engine::first(recv, timer).await,
                percore_engine::First::B(..)
            ));
        }
        for chunk in held.drain(..) {
            got.extend_from_slice(&chunk);
        }
        while let Some(chunk) = conn.recv_chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert!(
            got == expected,
            "bytes lost or reordered ({} of {total})",
            got.len()
        );
        drop(writer.join().unwrap());
        assert_eq!(ring.lent(), 0);
    });
}

#[test]
fn handing_the_fd_over_loses_no_received_byte() {
    percore_engine::block_on(async {
        let (_listener, mut client, mut conn) = accepted_pair().await;
        client.write_all(b"first").unwrap();
        // The receive is armed now, and takes more bytes from the socket than are read.
        let chunk = conn.recv_chunk().await.unwrap().unwrap();
        assert_eq!(&chunk[..], b"first");
        drop(chunk);
        client.write_all(b" second").unwrap();
        sleep(Duration::from_millis(20)).await;
        // Refused while the receive is armed: the stream comes back, nothing dropped.
        let conn = conn.into_owned_fd().expect_err("a receive is armed");
        let (fd, received) = conn.into_owned_fd_with_received().await.unwrap();
        client.write_all(b" third").unwrap();
        let mut std_conn = std::net::TcpStream::from(fd);
        std_conn
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = vec![0u8; b" second third".len() - received.len()];
        std_conn.read_exact(&mut rest).unwrap();
        let mut all = received;
        all.extend_from_slice(&rest);
        assert_eq!(all, b" second third", "every byte, once, in order");
    });
}
