//! `percore serve` as a user runs it: real sockets against the real binary, stopped by SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::{start, stop, write_until_refused, write_until_refused_with};

#[test]
fn holla_upper_cases_lines_and_limits_what_it_reads() {
    let server = start(&["holla", "--idle-timeout", "300ms", "--max-line", "16"]);
    let addr = server.addr;

    let conn = TcpStream::connect(addr).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for line in ["holla\n", "percore\n"] {
        (&conn).write_all(line.as_bytes()).unwrap();
        let mut back = String::new();
        reader.read_line(&mut back).unwrap();
        assert_eq!(back, line.to_uppercase());
    }

    // A line over the limit closes that connection only.
    let mut long = TcpStream::connect(addr).unwrap();
    long.write_all(&[b'x'; 100]).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = [0u8; 16];
    assert!(
        matches!(long.read(&mut sink), Ok(0) | Err(_)),
        "the long line's connection is closed"
    );
    (&conn).write_all(b"still fine\n").unwrap();
    let mut back = String::new();
    reader.read_line(&mut back).unwrap();
    assert_eq!(back, "STILL FINE\n");

    // Slowloris: a line trickled a byte every 100 ms (each byte well inside the 300 ms idle
    // timeout) is still cut off: the whole line must come within the timeout.
    let mut slow = TcpStream::connect(addr).unwrap();
    let t0 = Instant::now();
    let mut closed = false;
    for _ in 0..40 {
        if slow.write_all(b"s").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut probe = [0u8; 1];
        slow.set_nonblocking(true).unwrap();
        let r = slow.read(&mut probe);
        slow.set_nonblocking(false).unwrap();
        if matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the trickling connection must be closed within the idle timeout"
    );
    // Before the 16-byte line limit could end it (16 bytes take 1.6 s).
    assert!(
        t0.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t0.elapsed()
    );

    let stderr = stop(server);
    assert!(
        stderr.contains("failed"),
        "errors are reported, not silent: {stderr}"
    );
}

#[test]
fn echo_closes_a_peer_that_takes_no_replies_within_the_idle_timeout() {
    let server = start(&["echo", "--idle-timeout", "500ms"]);
    let hog = TcpStream::connect(server.addr).unwrap();
    let took = write_until_refused(hog).expect("the server closed the connection");
    assert!(took < Duration::from_secs(4), "{took:?}");
    // The service goes on.
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    let stderr = stop(server);
    assert!(stderr.contains("1 failed"), "{stderr}");
}

/// holla replies behind the handler's back (`BufStream::start_flush`): a peer that sends line
/// after line and never reads still has its connection closed within the idle timeout (the
/// next reply waits for the last one to be taken), and the service goes on.
#[test]
fn holla_closes_a_peer_that_takes_no_replies_within_the_idle_timeout() {
    let server = start(&["holla", "--idle-timeout", "500ms"]);
    let hog = TcpStream::connect(server.addr).unwrap();
    let lines = format!("{}\n", "z".repeat(99)).repeat(655);
    let took = write_until_refused_with(hog, lines.into_bytes()).expect("the server closed it");
    assert!(took < Duration::from_secs(4), "{took:?}");
    holla_answers(server.addr);
    let stderr = stop(server);
    assert!(stderr.contains("1 failed"), "{stderr}");
    assert!(stderr.contains("did not take the reply"), "{stderr}");
}

/// A connection whose peer goes quiet (before its first byte, or after an exchange whose
/// reply it took) is closed by the idle timeout; one that keeps exchanging is not.
#[test]
fn echo_closes_a_quiet_peer_within_the_idle_timeout() {
    let server = start(&["echo", "--idle-timeout", "300ms"]);
    let silent = TcpStream::connect(server.addr).unwrap();
    let mut replied = TcpStream::connect(server.addr).unwrap();
    let mut busy = TcpStream::connect(server.addr).unwrap();
    replied.write_all(b"once").unwrap();
    let mut back = [0u8; 4];
    replied.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"once");
    // `busy` exchanges every 100 ms for 900 ms: three idle timeouts, never idle for one.
    for _ in 0..9 {
        busy.write_all(b"tick").unwrap();
        busy.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"tick");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, mut conn) in [("silent", silent), ("replied", replied)] {
        conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut rest = [0u8; 16];
        match conn.read(&mut rest) {
            Ok(0) => {}
            Ok(n) => panic!("{name}: {n} unexpected bytes"),
            Err(e) => assert!(
                e.kind() == std::io::ErrorKind::ConnectionReset,
                "{name}: not closed: {e}"
            ),
        }
    }
    let stderr = stop(server);
    assert!(stderr.contains("2 failed"), "{stderr}");
}

