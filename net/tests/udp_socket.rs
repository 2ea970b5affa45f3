//! UDP on real loopback sockets: round trips, truncation, connected mode, IPv6, sharding.

use std::net::SocketAddr;
use std::time::Duration;

use percore_net::udp::UdpSocket;

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn datagrams_round_trip_with_their_sender() {
    percore_engine::block_on(async {
        let a = UdpSocket::bind(any()).unwrap();
        let b = UdpSocket::bind(any()).unwrap();
        for size in [0usize, 1, 512, 1472, 9000, 65_507] {
            let payload = vec![(size % 251) as u8; size];
            let (r, _) = a.send_to(payload.clone(), b.local_addr()).await;
            assert_eq!(r.unwrap(), size);
            let (meta, buf) = b.recv_from(Vec::with_capacity(65_536)).await;
            let meta = meta.unwrap();
            assert_eq!(meta.len, size, "zero-length datagrams are data too");
            assert_eq!(meta.from, Some(a.local_addr()));
            assert!(!meta.truncated);
            assert_eq!(buf, payload);
        }
    });
}

#[test]
fn a_datagram_longer_than_the_buffer_is_reported_truncated() {
    percore_engine::block_on(async {
        let a = UdpSocket::bind(any()).unwrap();
        let b = UdpSocket::bind(any()).unwrap();
        let (r, _) = a.send_to(vec![7u8; 1000], b.local_addr()).await;
        r.unwrap();
        let (meta, buf) = b.recv_from(Vec::with_capacity(100)).await;
        let meta = meta.unwrap();
        assert!(meta.truncated);
        assert_eq!(meta.len, 100);
        assert_eq!(buf.len(), 100);
    });
}

#[test]
fn a_connected_socket_ignores_strangers() {
    percore_engine::block_on(async {
        let peer = UdpSocket::bind(any()).unwrap();
        let stranger = UdpSocket::bind(any()).unwrap();
        let me = UdpSocket::bind(any()).unwrap();
        me.connect(peer.local_addr()).unwrap();
        assert_eq!(me.peer_addr().unwrap(), peer.local_addr());
        let (r, _) = stranger.send_to(b"inject".to_vec(), me.local_addr()).await;
        r.unwrap();
        let (r, _) = peer.send_to(b"real".to_vec(), me.local_addr()).await;
        r.unwrap();
        let (meta, buf) = me.recv(Vec::with_capacity(64)).await;
        assert_eq!(meta.unwrap().from, Some(peer.local_addr()));
        assert_eq!(buf, b"real");
        let nothing = percore_engine::scope::move_on_after(
            Duration::from_millis(20),
            me.recv(Vec::with_capacity(64)),
        )
        .await;
        assert!(
            nothing.is_none(),
            "the stranger's datagram was dropped by the kernel"
        );
        let (r, _) = me.send(b"reply".to_vec()).await;
        r.unwrap();
        let (meta, buf) = peer.recv_from(Vec::with_capacity(64)).await;
        assert_eq!(meta.unwrap().from, Some(me.local_addr()));
        assert_eq!(buf, b"reply");
    });
}

#[test]
fn ipv6_loopback_datagrams() {
    percore_engine::block_on(async {
        let Ok(a) = UdpSocket::bind("[::1]:0".parse().unwrap()) else {
            eprintln!("skipped: no IPv6 loopback on this host");
            return;
        };
        let b = UdpSocket::bind("[::1]:0".parse().unwrap()).unwrap();
        let (r, _) = a.send_to(b"v6".to_vec(), b.local_addr()).await;
        r.unwrap();
        let (meta, buf) = b.recv_from(Vec::with_capacity(8)).await;
        assert!(meta.unwrap().from.unwrap().is_ipv6());
        assert_eq!(buf, b"v6");
    });
}

#[test]
fn sharded_sockets_share_a_port() {
    percore_engine::block_on(async {
        let first = UdpSocket::bind_sharded(any()).unwrap();
        let second = UdpSocket::bind_sharded(first.local_addr()).unwrap();
        assert_eq!(first.local_addr(), second.local_addr());
        assert!(
            UdpSocket::bind(first.local_addr()).is_err(),
            "without SO_REUSEPORT it is taken"
        );
    });
}
