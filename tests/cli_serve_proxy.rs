//! `percore serve proxy` as a user runs it: in front of a real redis-server and nginx, in front
//! of upstreams the test plays (to half-close, stall, vanish or refuse), over TCP and Unix
//! sockets; stopped by SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::{start, stop, wait_stopped, Server};

/// A proxy in front of `to` (a `HOST:PORT` or `unix:PATH`), with `extra` arguments.
fn proxy(to: &str, extra: &[&str]) -> Server {
    let mut args = vec!["proxy", "--to", to];
    args.extend_from_slice(extra);
    start(&args)
}

/// A loopback port nothing listens on (bound, then let go).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("percore-proxy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        common::nginx::terminate(&mut self.0);
    }
}

/// Polls `ready` every 50 ms for up to 10 s.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads until the peer's end (or an error) and says whether it came within `limit`.
fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    conn.set_read_timeout(Some(limit)).unwrap();
    let t0 = Instant::now();
    let mut sink = [0u8; 4096];
    loop {
        match conn.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
        if t0.elapsed() > limit {
            return false;
        }
    }
}

/// An upstream played by the test: each accepted connection is handed to `serve` on its own
/// thread.
fn upstream(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || serve(conn));
        }
    });
    addr
}

/// Echoes what it reads; at the client's end, ends its own side.
fn echo_then_end(mut conn: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

fn payload(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// redis-server on a free loopback port, in `dir`.
fn redis(dir: &Path) -> (Killed, SocketAddr) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (Debian's redis-server package; .ci/test-all installs it)");
    let server = Killed(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until("redis-server", || {
        let Ok(mut c) = TcpStream::connect(addr) else {
            return false;
        };
        let mut reply = [0u8; 7];
        c.write_all(b"PING\r\n").is_ok()
            && c.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    });
    (server, addr)
}

/// A RESP command.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn proxy_in_front_of_redis_keeps_a_deep_pipeline_in_order() {
    let dir = TempDir::new("redis");
    let (_redis, redis_addr) = redis(&dir.0);
    let proxy = proxy(&redis_addr.to_string(), &[]);

    let conn = TcpStream::connect(proxy.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // 20,000 commands in one go, written while the answers are read.
    const N: usize = 20_000;
    let mut pipeline = Vec::new();
    for _ in 0..N {
        pipeline.extend_from_slice(&resp(&[b"INCR", b"proxied"]));
    }
    let writer = {
        let mut w = conn.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(&pipeline).unwrap())
    };
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for i in 1..=N {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!(":{i}\r\n"), "answer {i} in order");
    }
    writer.join().unwrap();

    // A value of 4 MiB there and back, on the same connection.
    let value = payload(4 << 20);
    let set = resp(&[b"SET", b"big", &value]);
    let writer = {
        let mut w = conn.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(&set).unwrap())
    };
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK\r\n");
    writer.join().unwrap();
    (&conn).write_all(&resp(&[b"GET", b"big"])).unwrap();
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    assert_eq!(header, format!("${}\r\n", value.len()));
    let mut back = vec![0u8; value.len() + 2];
    reader.read_exact(&mut back).unwrap();
    assert!(
        back[..value.len()] == value[..],
        "the value came back whole"
    );

    // QUIT: redis answers and closes; the proxy passes the close on.
    (&conn).write_all(&resp(&[b"QUIT"])).unwrap();
    let mut ok = String::new();
    reader.read_line(&mut ok).unwrap();
    assert_eq!(ok, "+OK\r\n");
    let mut rest = Vec::new();
    assert_eq!(
        reader.read_to_end(&mut rest).unwrap(),
        0,
        "closed after QUIT"
    );
    drop((reader, conn));
    stop(proxy);
}

/// Reads one `Content-Length` response; returns its status line and body.
fn http_response(reader: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    (status, body)
}

