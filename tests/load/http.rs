//! HTTP/1.1 targets: real nginx (one worker) on a loopback port, and a misbehaving server for
//! malformed responses (nginx cannot be made to send those).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::helpers::{load, serve_each, temp_dir, Server};

/// nginx serving `/` (200, "hello") on a free port, everything in `dir`.
fn nginx(dir: &Path) -> Server {
    let (child, addr) = crate::nginx::spawn(dir);
    Server { child, addr }
}

#[test]
fn nginx_keep_alive_statuses_and_bodies() {
    let dir = temp_dir("nginx");
    let server = nginx(&dir.join("nginx"));
    let base = format!("http://{}", server.addr);
    let run = load(
        &dir,
        &[
            &format!("{base}/"),
            "--closed-loop",
            "-d",
            "1500ms",
            "-c",
            "8",
            "--pipeline",
            "2",
            "--cpus",
            "1",
        ],
    );
    run.assert_exact_accounting();
    assert_eq!(run.u64("errors"), 0, "{}", run.stdout());
    assert_eq!(run.u64("reconnects"), 0, "keep-alive: {}", run.stdout());
    assert!(run.u64("responses") > 1000, "{}", run.stdout());

    let run = load(
        &dir,
        &[
            &format!("{base}/missing"),
            "--closed-loop",
            "--requests",
            "500",
            "-c",
            "4",
            "--cpus",
            "1",
        ],
    );
    run.assert_exact_accounting();
    assert_eq!(run.json["error_kinds"]["status 404"].as_u64(), Some(500));

    let run = load(
        &dir,
        &[
            &format!("{base}/"),
            "--rate",
            "1000",
            "-d",
            "1s",
            "-c",
            "4",
            "--cpus",
            "1",
            "-X",
            "POST",
            "-H",
            "X-Test: yes",
            "--body",
            "payload",
        ],
    );
    run.assert_exact_accounting();
    assert_eq!(run.u64("errors"), 0, "{}", run.stdout());
}

/// A server whose every connection answers its first request properly and its second with
/// one kind of garbage (by connection number), then closes.
fn misbehaving_server() -> SocketAddr {
    const BAD: [&[u8]; 5] = [
        b"garbage that is not http\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ncut short",
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n",
    ];
    serve_each(2000, |n, mut conn| {
        let mut buf = [0u8; 4096];
        for reply in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
            BAD[n % BAD.len()],
        ] {
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                }
            }
            if conn.write_all(reply).is_err() {
                return;
            }
        }
    })
}

#[test]
fn malformed_responses_are_counted_errors_and_the_run_goes_on() {
    let addr = misbehaving_server();
    let dir = temp_dir("malformed");
    let run = load(
        &dir,
        &[
            &format!("http://{addr}/"),
            "--rate",
            "400",
            "-d",
            "1500ms",
            "-c",
            "4",
            "--cpus",
            "1",
            "--max-response",
            "1000000",
            "--timeout",
            "1s",
        ],
    );
    run.assert_exact_accounting();
    assert!(run.u64("responses") >= 100, "{}", run.stdout());
    let kinds = run.json["error_kinds"].as_object().unwrap();
    let protocol: u64 = kinds
        .iter()
        .filter(|(k, _)| k.starts_with("protocol: http"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert!(protocol >= 50, "{}", run.stdout());
    for expected in [
        "malformed response head",
        "bad Content-Length",
        "malformed chunk size",
        "larger than --max-response",
    ] {
        assert!(
            kinds.keys().any(|k| k.contains(expected)),
            "no {expected:?} among {kinds:?}"
        );
    }
    assert!(run.u64("reconnects") >= 50, "{}", run.stdout());
}

/// Reads one request head from `conn`; false when the peer is gone.
fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut piece = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            return true;
        }
        match conn.read(&mut piece) {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&piece[..k]),
        }
    }
}

