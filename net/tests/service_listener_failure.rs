//! A listener that fails for good (not one connection's error) stops the service's accepting,
//! not its serving: the connections in flight are served to their end, and the error is the
//! service's result then.
//!
//! The failure: `shutdown(2)` on the listening socket, after which every accept fails with
//! `EINVAL`. The test finds the listener's fd by its socket inode in `/proc/net/tcp`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use percore_net::service::{Accept, TcpService};
use percore_net::tcp::TcpListener;
use percore_net::BufStream;

/// Echoes lines until the peer closes.
async fn echo_lines(mut conn: BufStream, _peer: SocketAddr) -> std::io::Result<()> {
    while let Some(line) = conn.read_line(64).await? {
        conn.write(&line).await?;
        conn.flush().await?;
    }
    Ok(())
}

/// This process's fd of the TCP socket listening on `port`.
fn listening_fd(port: u16) -> RawFd {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inode = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| {
            let local = f[1].rsplit(':').next().unwrap();
            u16::from_str_radix(local, 16).unwrap() == port && f[3] == "0A"
        })
        .map(|f| f[9].to_string())
        .expect("the listener in /proc/net/tcp");
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        if std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy() == wanted) {
            return entry.file_name().to_string_lossy().parse().unwrap();
        }
    }
    panic!("no fd for {wanted}");
}

#[test]
fn a_failed_listener_stops_accepting_and_lets_the_connections_in_flight_finish() {
    percore_engine::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        let service = percore_engine::spawn(async move {
            TcpService::new()
                .serve_with(Accept::Sharded(listener), echo_lines)
                .await
        });
        // A blocking client on its own thread: the service runs on this core meanwhile.
        let talk = std::thread::spawn(move || {
            let conn = std::net::TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut lines = BufReader::new(conn.try_clone().unwrap());
            let mut ask = |line: &str| {
                (&conn).write_all(line.as_bytes()).unwrap();
                let mut back = String::new();
                lines.read_line(&mut back).unwrap();
                back
            };
            let before = ask("before\n");
            // Break the listener: every accept from now on fails with EINVAL.
            let fd = listening_fd(addr.port());
            // SAFETY: shutdown(2) on a socket fd of this process; it stays open.
            assert_eq!(unsafe { libc::shutdown(fd, libc::SHUT_RDWR) }, 0);
            std::thread::sleep(Duration::from_millis(50));
            // Still served after the listener failed.
            let after = ask("after\n");
            (before, after)
        });
        while !talk.is_finished() {
            percore_engine::time::sleep(Duration::from_millis(1)).await;
        }
        let talked = talk.join().unwrap();
        // The connection closed with the client's thread: the service ends now, with the
        // listener's error.
        let result = percore_engine::scope::move_on_after(Duration::from_secs(5), service)
            .await
            .expect("the service ended once its connection did")
            .unwrap();
        assert_eq!(
            talked,
            ("before\n".into(), "after\n".into()),
            "served throughout"
        );
        let err = result.expect_err("the listener's failure is the service's result");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    });
}
