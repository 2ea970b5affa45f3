//! A listener that fails for good (not one connection's error) stops the service's accepting,
//! not its serving: the connections in flight are served to their end, and the error is the
//! service's result then.
//!
//! In hand-off mode the acceptor's failure ends the service on every core, each once its
//! connections have: the cores that wait on the hand-off are told no more will come.
//!
//! The failure: `shutdown(2)` on the listening socket, after which every accept fails with
//! `EINVAL`. The test finds the listener's fd by its socket inode in `/proc/net/tcp`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::mpsc;
use std::time::Duration;

use percore_engine::Runtime;
use percore_net::service::{Accept, TcpService};
use percore_net::tcp::{Handoff, TcpListener};
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

/// A blocking client connection that asks one line and reads one back.
struct Asker {
    conn: std::net::TcpStream,
    lines: BufReader<std::net::TcpStream>,
}

impl Asker {
    fn connect(addr: SocketAddr) -> Asker {
        let conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let lines = BufReader::new(conn.try_clone().unwrap());
        Asker { conn, lines }
    }

    fn ask(&mut self, line: &str) -> String {
        self.conn.write_all(line.as_bytes()).unwrap();
        let mut back = String::new();
        self.lines.read_line(&mut back).unwrap();
        back
    }
}

#[test]
fn a_failed_handoff_acceptor_ends_the_service_on_every_core_once_it_has_served() {
    let rt = Runtime::builder().cpus(0..2).build().unwrap();
    let handle = rt.handle();
    let handoff = Handoff::new(2);
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let clients = std::thread::spawn(move || {
        let addr = addr_rx.recv().unwrap();
        // Two connections: the least-loaded choice puts one on each core.
        let mut askers = [Asker::connect(addr), Asker::connect(addr)];
        let mut cores: Vec<String> = askers.iter_mut().map(|a| a.ask("core?\n")).collect();
        cores.sort();
        let fd = listening_fd(addr.port());
        // SAFETY: shutdown(2) on a socket fd of this process; it stays open.
        assert_eq!(unsafe { libc::shutdown(fd, libc::SHUT_RDWR) }, 0);
        std::thread::sleep(Duration::from_millis(50));
        let after: Vec<String> = askers.iter_mut().map(|a| a.ask("after\n")).collect();
        (cores, after)
    });
    let (done_tx, done_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let results = rt.run(|_| {
            let handoff = handoff.clone();
            let addr_tx = addr_tx.clone();
            async move {
                let core = percore_engine::current_core().index;
                let listener = (core == 0).then(|| {
                    let l = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                    addr_tx.send(l.local_addr()).unwrap();
                    l
                });
                let accept = Accept::Handoff { handoff, listener };
                let served = TcpService::new()
                    .serve_with(accept, move |mut conn, _| async move {
                        while let Some(line) = conn.read_line(64).await? {
                            let reply = if line == b"core?\n" {
                                format!("{core}\n").into_bytes()
                            } else {
                                line.to_vec()
                            };
                            conn.write(&reply).await?;
                            conn.flush().await?;
                        }
                        Ok(())
                    })
                    .await;
                (
                    core,
                    served
                        .map(|stats| stats.accepted)
                        .map_err(|e| e.raw_os_error()),
                )
            }
        });
        done_tx.send(()).unwrap();
        results
    });
    let (cores, after) = clients.join().unwrap();
    assert_eq!(cores, ["0\n", "1\n"], "one connection on each core");
    assert_eq!(
        after,
        ["after\n", "after\n"],
        "both served after the failure"
    );
    // The clients' connections closed with their thread: every core's service ends now.
    if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        handle.shutdown();
        server.join().unwrap().unwrap();
        panic!("a core went on waiting for hand-offs after the acceptor failed");
    }
    let mut results = server.join().unwrap().unwrap();
    results.sort();
    assert_eq!(
        results,
        [(0, Err(Some(libc::EINVAL))), (1, Ok(1))],
        "the acceptor's core ends with the listener's error, the other with its stats"
    );
}
