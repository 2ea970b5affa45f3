//! Multishot recvmsg into a provided buffer ring, on real UDP sockets: senders, payloads, many
//! datagrams in one arming, truncation reported, IPv6, a ring that runs dry and recovers.

mod common;

use std::net::UdpSocket;

use common::*;
use percore_engine::buf::ring::BufRing;
use percore_engine::ops::{self, RECVMSG_OVERHEAD};

fn udp(addr: &str) -> (percore_engine::fd::SharedFd, std::net::SocketAddr) {
    let s = UdpSocket::bind(addr).unwrap();
    let local = s.local_addr().unwrap();
    (shared(s), local)
}

#[test]
fn datagrams_with_their_senders_and_truncation() {
    percore_engine::block_on(async {
        let ring = BufRing::new(64, (RECVMSG_OVERHEAD + 100) as u32).unwrap();
        let (fd, addr) = udp("127.0.0.1:0");
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut stream = ops::recvmsg_multishot(&fd, &ring).unwrap();
        for i in 0..40u8 {
            peer.send_to(&[i; 10], addr).unwrap();
        }
        peer.send_to(b"", addr).unwrap();
        peer.send_to(&[7u8; 300], addr).unwrap();
        for i in 0..40u8 {
            let d = stream.next().await.unwrap().expect("still armed");
            assert_eq!(&d.payload[..], &[i; 10]);
            assert_eq!(d.source, Some(peer.local_addr().unwrap()));
            assert!(!d.truncated);
            assert_eq!(d.len, 10);
        }
        let empty = stream.next().await.unwrap().unwrap();
        assert!(
            empty.payload.is_empty() && !empty.truncated,
            "empty datagrams are data"
        );
        // The kernel ends the multishot after an empty datagram; re-arming loses nothing.
        assert!(stream.next().await.unwrap().is_none());
        stream = ops::recvmsg_multishot(&fd, &ring).unwrap();
        let cut = stream.next().await.unwrap().unwrap();
        assert!(
            cut.truncated,
            "a 300-byte datagram in a 100-byte payload space is cut"
        );
        assert_eq!((cut.payload.len(), cut.len), (100, 300));
        assert_eq!(&cut.payload[..], &[7u8; 100]);
        drop((empty, cut));
        assert_eq!(ring.lent(), 0);
    });
}

#[test]
fn ipv6_senders() {
    percore_engine::block_on(async {
        let Ok(peer) = UdpSocket::bind("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        let ring = BufRing::new(4, 256).unwrap();
        let (fd, addr) = udp("[::1]:0");
        let mut stream = ops::recvmsg_multishot(&fd, &ring).unwrap();
        peer.send_to(b"six", addr).unwrap();
        let d = stream.next().await.unwrap().unwrap();
        assert_eq!(&d.payload[..], b"six");
        assert_eq!(d.source, Some(peer.local_addr().unwrap()));
    });
}

#[test]
fn a_ring_too_small_for_the_header_is_refused() {
    percore_engine::block_on(async {
        let ring = BufRing::new(4, RECVMSG_OVERHEAD as u32).unwrap();
        let (fd, _) = udp("127.0.0.1:0");
        let err = ops::recvmsg_multishot(&fd, &ring).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    });
}

#[test]
fn ring_runs_dry_then_recovers() {
    percore_engine::block_on(async {
        let ring = BufRing::new(2, 128).unwrap();
        let (fd, addr) = udp("127.0.0.1:0");
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut stream = ops::recvmsg_multishot(&fd, &ring).unwrap();
        for i in 0..4u8 {
            peer.send_to(&[i; 8], addr).unwrap();
        }
        let_kernel_work().await;
        let mut held = Vec::new();
        loop {
            match stream.next().await {
                Ok(Some(d)) => held.push(d),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(held.len(), 2);
        drop(held);
        assert_eq!(ring.lent(), 0);
        let mut stream = ops::recvmsg_multishot(&fd, &ring).unwrap();
        let d = stream.next().await.unwrap().unwrap();
        assert_eq!(
            &d.payload[..],
            &[2u8; 8],
            "queued datagrams arrive after re-arming"
        );
    });
}
