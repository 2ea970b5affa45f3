//! Helpers shared by net's test binaries (each uses some of them).
#![allow(dead_code)]

use std::net::SocketAddr;

use percore_net::tcp::TcpListener;
use percore_net::BufStream;

pub(crate) fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server-side `TcpStream` on this core and the client's std socket, connected, and the
/// listener (its accept op stays armed while it lives: a test that counts ops keeps it).
pub(crate) async fn tcp_pair() -> (
    percore_net::tcp::TcpStream,
    std::net::TcpStream,
    TcpListener,
) {
    let mut listener = TcpListener::bind(loopback()).unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
    let (conn, _) = listener.accept().await.unwrap();
    (conn, client, listener)
}

/// A server-side `BufStream` (write bound `write_limit`) and the client's std socket.
pub(crate) async fn pair(write_limit: usize) -> (BufStream, std::net::TcpStream) {
    let mut listener = TcpListener::bind(loopback()).unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
    let (conn, _) = listener.accept().await.unwrap();
    (BufStream::with_write_limit(conn, write_limit), client)
}

/// Polls `cond` every millisecond for up to 5 s.
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        percore_engine::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// A peer that writes and never reads: 16 KiB blocks from a thread of its own until a write
/// fails; the thread returns that error.
pub(crate) fn flood(peer: &std::net::TcpStream) -> std::thread::JoinHandle<std::io::Error> {
    use std::io::Write;
    let mut writer = peer.try_clone().unwrap();
    std::thread::spawn(move || {
        let block = [9u8; 16 * 1024];
        loop {
            if let Err(e) = writer.write_all(&block) {
                return e;
            }
        }
    })
}

/// Waits for a [`flood`]ing peer's write to fail, and checks that it failed because the
/// server closed the socket (a reset or a broken pipe), not by blocking for good.
pub(crate) async fn expect_refused(writing: std::thread::JoinHandle<std::io::Error>) {
    eventually("the peer's failed write", || writing.is_finished()).await;
    assert_peer_gone(&writing.join().unwrap());
}

/// Checks that `e` says the other end is gone (a reset or a broken pipe).
pub(crate) fn assert_peer_gone(e: &std::io::Error) {
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{e}"
    );
}

/// Echoes what the peer of `stream` (one accepted, blocking std stream) sends, until it
/// closes its side.
pub(crate) fn echo_until_closed(mut stream: impl std::io::Read + std::io::Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            return;
        }
        stream.write_all(&buf[..n]).unwrap();
    }
}
