//! Durations and sizes at the top of their range: `Duration::MAX` as an idle or connect timeout
//! means "no deadline" (before, `Instant::now() + Duration::MAX` panicked in the read, the
//! handler or the connect), and a datagram size whose ring buffers would overflow with the
//! `recvmsg` header is refused (before, a release build wrapped it to a tiny size).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use percore_engine::{first, First};
use percore_net::service::{TcpService, UdpService};
use percore_net::tcp::{TcpListener, TcpStream};
use percore_net::udp::{datagram_ring, UdpSocket};
use percore_net::BufStream;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn an_idle_timeout_of_duration_max_is_no_timeout() {
    percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        let mut conn = BufStream::new(conn);
        conn.set_idle_timeout(Some(Duration::MAX));
        client.write_all(b"no deadline\n").unwrap();
        assert_eq!(conn.read_line(64).await.unwrap().unwrap(), b"no deadline\n");
    });
}

#[test]
fn a_service_idle_timeout_of_duration_max_is_no_timeout() {
    percore_engine::block_on(async {
        let listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let service = Box::pin(async move {
            TcpService::new()
                .idle_timeout(Duration::MAX)
                .serve(listener, |mut conn, _| async move {
                    while let Some(line) = conn.read_line(64).await? {
                        conn.write(&line).await?;
                        conn.flush().await?;
                    }
                    Ok(())
                })
                .await
        });
        let client = Box::pin(async move {
            let mut c = BufStream::new(TcpStream::connect(addr).await.unwrap());
            c.write(b"echo\n").await.unwrap();
            c.flush().await.unwrap();
            c.read_line(64).await.unwrap()
        });
        match first(service, client).await {
            First::A(result, _) => panic!("the service ended first: {result:?}"),
            First::B(echo, _) => assert_eq!(echo.as_deref(), Some(&b"echo\n"[..])),
        }
    });
}

#[test]
fn a_connect_timeout_of_duration_max_connects() {
    percore_engine::block_on(async {
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        let conn = TcpStream::connect_timeout(listener.local_addr().unwrap(), Duration::MAX)
            .await
            .unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let (sent, _) = conn.write_all(b"hi".to_vec()).await;
        sent.unwrap();
        let mut got = [0u8; 2];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    });
}

#[test]
fn a_datagram_size_past_the_ring_buffer_range_is_refused() {
    percore_engine::block_on(async {
        for max in [usize::MAX, usize::MAX - 1, u32::MAX as usize] {
            let err = datagram_ring(max, 4).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{max}: {err}");
        }
        let socket = UdpSocket::bind_sharded(loopback()).unwrap();
        let err = UdpService::new()
            .max_datagram(usize::MAX)
            .serve(socket, |_, _| async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    });
}