#[test]
fn proxy_in_front_of_nginx_keeps_alive_and_passes_its_close() {
    let dir = TempDir::new("nginx");
    let (nginx, nginx_addr) = common::nginx::spawn(&dir.0);
    let _nginx = Killed(nginx);
    let proxy = proxy(&nginx_addr.to_string(), &["--cpus", "0-1"]);

    let conns: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(proxy.addr).unwrap())
        .collect();
    for conn in &conns {
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        for _ in 0..200 {
            (&*conn)
                .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                .unwrap();
            let (status, body) = http_response(&mut reader);
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            assert_eq!(body, b"hello\n");
        }
        // The server closes after this one: the client sees the end through the proxy.
        (&*conn)
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (status, _) = http_response(&mut reader);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut rest = Vec::new();
        assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0);
    }
    drop(conns);
    stop(proxy);
}

#[test]
fn sixteen_mib_through_and_back_with_the_half_close_passed_on() {
    let to = upstream(echo_then_end);
    let proxy = proxy(&to.to_string(), &[]);
    let data = payload(16 << 20);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let writer = {
        let mut w = conn.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            w.write_all(&data).unwrap();
            // The upstream ends its side only once it saw this end.
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::with_capacity(data.len());
    conn.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "every byte, in order");
    stop(proxy);
}

#[test]
fn a_unix_socket_upstream() {
    let dir = TempDir::new("unix");
    let path = dir.0.join("upstream.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    let to = format!("unix:{}", path.display());
    let proxy = proxy(&to, &[]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"over a unix socket").unwrap();
    let mut back = [0u8; 18];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"over a unix socket");
    conn.shutdown(Shutdown::Write).unwrap();
    assert!(closed_within(&mut conn, Duration::from_secs(5)));

    // A path nobody listens on: the client is closed, the failure counted.
    let gone = format!("unix:{}", dir.0.join("nobody.sock").display());
    let lonely = proxy_to_nowhere(&gone);
    assert!(lonely.contains("nobody.sock"), "{lonely}");
    stop(proxy);
}

/// Runs a proxy to `to`, where nothing listens: a client is closed at once, and the failure is
/// logged with the upstream's name. Returns the proxy's stderr.
fn proxy_to_nowhere(to: &str) -> String {
    let proxy = proxy(to, &[]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    assert!(
        closed_within(&mut conn, Duration::from_secs(3)),
        "a client whose upstream refuses is closed"
    );
    let stderr = stop(proxy);
    assert!(stderr.contains("failed"), "{stderr}");
    stderr
}

#[test]
fn a_refusing_upstream_closes_its_clients_and_the_proxy_goes_on() {
    let port = free_port();
    let to = format!("127.0.0.1:{port}");
    let stderr = proxy_to_nowhere(&to);
    assert!(stderr.contains(&format!("upstream {to}")), "{stderr}");

    // The same proxy serves again once the upstream is there.
    let proxy = proxy(&to, &[]);
    let mut refused = TcpStream::connect(proxy.addr).unwrap();
    assert!(closed_within(&mut refused, Duration::from_secs(3)));
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            echo_then_end(conn);
        }
    });
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"back").unwrap();
    let mut back = [0u8; 4];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"back");
    drop(conn);
    stop(proxy);
}

#[test]
fn an_upstream_that_never_accepts_times_out() {
    // A listener with the smallest backlog, filled by one connection nobody accepts: further
    // SYNs are dropped, so a connect hangs until its timeout.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Returns once the connection waits in the accept queue, which is then full.
    let filler = TcpStream::connect(addr).unwrap();
    let proxy = proxy(&addr.to_string(), &["--connect-timeout", "300ms"]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    let t0 = Instant::now();
    assert!(closed_within(&mut conn, Duration::from_secs(5)));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after the connect timeout, not before: {took:?}"
    );
    let stderr = stop(proxy);
    assert!(stderr.contains("timed out"), "{stderr}");
    drop((filler, socket));
}

