//! IPv6 sockets are IPv6-only (`IPV6_V6ONLY`, as `TcpListener::bind` and `UdpSocket::bind`
//! document), whatever the host's `net.ipv6.bindv6only`: a listener on `[::]` takes no IPv4
//! connection, and a UDP socket on `[::]` sends no datagram to an IPv4 address.

use std::net::SocketAddr;

use percore_net::tcp::TcpListener;
use percore_net::udp::UdpSocket;

#[test]
fn a_listener_on_the_ipv6_wildcard_takes_no_ipv4_connection() {
    percore_engine::block_on(async {
        let Ok(listener) = TcpListener::bind("[::]:0".parse().unwrap()) else {
            eprintln!("skipped: no IPv6 on this host");
            return;
        };
        let v4: SocketAddr = ([127, 0, 0, 1], listener.local_addr().port()).into();
        // Nothing else listens on that port for IPv4 (the port was free when bound, and an
        // IPv4 socket taking it since would have to have asked for it by number).
        let err = std::net::TcpStream::connect(v4).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    });
}

#[test]
fn a_udp_socket_on_the_ipv6_wildcard_sends_no_ipv4_datagram() {
    percore_engine::block_on(async {
        let Ok(socket) = UdpSocket::bind("[::]:0".parse().unwrap()) else {
            eprintln!("skipped: no IPv6 on this host");
            return;
        };
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (sent, _) = socket
            .send_to(b"v4?".to_vec(), peer.local_addr().unwrap())
            .await;
        assert!(sent.is_err(), "an IPv6-only socket sent to IPv4: {sent:?}");
    });
}
