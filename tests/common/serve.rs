//! A `percore serve` child process for the CLI tests: started on a port it picks, stopped by
//! SIGTERM, its stderr collected.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `percore serve`, its address, and its stderr: the lines up to where it said it
/// listens, and the rest as a thread reads them.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) started: Vec<String>,
    pub(crate) stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test must not leave its server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `percore serve ...` on a port it picks itself and waits for its "listening on" line
/// (bounded): no port is guessed, so parallel tests never share one.
pub(crate) fn start(args: &[&str]) -> Server {
    let cpus: &[&str] = if args.contains(&"--cpus") {
        &[]
    } else {
        &["--cpus", "0"]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_percore"))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .args(cpus)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut started = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("server never said where it listens");
        let addr = line
            .split("listening on ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap());
        started.push(line);
        if let Some(addr) = addr {
            break addr;
        }
    };
    Server {
        child,
        addr,
        started,
        stderr: rx,
    }
}

pub(crate) fn stop(server: Server) -> String {
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, which it holds until it is waited for.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    wait_stopped(server)
}

/// Waits (bounded) until `n` lines of the server's stderr in all contain `pattern`: a test that
/// counts a multi-core server's fds must wait for its later cores too (the first "listening
/// on" line can come before another core has made its ring or its listener).
pub(crate) fn wait_for_lines(server: &mut Server, pattern: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server
        .started
        .iter()
        .filter(|l| l.contains(pattern))
        .count()
        < n
    {
        let line = server
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "fewer than {n} lines with {pattern:?}: {:?}",
                    server.started
                )
            });
        server.started.push(line);
    }
}

/// Waits for a server that was asked to stop; it must exit 0 and say it stopped. Returns its
/// whole stderr.
pub(crate) fn wait_stopped(mut server: Server) -> String {
    let status = server.child.wait().unwrap();
    let mut lines = std::mem::take(&mut server.started);
    lines.extend(server.stderr.iter());
    let stderr = lines.join("\n");
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    stderr
}

/// Writes to `conn` without ever reading until a write fails; returns how long that took, or
/// `None` if a write stayed blocked for 5 s (the server never let go).
pub(crate) fn write_until_refused(conn: TcpStream) -> Option<Duration> {
    write_until_refused_with(conn, vec![7u8; 64 * 1024])
}

/// As [`write_until_refused`], writing `chunk` over and over.
pub(crate) fn write_until_refused_with(mut conn: TcpStream, chunk: Vec<u8>) -> Option<Duration> {
    conn.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t0 = Instant::now();
    loop {
        match conn.write(&chunk) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(t0.elapsed()),
        }
    }
}