#[test]
fn sigterm_is_not_held_up_by_a_peer_that_does_not_read() {
    let server = start(&["echo", "--grace", "10s"]);
    let hog = TcpStream::connect(server.addr).unwrap();
    let writer = std::thread::spawn(move || write_until_refused(hog));
    // Long enough for the echo to block on the reply it cannot send.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    stop(server);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(
        writer.join().unwrap().is_some(),
        "the connection was closed"
    );
}

#[test]
fn echo_and_udp_echo() {
    let server = start(&["echo"]);
    let addr = server.addr;
    let mut c = TcpStream::connect(addr).unwrap();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let writer = {
        let mut w = c.try_clone().unwrap();
        let p = payload.clone();
        std::thread::spawn(move || w.write_all(&p).unwrap())
    };
    let mut back = vec![0u8; payload.len()];
    c.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == payload);
    stop(server);

    let server = start(&["udp-echo"]);
    let addr = server.addr;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = None;
    for _ in 0..25 {
        sock.send_to(b"datagram", addr).unwrap();
        let mut buf = [0u8; 64];
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            got = Some((buf[..n].to_vec(), from));
            break;
        }
    }
    let (data, from) = got.expect("udp-echo answered");
    assert_eq!(data, b"datagram");
    assert_eq!(from, addr);
    stop(server);
}

