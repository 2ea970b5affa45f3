//! Server-side UDP receive (multishot recvmsg into a buffer ring) on real loopback sockets:
//! many datagrams through a small ring, truncation reported, and a stream dropped mid-way
//! gives every buffer back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use percore_net::udp::{datagram_ring, UdpSocket};

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

const BATCH: usize = 50;
const BATCHES: usize = 10;

#[test]
fn many_datagrams_through_a_ring_smaller_than_a_batch() {
    percore_engine::block_on(async {
        let server = UdpSocket::bind(any()).unwrap();
        let client = std::net::UdpSocket::bind(any()).unwrap();
        // 8 buffers for batches of 50: the ring runs dry, the stream re-arms (at once: the
        // buffers taken so far were given back), and the datagrams wait in the socket meanwhile.
        let ring = datagram_ring(64, 8).unwrap();
        let mut datagrams = server.datagrams(&ring).unwrap();
        for batch in 0..BATCHES {
            for i in 0..BATCH {
                let n = (batch * BATCH + i) as u32;
                client
                    .send_to(&n.to_be_bytes(), server.local_addr())
                    .unwrap();
            }
            for i in 0..BATCH {
                let d = datagrams.next().await.unwrap();
                let n = (batch * BATCH + i) as u32;
                assert_eq!(&d.payload[..], &n.to_be_bytes(), "in order, none lost");
                assert_eq!(d.source, Some(client.local_addr().unwrap()));
                assert!(!d.truncated);
            }
        }
        assert_eq!(ring.lent(), 0);
        assert!(
            datagrams.ring_dry() > 0,
            "the ring ran dry and it was counted"
        );
    });
}

#[test]
fn a_datagram_longer_than_a_ring_buffer_is_reported_truncated() {
    percore_engine::block_on(async {
        let server = UdpSocket::bind(any()).unwrap();
        let client = std::net::UdpSocket::bind(any()).unwrap();
        let ring = datagram_ring(100, 4).unwrap();
        let mut datagrams = server.datagrams(&ring).unwrap();
        client.send_to(&[9u8; 1000], server.local_addr()).unwrap();
        client.send_to(b"", server.local_addr()).unwrap();
        client.send_to(b"after", server.local_addr()).unwrap();
        let cut = datagrams.next().await.unwrap();
        assert!(cut.truncated);
        assert_eq!((cut.payload.len(), cut.len), (100, 1000));
        let empty = datagrams.next().await.unwrap();
        assert!(
            empty.payload.is_empty() && !empty.truncated,
            "empty datagrams are data"
        );
        // The kernel ends the multishot after an empty datagram; the stream re-arms.
        let after = datagrams.next().await.unwrap();
        assert_eq!(&after.payload[..], b"after");
    });
}

#[test]
fn a_stream_dropped_mid_way_gives_every_buffer_back() {
    percore_engine::block_on(async {
        let server = UdpSocket::bind(any()).unwrap();
        let client = std::net::UdpSocket::bind(any()).unwrap();
        let ring = datagram_ring(64, 16).unwrap();
        let mut datagrams = server.datagrams(&ring).unwrap();
        for i in 0..10u8 {
            client.send_to(&[i; 8], server.local_addr()).unwrap();
        }
        let first = datagrams.next().await.unwrap();
        assert_eq!(&first.payload[..], &[0u8; 8]);
        // Dropped while datagrams wait in ring buffers (received, not taken) and one is held.
        percore_engine::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ring.lent(), 1, "the datagram taken holds its buffer");
        drop(datagrams);
        drop(first);
        client.send_to(b"late", server.local_addr()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ring.lent() != 0 {
            assert!(
                Instant::now() < deadline,
                "buffers still lent: {}",
                ring.lent()
            );
            percore_engine::time::sleep(Duration::from_millis(1)).await;
        }
    });
}