#[test]
fn a_client_that_vanishes_mid_transfer_closes_its_upstream() {
    // The upstream streams without end; it learns the client went by its writes failing.
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let chunk = vec![5u8; 64 * 1024];
        let mut sent = 0usize;
        let t0 = Instant::now();
        while conn.write_all(&chunk).is_ok() {
            sent += chunk.len();
            if t0.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        let _ = tx.send((sent, Instant::now()));
    });
    let proxy = proxy(&to.to_string(), &[]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    let mut some = vec![0u8; 1 << 20];
    conn.read_exact(&mut some).unwrap();
    // Gone with bytes unread: a reset.
    drop(conn);
    let gone = Instant::now();
    let (sent, failed_at) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream's writes fail once the client is gone");
    assert!(
        failed_at.duration_since(gone) < Duration::from_secs(3),
        "{:?}",
        failed_at.duration_since(gone)
    );
    assert!(sent >= 1 << 20);
    let stderr = stop(proxy);
    assert!(stderr.contains("1 connections"), "{stderr}");
}

/// Reads `conn` to its end; the end must come within 5 s, as the stream's end or a reset
/// (not a timeout). Returns what was read and how it ended.
fn read_to_the_end(conn: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "the proxy never ended the client's connection"
                );
                return (got, Err(e));
            }
        }
    }
}

#[test]
fn an_upstream_that_resets_mid_transfer_closes_its_client() {
    let to = upstream(|mut conn| {
        let _ = conn.write_all(&[9u8; 300_000]);
        // Gone with a reset.
        socket2::SockRef::from(&conn)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let proxy = proxy(&to.to_string(), &[]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    conn.write_all(b"anything").unwrap();
    let (got, end) = read_to_the_end(&mut conn);
    assert!(got.len() <= 300_000);
    // The upstream's abort is passed on as one, not as a clean end after part of the answer.
    let e = end.expect_err("the client saw a clean end after a reset");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    drop(conn);
    stop(proxy);
}

/// An HTTP server's early 413, as a proxy sees it: an upstream that reads a little of a
/// request, answers with `answer`, and closes (lingering until its answer left, as nginx
/// does; then it resets, the request's rest unread). Its address, and word of its close.
fn early_answering_upstream(answer: Vec<u8>) -> (SocketAddr, std::sync::mpsc::Receiver<()>) {
    let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut some = [0u8; 1024];
        s.read_exact(&mut some).unwrap();
        s.write_all(&answer).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let queue = percore::fd::SharedFd::new(s.try_clone().unwrap().into());
        let mut sink = vec![0u8; 64 * 1024];
        let t0 = Instant::now();
        while queue.unsent_bytes().unwrap() > 0 && t0.elapsed() < Duration::from_secs(10) {
            let _ = s.read(&mut sink);
        }
        // Closed with the request's rest unread: a reset.
        drop((queue, s));
        closed_tx.send(()).unwrap();
    });
    (to, closed_rx)
}

/// The early answer, to a client still sending: it gets the whole answer and then the end,
/// not a reset that throws the answer's tail away.
#[test]
fn an_early_answer_reaches_a_client_that_is_still_sending() {
    const ANSWER: usize = 1 << 20;
    let (to, closed_rx) = early_answering_upstream(payload(ANSWER));
    let proxy = proxy(&to.to_string(), &[]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    let mut writer = conn.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![1u8; 16 * 1024];
        while writer.write_all(&chunk).is_ok() {}
    });
    closed_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (got, end) = read_to_the_end(&mut conn);
    assert_eq!(got.len(), ANSWER, "the whole answer ({end:?})");
    assert!(got == payload(ANSWER), "in order");
    assert!(end.is_ok(), "then the end, not a reset: {end:?}");
    // Done: the sending stops too (the proxy drains it until then, or its refusal grace).
    conn.shutdown(Shutdown::Both).unwrap();
    drop(conn);
    let stderr = stop(proxy);
    assert!(
        stderr.contains("sending"),
        "the refusal is reported: {stderr}"
    );
}