#[test]
fn echo_with_handoff_accept() {
    let server = start(&["echo", "--accept", "handoff", "--cpus", "0-1"]);
    let conns: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    for (i, mut c) in conns.iter().enumerate() {
        let msg = format!("message {i}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    drop(conns);
    stop(server);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_percore"))
        .args(["serve", "echo", "--cpus", "3-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty CPU range"));
}

/// Runs `percore serve ARGS` on a free port: it must refuse them and end at once (a server
/// that took them would run until killed, so the wait is bounded). Returns its stderr.
fn refused(args: &[&str]) -> String {
    let cpus: &[&str] = if args.contains(&"--cpus") {
        &[]
    } else {
        &["--cpus", "0"]
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_percore"));
    command
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .args(cpus);
    let out = common::output_within(command, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("percore serve {args:?} was not refused: it ran"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?}: {stderr}");
    stderr
}

/// Regression: zero limits were taken (`--idle-timeout 0` closed every connection at once,
/// `--max-connections 0` behaved as 1, `--max-line 0` reset every holla connection,
/// `--max-datagram 0` dropped every datagram); they are usage errors now.
#[test]
fn serve_refuses_zero_limits() {
    for (args, option) in [
        (["echo", "--idle-timeout", "0"], "--idle-timeout"),
        (["holla", "--idle-timeout", "0ms"], "--idle-timeout"),
        (["echo", "--max-connections", "0"], "--max-connections"),
        (["holla", "--max-line", "0"], "--max-line"),
        (["udp-echo", "--max-datagram", "0"], "--max-datagram"),
        (
            ["conversation-echo", "--max-datagram", "0"],
            "--max-datagram",
        ),
        (["udp-echo", "--max-datagram", "65536"], "--max-datagram"),
        (
            ["conversation-echo", "--max-conversations", "0"],
            "--max-conversations",
        ),
    ] {
        let stderr = refused(&args);
        assert!(stderr.contains(option), "{args:?}: {stderr}");
        assert!(
            stderr.contains("expected at least 1")
                || stderr.contains("above zero")
                || stderr.contains("at most 65535"),
            "{args:?}: {stderr}"
        );
    }
}

/// Regression: `--accept handoff` with a UDP service built a hand-off nobody used and dropped
/// the port's reservation once the first core had bound it (the other cores could then lose
/// the port to another server); it is refused now.
#[test]
fn serve_refuses_handoff_for_udp_services() {
    for service in ["udp-echo", "conversation-echo"] {
        let stderr = refused(&[service, "--accept", "handoff", "--cpus", "0-1"]);
        assert!(
            stderr.contains("--accept handoff") && stderr.contains("UDP service"),
            "{service}: {stderr}"
        );
    }
}

#[test]
fn conversation_echo_numbers_each_peers_datagrams_and_caps_peers() {
    let server = start(&[
        "conversation-echo",
        "--max-conversations",
        "3",
        "--idle-timeout",
        "30s",
        "--max-datagram",
        "65507",
    ]);
    let addr = server.addr;
    let peer = || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        sock
    };
    let ask = |sock: &UdpSocket, payload: &[u8]| {
        sock.send_to(payload, addr).unwrap();
        let mut buf = [0u8; 64];
        sock.recv_from(&mut buf)
            .ok()
            .map(|(n, from)| (buf[..n].to_vec(), from))
    };
    // The first peer probes until the service answers (a datagram sent before the service
    // runs may be lost); it holds one of the 3 conversations.
    let probe = peer();
    assert!(
        (0..25).any(|_| ask(&probe, b"probe").is_some()),
        "conversation-echo answered"
    );
    let (a, b, c) = (peer(), peer(), peer());
    assert_eq!(ask(&a, b"x"), Some((b"1:x".to_vec(), addr)));
    assert_eq!(ask(&b, b"").map(|r| r.0), Some(b"1:".to_vec()));
    assert_eq!(ask(&a, b"y").map(|r| r.0), Some(b"2:y".to_vec()));
    assert_eq!(ask(&a, b"abc").map(|r| r.0), Some(b"3:abc".to_vec()));
    assert_eq!(
        ask(&c, b"over the cap"),
        None,
        "a peer beyond the cap gets no answer"
    );
    assert_eq!(ask(&b, b"z").map(|r| r.0), Some(b"2:z".to_vec()));
    // The largest IPv4 datagram is taken, but its reply (`4:` before it) is too large to
    // send: refused and counted, and the peer's numbering goes on.
    assert_eq!(ask(&a, &vec![b'.'; 65_507]), None);
    assert_eq!(ask(&a, b"after").map(|r| r.0), Some(b"5:after".to_vec()));
    let stderr = stop(server);
    assert!(stderr.contains("over the cap"), "{stderr}");
    assert!(
        stderr.contains("1 replies refused by the kernel"),
        "{stderr}"
    );
}

/// A line longer than `--max-line 4`: that connection fails.
fn failing_connection(addr: SocketAddr) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(b"much too long\n");
    let mut sink = [0u8; 16];
    assert!(matches!(c.read(&mut sink), Ok(0) | Err(_)), "closed");
}

fn holla_answers(addr: SocketAddr) {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (&c).write_all(b"ok\n").unwrap();
    let mut back = String::new();
    BufReader::new(&c).read_line(&mut back).unwrap();
    assert_eq!(back, "OK\n");
}

#[test]
fn failed_connections_are_logged_sparingly_and_all_counted() {
    let server = start(&["holla", "--max-line", "4"]);
    for _ in 0..40 {
        failing_connection(server.addr);
    }
    holla_answers(server.addr);
    let stderr = stop(server);
    let lines = stderr
        .lines()
        .filter(|l| l.contains("failed so far"))
        .count();
    // The first ten, then the 16th and the 32nd.
    assert_eq!(lines, 12, "{stderr}");
    assert!(stderr.contains("40 failed"), "{stderr}");
}

#[test]
fn a_closed_stderr_does_not_stop_the_service() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_percore"))
        .args(["serve", "holla", "--max-line", "4", "--cpus", "0"])
        .args(["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("a listening line").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Nobody reads the server's stderr any more: its log lines now fail with EPIPE.
    drop(lines);
    for _ in 0..3 {
        failing_connection(addr);
    }
    holla_answers(addr);
    let _ = child.kill();
    let _ = child.wait();
}
