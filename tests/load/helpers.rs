//! Servers as children (killed on drop), temp dirs, and running `percore load` for its JSON.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing behind.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        crate::nginx::terminate(&mut self.child);
    }
}

impl Server {
    /// Sends `signal` to the server.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, which stays ours until it is waited for.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }
}

/// `percore serve SERVICE` on CPU 0 and a port it picks; waits (bounded) for its address.
pub(crate) fn percore_serve(service: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_percore"))
        .args(["serve", service, "--listen", "127.0.0.1:0", "--cpus", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting percore serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("percore serve never said where it listens")
        .parse()
        .unwrap();
    Server { child, addr }
}

/// A hand-written misbehaving server on a free loopback port: each of its first `limit`
/// connections is handled on a thread of its own by `handle(n, conn)` (n counts from 0).
pub(crate) fn serve_each<H>(limit: usize, handle: H) -> SocketAddr
where
    H: Fn(usize, std::net::TcpStream) + Send + Sync + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::sync::Arc::new(handle);
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate().take(limit) {
            let Ok(conn) = conn else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || handle(n, conn));
        }
    });
    addr
}

/// A fresh directory under the system temp dir.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("percore-load-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What one `percore load` run gave.
pub(crate) struct Run {
    pub(crate) output: Output,
    pub(crate) json: serde_json::Value,
}

impl Run {
    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub(crate) fn u64(&self, key: &str) -> u64 {
        self.json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing in {}", self.json))
    }

    pub(crate) fn f64(&self, key: &str) -> f64 {
        self.json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {}", self.json))
    }

    /// `sent == responses + errors`, and the timeline adds up to the totals.
    pub(crate) fn assert_exact_accounting(&self) {
        let (sent, ok, errors) = (
            self.u64("requests"),
            self.u64("responses"),
            self.u64("errors"),
        );
        assert_eq!(sent, ok + errors, "{}", self.stdout());
        let kinds: u64 = self.json["error_kinds"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(kinds, errors);
        let timeline = self.json["timeline"].as_array().unwrap();
        let sum = |k: &str| timeline.iter().map(|e| e[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!(sum("sent"), sent);
        assert_eq!(sum("responses"), ok);
        assert_eq!(sum("errors"), errors);
    }
}

/// Runs `percore load ARGS --json F -q` (the run must succeed) and reads the JSON.
pub(crate) fn load(dir: &Path, args: &[&str]) -> Run {
    load_with(dir, args, Command::new(env!("CARGO_BIN_EXE_percore")))
}

/// [`load`], with the command made ready by the caller (limits, environment).
pub(crate) fn load_with(dir: &Path, args: &[&str], mut command: Command) -> Run {
    let json_path = dir.join("run.json");
    let _ = std::fs::remove_file(&json_path);
    let started = Instant::now();
    let output = command
        .arg("load")
        .args(args)
        .arg("--json")
        .arg(&json_path)
        .arg("-q")
        .output()
        .expect("running percore load");
    let text = std::fs::read_to_string(&json_path).unwrap_or_default();
    assert!(
        output.status.success(),
        "percore load {args:?} failed after {:?}: {}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let json = serde_json::from_str(&text).expect("the JSON report parses");
    Run { output, json }
}

/// Runs `percore load ARGS`, which must fail; returns its stderr.
pub(crate) fn load_fails(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_percore"))
        .arg("load")
        .args(args)
        .output()
        .expect("running percore load");
    assert!(!output.status.success(), "percore load {args:?} succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A TCP echo server (std threads) that dies once it has echoed `after` messages of
/// `payload` bytes: it shuts every connection down and closes its listening socket, so the
/// generator sees its connections break and then its reconnects refused. Dying on a count,
/// not after a sleep, puts the death at the same point of the run however slowly it starts.
pub(crate) fn dying_echo(payload: usize, after: u64) -> SocketAddr {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    struct Shared {
        echoed: AtomicU64,
        dead: AtomicBool,
        conns: Mutex<Vec<TcpStream>>,
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Shared {
        echoed: AtomicU64::new(0),
        dead: AtomicBool::new(false),
        conns: Mutex::new(Vec::new()),
    });
    let die = {
        let shared = shared.clone();
        move || {
            if shared.dead.swap(true, Ordering::SeqCst) {
                return;
            }
            for conn in shared.conns.lock().unwrap().drain(..) {
                let _ = conn.shutdown(Shutdown::Both);
            }
            // Wakes the accept below, which sees `dead` and closes the listening socket.
            let _ = TcpStream::connect(addr);
        }
    };
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if shared.dead.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut conn) = conn else { continue };
            shared.conns.lock().unwrap().push(conn.try_clone().unwrap());
            let (shared, die) = (shared.clone(), die.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut bytes = 0u64;
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0
                        || shared.dead.load(Ordering::SeqCst)
                        || conn.write_all(&buf[..n]).is_err()
                    {
                        break;
                    }
                    // Whole messages echoed on this connection since the last count.
                    bytes += n as u64;
                    let messages = bytes / payload as u64;
                    bytes %= payload as u64;
                    if shared.echoed.fetch_add(messages, Ordering::SeqCst) + messages >= after {
                        die();
                        break;
                    }
                }
            });
        }
    });
    addr
}