/// The early answer, to a client that sends its whole request before it reads (16 MiB: more
/// than every socket buffer on the way holds): the proxy reads and drops the request's rest,
/// so the client gets to the end of its sending before the proxy's refusal grace (5 s) ran
/// out (without the drain it could not: nobody would read it until then), then reads the
/// whole answer and the end.
#[test]
fn an_early_answer_reaches_a_client_that_sends_all_before_it_reads() {
    const ANSWER: usize = 100_000;
    let (to, _closed) = early_answering_upstream(payload(ANSWER));
    let proxy = proxy(&to.to_string(), &[]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t0 = Instant::now();
    conn.write_all(&vec![1u8; 16 << 20]).unwrap();
    let sent_in = t0.elapsed();
    conn.shutdown(Shutdown::Write).unwrap();
    let (got, end) = read_to_the_end(&mut conn);
    assert!(
        sent_in < Duration::from_secs(5),
        "the request's rest waited for the refusal grace: {sent_in:?}"
    );
    assert_eq!(got.len(), ANSWER, "the whole answer ({end:?})");
    assert!(got == payload(ANSWER), "in order");
    assert!(end.is_ok(), "then the end, not a reset: {end:?}");
    drop(conn);
    stop(proxy);
}

#[test]
fn an_idle_connection_is_closed_on_both_sides() {
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).unwrap();
        conn.write_all(&buf[..n]).unwrap();
        // Then quiet: the proxy's idle timeout ends it.
        let end = conn.read(&mut buf);
        let _ = tx.send((end.map_err(|e| e.kind()), Instant::now()));
    });
    let proxy = proxy(&to.to_string(), &["--idle-timeout", "300ms"]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    conn.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.read_exact(&mut back).unwrap();
    let quiet = Instant::now();
    assert!(closed_within(&mut conn, Duration::from_secs(3)));
    let took = quiet.elapsed();
    // Between one and two timeouts after the last byte (plus scheduling slack).
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let (end, at) = rx.recv_timeout(Duration::from_secs(3)).unwrap();
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    assert!(at.duration_since(quiet) < Duration::from_millis(1500));
    let stderr = stop(proxy);
    assert!(stderr.contains("idle timeout"), "{stderr}");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn an_upstream_that_does_not_read_holds_its_client_back_not_the_proxys_memory() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    // The first connection is echoed (it warms the proxy's receive ring up), the second is
    // accepted and never read.
    let held = std::thread::spawn(move || {
        let (first, _) = listener.accept().unwrap();
        std::thread::spawn(move || echo_then_end(first));
        listener.accept().unwrap().0
    });
    let proxy = proxy(&to.to_string(), &[]);
    // Every buffer of the ring (8 MiB) used once, so that only what this connection holds
    // counts below.
    {
        let mut warm = TcpStream::connect(proxy.addr).unwrap();
        let data = payload(16 << 20);
        let mut w = warm.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        warm.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back.len(), 16 << 20);
    }
    let before = rss_kib(proxy.child.id());
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let chunk = vec![1u8; 64 * 1024];
    let mut written = 0usize;
    // Until a write blocks for 2 s: the whole path (three socket buffers each way and the
    // relay's few waiting chunks) is full.
    let blocked = loop {
        if written >= 512 << 20 {
            break false;
        }
        match conn.write(&chunk) {
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break true
            }
            Err(e) => panic!("the proxy cut the client off: {e}"),
        }
    };
    let after = rss_kib(proxy.child.id());
    eprintln!("held back after {written} bytes; RSS {before} -> {after} KiB");
    assert!(
        blocked,
        "the client was never held back ({} MiB)",
        written >> 20
    );
    assert!(written >= 1 << 20, "held back after only {written} bytes");
    assert!(
        after.saturating_sub(before) < 4 << 10,
        "the proxy's memory grew by {} KiB",
        after - before
    );
    // Still open: the proxy waits for the upstream, it did not give up.
    assert!(!closed_within(&mut conn, Duration::from_millis(200)));
    drop(held.join().unwrap());
    assert!(closed_within(&mut conn, Duration::from_secs(5)));
    stop(proxy);
}

