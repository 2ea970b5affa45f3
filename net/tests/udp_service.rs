//! The UDP service on a real socket: a handler per datagram answers it, truncated datagrams are
//! counted and dropped, a failing or panicking handler is counted, and a shutdown ends the
//! service.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use percore_engine::Runtime;
use percore_net::service::UdpService;
use percore_net::udp::UdpSocket;

#[test]
fn answers_datagrams_counts_truncated_and_failed_ones_and_shuts_down() {
    let rt = Runtime::builder().cpus([0]).build().unwrap();
    let handle = rt.handle();
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let client = std::thread::spawn(move || {
        let addr = addr_rx.recv().unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        for i in 0..100 {
            let msg = format!("holla {i}");
            sock.send_to(msg.as_bytes(), addr).unwrap();
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(from, addr);
            assert_eq!(&buf[..n], msg.to_uppercase().as_bytes());
        }
        // Too long: dropped and counted, never answered cut.
        sock.send_to(&[b'x'; 500], addr).unwrap();
        // The handler fails on this one, and panics on the next: counted, the service goes on.
        sock.send_to(b"fail", addr).unwrap();
        sock.send_to(b"panic", addr).unwrap();
        sock.send_to(b"last", addr).unwrap();
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"LAST");
        handle.shutdown();
    });
    let stats = rt
        .run(|_| {
            let addr_tx = addr_tx.clone();
            async move {
                let socket = UdpSocket::bind_sharded("127.0.0.1:0".parse().unwrap()).unwrap();
                addr_tx.send(socket.local_addr()).unwrap();
                UdpService::new()
                    .max_datagram(128)
                    .serve(socket, |socket, datagram| async move {
                        if &datagram.payload[..] == b"fail" {
                            return Err(std::io::Error::other("asked to fail"));
                        }
                        if &datagram.payload[..] == b"panic" {
                            panic!("asked to panic");
                        }
                        let reply = datagram.payload.to_ascii_uppercase();
                        let to = datagram
                            .source
                            .ok_or_else(|| std::io::Error::other("no source"))?;
                        drop(datagram);
                        socket.send_to(reply, to).await.0?;
                        Ok(())
                    })
                    .await
                    .unwrap()
            }
        })
        .unwrap();
    client.join().unwrap();
    let stats = stats[0];
    eprintln!("udp service: {stats:?}");
    assert_eq!(stats.received, 104);
    assert_eq!(stats.truncated, 1);
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.completed, 101);
    assert_eq!(stats.panicked, 1);
}
