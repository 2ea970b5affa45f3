//! A connection reset while it waits in the listen backlog: the kernel still hands it to
//! accept, but its peer address is gone (`ENOTCONN`). The listener closes it and counts it as
//! aborted (before, it was dropped without a trace), and the next connection is served.

use std::io::{Read, Write};
use std::time::Duration;

use percore_net::tcp::TcpListener;
use socket2::{Domain, Socket, Type};

#[test]
fn a_connection_reset_before_accept_is_counted_as_aborted() {
    percore_engine::block_on(async {
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        // Connected, then reset (linger 0 makes close send RST) before anyone accepts it.
        let doomed = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        doomed.connect(&addr.into()).unwrap();
        doomed.set_linger(Some(Duration::ZERO)).unwrap();
        drop(doomed);
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let client_addr = client.local_addr().unwrap();

        let (conn, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client_addr, "the reset connection is skipped");
        let stats = listener.stats();
        assert_eq!((stats.accepted, stats.aborted), (1, 1), "{stats:?}");

        let (sent, _) = conn.write_all(b"ok".to_vec()).await;
        sent.unwrap();
        let mut got = [0u8; 2];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
        client.write_all(b"bye").unwrap();
    });
}
