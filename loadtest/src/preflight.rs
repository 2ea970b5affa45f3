//! Before the run: one request on a plain blocking socket, so a bad target fails fast with a
//! clear message (refused, unreachable, timed out, not the protocol expected) instead of a run
//! full of errors.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::config::LoadConfig;
use crate::protocol::{DatagramCheck, Parsed, Protocol, Transport};

/// How long the probe waits at most, whatever the request timeout.
const PROBE_LIMIT: Duration = Duration::from_secs(5);

/// Sends one request and checks the answer.
///
/// # Errors
///
/// A sentence saying what is wrong with the target.
pub(crate) fn check(config: &LoadConfig, protocol: &dyn Protocol) -> Result<(), String> {
    let addr = config.target.addr();
    let wait = config.timeout.min(PROBE_LIMIT);
    let what = format!("{} ({})", config.target, protocol.name());
    let io_err = |step: &str, e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("{what}: no answer to {step} within {wait:?}")
        }
        _ => format!("{what}: {step} failed: {e}"),
    };
    let mut session = protocol.session();
    let mut request = Vec::new();
    session.write_request(&mut request);
    match protocol.transport() {
        Transport::Stream => {
            let mut conn =
                TcpStream::connect_timeout(&addr, wait).map_err(|e| io_err("connect", e))?;
            conn.set_read_timeout(Some(wait))
                .map_err(|e| io_err("setup", e))?;
            conn.set_write_timeout(Some(wait))
                .map_err(|e| io_err("setup", e))?;
            let writer = conn.try_clone().map_err(|e| io_err("setup", e))?;
            // The request is written on a thread of its own while this one reads: an echo of
            // a request larger than the socket buffers answers before it has all been sent,
            // and a writer that waited for the whole send before reading would wait for good.
            std::thread::scope(|scope| {
                let sending = scope.spawn(move || (&writer).write_all(&request));
                let answer = read_answer(&mut conn, &mut *session, config, &what, &io_err, wait);
                if !sending.is_finished() {
                    // Answered (or failed) with the request not all sent: unblock the writer.
                    let _ = conn.shutdown(Shutdown::Both);
                }
                let sent = sending.join();
                match (answer, sent) {
                    (Ok(()), _) => Ok(()),
                    (Err(e), Ok(Err(send))) if send.kind() != io::ErrorKind::WouldBlock => {
                        Err(format!("{e} (sending the request failed: {send})"))
                    }
                    (Err(e), _) => Err(e),
                }
            })
        }
        Transport::Datagram => {
            let local = if addr.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let socket = UdpSocket::bind(local).map_err(|e| io_err("bind", e))?;
            socket.connect(addr).map_err(|e| io_err("connect", e))?;
            socket
                .set_read_timeout(Some(wait))
                .map_err(|e| io_err("setup", e))?;
            socket
                .send(&request)
                .map_err(|e| io_err("sending a datagram", e))?;
            let mut buf = vec![0u8; 65_536];
            let n = socket
                .recv(&mut buf)
                .map_err(|e| io_err("receiving the answer", e))?;
            match session.check_datagram(&buf[..n]) {
                Ok(DatagramCheck::Answer) => Ok(()),
                Ok(DatagramCheck::Stale) | Err(_) => Err(format!(
                    "{what}: not the protocol expected: the answer differs from the datagram sent (got {:?})",
                    preview(&buf[..n])
                )),
            }
        }
    }
}

/// Reads the answer to the one request sent on `conn` and checks it.
fn read_answer(
    conn: &mut TcpStream,
    session: &mut dyn crate::protocol::Session,
    config: &LoadConfig,
    what: &str,
    io_err: &dyn Fn(&str, io::Error) -> String,
    wait: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Err(io_err("reading the response", e)),
        };
        let parsed = if n == 0 {
            session.parse_at_eof(&got)
        } else {
            got.extend_from_slice(&buf[..n]);
            session.parse(&got)
        };
        match parsed {
            Ok(Parsed::Complete(resp))
                if resp.len < got.len() && !session.filler(&got[resp.len..]) =>
            {
                return Err(unasked(what, got.len() - resp.len, &got))
            }
            Ok(Parsed::Complete(_)) => return no_more(conn, session, what),
            Ok(Parsed::Incomplete) if n == 0 => {
                return Err(format!(
                    "{what}: the server closed the connection without answering"
                ))
            }
            Ok(Parsed::Incomplete) if got.len() > config.max_response => {
                return Err(format!("{what}: response larger than --max-response"))
            }
            Ok(Parsed::Incomplete) if Instant::now() >= deadline => {
                return Err(format!("{what}: incomplete response after {wait:?}"))
            }
            Ok(Parsed::Incomplete) => {}
            Err(p) => {
                return Err(format!(
                    "{what}: not the protocol expected: {p} (got {:?})",
                    preview(&got)
                ))
            }
        }
    }
}

/// How long the probe listens after the answer for bytes nobody asked for.
const AFTER_ANSWER: Duration = Duration::from_millis(50);

/// After a complete answer: the server sends nothing more unasked (a second answer, or the
/// rest of a longer one than the protocol allows; the protocol's filler aside), checked for
/// [`AFTER_ANSWER`].
fn no_more(
    conn: &mut TcpStream,
    session: &dyn crate::protocol::Session,
    what: &str,
) -> Result<(), String> {
    if conn.set_read_timeout(Some(AFTER_ANSWER)).is_err() {
        return Ok(());
    }
    let mut buf = [0u8; 1024];
    match conn.read(&mut buf) {
        Ok(n) if n > 0 && !session.filler(&buf[..n]) => Err(unasked(what, n, &buf[..n])),
        // Quiet, or closed after answering: nothing unasked.
        _ => Ok(()),
    }
}

/// The error for `extra` bytes beyond the answer, in `got`.
fn unasked(what: &str, extra: usize, got: &[u8]) -> String {
    format!(
        "{what}: not the protocol expected: {extra} bytes beyond the answer to the one request \
         sent (got {:?})",
        preview(got)
    )
}

/// The start of what came back, for the error message.
fn preview(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(60)];
    String::from_utf8_lossy(cut).into_owned()
}