#[test]
fn a_shutdown_gives_proxied_exchanges_the_grace_period() {
    // The upstream answers 300 ms after the question: a shutdown requested in between (once
    // the question reached it, so the connection is surely being served) must not cut the
    // answer off.
    let (asked_tx, asked_rx) = std::sync::mpsc::channel::<()>();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = conn.read(&mut buf) {
            asked_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let _ = conn.write_all(&buf[..n]);
        }
        let _ = conn.read(&mut buf);
    });
    let proxy = proxy(&to.to_string(), &["--grace", "2s"]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    conn.write_all(b"question").unwrap();
    asked_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let pid = proxy.child.id() as libc::pid_t;
    // SAFETY: kill(2) on the test's own child, not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut back = [0u8; 8];
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"question");
    // Then the end of the grace period (less a margin) closes it, and the proxy ends by
    // itself, not cancelled.
    let t0 = Instant::now();
    assert!(closed_within(&mut conn, Duration::from_secs(5)));
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // Counted as cut, not as a connection that ended well.
    let stderr = wait_stopped(proxy);
    assert!(stderr.contains("cut at the shutdown"), "{stderr}");
    assert!(stderr.contains("1 connections (1 failed"), "{stderr}");
}

/// The open fds of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Many connections at once through a proxy on two cores (sharded, then with hand-off), each
/// with its own bytes there and back; afterwards the proxy holds no more fds than before.
#[test]
fn many_connections_on_two_cores_and_no_fd_left_behind() {
    let to = upstream(echo_then_end);
    for accept in ["sharded", "handoff"] {
        let mut proxy = proxy(&to.to_string(), &["--cpus", "0-1", "--accept", accept]);
        // Both cores up (their rings, and with sharding their listeners) before the count.
        common::serve::wait_for_lines(&mut proxy, "): io_uring", 2);
        if accept == "sharded" {
            common::serve::wait_for_lines(&mut proxy, "listening on", 2);
        }
        let pid = proxy.child.id();
        let idle_fds = open_fds(pid);
        let clients: Vec<_> = (0..8)
            .map(|t| {
                let addr = proxy.addr;
                std::thread::spawn(move || {
                    // 25 connections per thread, all open at once.
                    let conns: Vec<TcpStream> =
                        (0..25).map(|_| TcpStream::connect(addr).unwrap()).collect();
                    for (i, c) in conns.iter().enumerate() {
                        let data = payload(32 * 1024 + t * 25 + i);
                        let mut c = c;
                        c.write_all(&data).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let mut back = vec![0u8; data.len()];
                        c.read_exact(&mut back).unwrap();
                        assert!(back == data, "connection {t}/{i} got its own bytes back");
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        wait_until("the proxy's fds to go back to idle", || {
            open_fds(pid) <= idle_fds
        });
        let stderr = stop(proxy);
        assert!(stderr.contains("0 failed"), "{accept}: {stderr}");
    }
}

#[test]
fn an_ipv6_upstream() {
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let to = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            echo_then_end(conn);
        }
    });
    let proxy = proxy(&to.to_string(), &[]);
    let mut conn = TcpStream::connect(proxy.addr).unwrap();
    conn.write_all(b"over IPv6").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let (got, end) = read_to_the_end(&mut conn);
    assert_eq!(got, b"over IPv6");
    assert!(end.is_ok(), "{end:?}");
    drop(conn);
    let stderr = stop(proxy);
    assert!(
        stderr.contains(&format!("to {to}")),
        "the upstream is named: {stderr}"
    );
}

#[test]
fn proxy_arguments_are_checked() {
    let run = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_percore"));
        command
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"]);
        let out = common::output_within(command, Duration::from_secs(5)).expect("exits");
        assert!(!out.status.success(), "{args:?} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["proxy"]).contains("--to"));
    assert!(run(&["echo", "--to", "127.0.0.1:1"]).contains("not a proxy"));
    assert!(run(&["holla", "--connect-timeout", "1s"]).contains("drop it"));
    assert!(run(&["proxy", "--to", "unix:"]).contains("path"));
    assert!(run(&["proxy", "--to", "no port here"]).contains("HOST:PORT"));
    assert!(
        run(&["proxy", "--to", "127.0.0.1:1", "--connect-timeout", "0s"]).contains("above zero")
    );
}
