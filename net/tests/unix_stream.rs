//! Unix domain stream sockets with the same buffered API as TCP.

use std::io::Write;

use percore_net::unix::{UnixListener, UnixStream};
use percore_net::BufStream;

mod support;
use support::echo_until_closed;

fn socket_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("percore-{}-{name}.sock", std::process::id()))
}

#[test]
fn listener_accepts_and_buffered_lines_round_trip() {
    percore_engine::block_on(async {
        let path = socket_path("lines");
        let mut listener = UnixListener::bind(&path).unwrap();
        let server = percore_engine::spawn(async move {
            let conn = listener.accept().await.unwrap();
            let mut conn = BufStream::new(conn);
            while let Some(line) = conn.read_line(128).await.unwrap() {
                conn.write(&line.to_ascii_uppercase()).await.unwrap();
                conn.flush().await.unwrap();
            }
            listener.stats().accepted
        });
        let mut client = BufStream::new(UnixStream::connect(&path).await.unwrap());
        for word in ["unix\n", "domain\n", "sockets\n"] {
            client.write(word.as_bytes()).await.unwrap();
            client.flush().await.unwrap();
            let back = client.read_line(128).await.unwrap().unwrap();
            assert_eq!(back, word.to_uppercase().into_bytes());
        }
        client.shutdown_write().await.unwrap();
        assert_eq!(server.await.unwrap(), 1);
        assert!(!path.exists(), "the socket file goes with the listener");
    });
}

#[test]
fn pairs_and_limits() {
    percore_engine::block_on(async {
        let (a, b) = UnixStream::pair().unwrap();
        let mut b = BufStream::new(b);
        let (r, _) = a.write_all(vec![b'z'; 300]).await;
        r.unwrap();
        let err = b.read_line(100).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(
            b.read_exact(300).await.unwrap(),
            vec![b'z'; 300],
            "nothing was lost"
        );
        drop(a);
        assert_eq!(b.read_some(10).await.unwrap(), None);
    });
}

#[test]
fn std_interop_and_connect_errors() {
    percore_engine::block_on(async {
        let missing = socket_path("missing");
        assert!(UnixStream::connect(&missing).await.is_err());
        let (std_a, mut std_b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut a = BufStream::new(UnixStream::from_std(std_a));
        std_b.write_all(b"from std\n").unwrap();
        assert_eq!(a.read_line(64).await.unwrap().unwrap(), b"from std\n");
    });
}

#[test]
fn abstract_namespace_sockets_connect() {
    percore_engine::block_on(async {
        let name = format!("\0percore-{}-abstract", std::process::id());
        let mut listener = UnixListener::bind(&name).unwrap();
        let client = UnixStream::connect(&name).await.unwrap();
        let server = listener.accept().await.unwrap();
        let (sent, _) = client.write_all(b"abstract\n".to_vec()).await;
        sent.unwrap();
        let mut server = BufStream::new(server);
        assert_eq!(server.read_line(64).await.unwrap().unwrap(), b"abstract\n");
    });
}

/// A Unix stream relayed back to itself and one relayed to a second stream: every byte comes
/// through in order, and each relay ends with its source's end.
#[test]
fn unix_streams_relay() {
    use std::io::Read;
    percore_engine::block_on(async {
        // An echo: what the std side writes comes back.
        let (mut echo, std_peer) = {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            (UnixStream::from_std(a), b)
        };
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let peer = std::thread::spawn(move || {
            let mut writer = std_peer.try_clone().unwrap();
            let writing = std::thread::spawn(move || {
                writer.write_all(&payload).unwrap();
                writer.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut reader = std_peer;
            let mut got = vec![0u8; 300_000];
            reader.read_exact(&mut got).unwrap();
            writing.join().unwrap();
            got
        });
        assert_eq!(echo.relay_back().unwrap().await.unwrap(), 300_000);
        let got = loop {
            if peer.is_finished() {
                break peer.join().unwrap();
            }
            percore_engine::time::sleep(std::time::Duration::from_millis(1)).await;
        };
        assert!(got == expected, "the echo differs");

        // One way: a's bytes go to c through b's socket.
        let (a, mut b) = UnixStream::pair().unwrap();
        let (c_side, c) = UnixStream::pair().unwrap();
        let (r, _) = a.write_all(b"through".to_vec()).await;
        r.unwrap();
        drop(a);
        let relayed = b.relay_to(c_side.fd()).unwrap().await.unwrap();
        assert_eq!(relayed, 7);
        let mut c = BufStream::new(c);
        assert_eq!(c.read_exact(7).await.unwrap(), b"through");
    });
}

/// A TCP front for a Unix socket's server (`relay_both` over one stream of each kind): the
/// client's bytes reach the Unix echo server and come back, and each end is passed on.
#[test]
fn relay_both_joins_a_tcp_stream_and_a_unix_stream() {
    use std::io::Read;
    let path = socket_path("relay-both");
    let _ = std::fs::remove_file(&path);
    let upstream = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let echo = std::thread::spawn(move || echo_until_closed(upstream.accept().unwrap().0));
    percore_engine::block_on(async {
        let mut listener =
            percore_net::tcp::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        let client = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
            let mut writer = client.try_clone().unwrap();
            let sent = payload.clone();
            let writing = std::thread::spawn(move || {
                writer.write_all(&sent).unwrap();
                writer.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            writing.join().unwrap();
            got == payload
        });
        let (mut front, _) = listener.accept().await.unwrap();
        let mut back = UnixStream::connect(&path).await.unwrap();
        let relayed = percore_net::relay_both(&mut front, &mut back)
            .await
            .unwrap();
        assert_eq!(relayed, (200_000, 200_000));
        drop((front, back));
        loop {
            if client.is_finished() {
                break;
            }
            percore_engine::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(client.join().unwrap(), "the proxied echo differs");
    });
    echo.join().unwrap();
    let _ = std::fs::remove_file(&path);
}