/// Valid responses built to make a parser that starts over on every piece quadratic, written
/// in small pieces: a chunked body of 100,000 one-byte chunks (connections 0, 2, ...), and
/// 20,000 interim `100 Continue` heads before the final response (1, 3, ...). With a parse
/// that starts over, each response would take minutes and every request would time out.
#[test]
fn responses_in_many_small_pieces_are_parsed_once() {
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..100_000 {
        chunked.extend_from_slice(b"1\r\nx\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut flood = Vec::new();
    for _ in 0..20_000 {
        flood.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    flood.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let replies = std::sync::Arc::new([chunked, flood]);
    let addr = serve_each(100, move |n, mut conn| {
        let reply = &replies[n % 2];
        let mut buf = Vec::new();
        while read_request(&mut conn, &mut buf) {
            // Small writes, each its own segment, so the generator gets many small pieces.
            for piece in reply.chunks(1500) {
                if conn.write_all(piece).is_err() {
                    return;
                }
            }
        }
    });
    let dir = temp_dir("small-pieces");
    let run = load(
        &dir,
        &[
            &format!("http://{addr}/"),
            "--closed-loop",
            "--requests",
            "40",
            "-c",
            "2",
            "--cpus",
            "1",
            "--timeout",
            "20s",
        ],
    );
    run.assert_exact_accounting();
    assert_eq!(run.u64("responses"), 40, "{}", run.stdout());
}

/// A server that sends a second response nobody asked for, with the answer (odd connections)
/// or 20 ms after it (even ones), while the connection waits for its next request: the
/// connection is dropped and the error counted as the connection's (no request is charged with
/// it), in the summary and the JSON; the run goes on. The probe before the run refuses such a
/// server outright, either way.
#[test]
fn bytes_with_no_request_outstanding_are_a_counted_connection_error() {
    const ONCE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let serve = |every_time: bool| {
        serve_each(2000, move |n, mut conn| {
            let mut buf = Vec::new();
            while read_request(&mut conn, &mut buf) {
                // Connection 0 is the generator's probe: answered properly unless `every_time`.
                if n == 0 && !every_time {
                    if conn.write_all(ONCE).is_err() {
                        return;
                    }
                    continue;
                }
                let twice = [ONCE, ONCE].concat();
                let sent = if n % 2 == 1 {
                    conn.write_all(&twice)
                } else {
                    conn.write_all(ONCE).and_then(|()| {
                        std::thread::sleep(Duration::from_millis(20));
                        conn.write_all(ONCE)
                    })
                };
                if sent.is_err() {
                    return;
                }
            }
        })
    };
    for _ in 0..2 {
        // The probe is connection 0 of each server: one that writes both at once, then one
        // that writes the second 20 ms later.
        let addr = serve(true);
        let err = crate::helpers::load_fails(&[&format!("http://{addr}/"), "--closed-loop"]);
        assert!(
            err.contains("not the protocol expected") && err.contains("beyond the answer"),
            "{err}"
        );
    }

    let dir = temp_dir("unasked");
    let run = load(
        &dir,
        &[
            &format!("http://{}/", serve(false)),
            "--rate",
            "40",
            "-d",
            "2s",
            "-c",
            "2",
            "--cpus",
            "1",
        ],
    );
    run.assert_exact_accounting();
    // Each connection answers one request, then breaks (both ways): every request is answered
    // and leaves one connection error.
    let broken: u64 = run.json["connection_errors"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.contains("no request outstanding"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert!(broken >= 60, "{}", run.stdout());
    assert!(run.u64("responses") >= 60, "{}", run.stdout());
    assert_eq!(run.u64("errors"), 0, "{}", run.stdout());
    assert!(
        run.stdout()
            .contains("connection broken, no request outstanding"),
        "{}",
        run.stdout()
    );
}

/// Empty lines after a response (some servers end a response with an extra `\r\n`), sent
/// with the answer (connections 1, 4, ...), 20 ms after it (0, 3, ...: the probe's
/// included), or 200,000 of them after it (2, 5, ...): filler that is dropped, not bytes
/// nobody asked for. The probe refused such a server, and a run would have dropped a
/// connection per response.
#[test]
fn empty_lines_between_responses_are_stepped_over() {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let flood = b"\r\n".repeat(200_000);
    let addr = serve_each(100, move |n, mut conn| {
        let mut buf = Vec::new();
        while read_request(&mut conn, &mut buf) {
            let sent = if n % 3 == 1 {
                conn.write_all(&[ANSWER, b"\r\n"].concat())
            } else if n % 3 == 2 {
                conn.write_all(ANSWER).and_then(|()| conn.write_all(&flood))
            } else {
                conn.write_all(ANSWER).and_then(|()| {
                    std::thread::sleep(Duration::from_millis(20));
                    conn.write_all(b"\r\n")
                })
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let run = load(
        &temp_dir("filler"),
        &[
            &format!("http://{addr}/"),
            "--rate",
            "40",
            "-d",
            "1s",
            "-c",
            "3",
            "--cpus",
            "1",
        ],
    );
    run.assert_exact_accounting();
    assert_eq!(run.u64("errors"), 0, "{}", run.stdout());
    assert_eq!(run.u64("reconnects"), 0, "{}", run.stdout());
    assert_eq!(
        run.json["connection_errors"].as_object().map(|m| m.len()),
        Some(0),
        "{}",
        run.stdout()
    );
    assert_eq!(run.u64("responses"), 40, "{}", run.stdout());
}
