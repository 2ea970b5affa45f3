//! Helpers shared by net's test binaries.

use std::net::SocketAddr;

use percore_net::tcp::TcpListener;
use percore_net::BufStream;

pub(crate) fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server-side `BufStream` (write bound `write_limit`) and the client's std socket.
pub(crate) async fn pair(write_limit: usize) -> (BufStream, std::net::TcpStream) {
    let mut listener = TcpListener::bind(loopback()).unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
    let (conn, _) = listener.accept().await.unwrap();
    (BufStream::with_write_limit(conn, write_limit), client)
}
