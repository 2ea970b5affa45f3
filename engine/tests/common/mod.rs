//! Helpers shared by the engine's integration tests: leak baselines, sockets in chosen states.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use percore_engine::fd::SharedFd;

/// Tests that count the process's fds must not overlap with each other: hold this while
/// running one.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a leak-checking test on a fresh single-core runtime, one such test at a time.
pub fn run_serial(test: impl Future<Output = ()>) {
    let _guard = serial();
    percore_engine::block_on(test);
}

/// Ops in flight on this core (the standing eventfd read counts as one).
pub fn in_flight() -> u64 {
    percore_engine::stats::current().ops_in_flight
}

/// What a leak check compares: open fds and ops in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Baseline {
    pub fds: usize,
    pub ops: u64,
}

pub fn baseline() -> Baseline {
    Baseline {
        fds: percore_engine::open_fd_count().unwrap(),
        ops: in_flight(),
    }
}

/// Waits (driving the loop) until every op beyond the baseline has finished, then checks fds.
/// Bounded: fails after 5 s instead of hanging.
pub async fn assert_settles_to(base: Baseline, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = baseline();
        if now == base {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: did not settle: now {now:?}, baseline {base:?}"
        );
        percore_engine::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Polls a future exactly once (submitting its op) and hands it back.
pub async fn poll_once<F: Future + Unpin>(mut fut: F) -> F {
    std::future::poll_fn(|cx: &mut Context<'_>| {
        let _ = Pin::new(&mut fut).poll(cx);
        Poll::Ready(())
    })
    .await;
    fut
}

/// Lets the loop turn until the kernel has posted whatever is pending (a few turns and 20 ms).
pub async fn let_kernel_work() {
    for _ in 0..3 {
        percore_engine::yield_now().await;
    }
    percore_engine::time::sleep(Duration::from_millis(20)).await;
}

pub fn shared(fd: impl Into<OwnedFd>) -> SharedFd {
    SharedFd::new(fd.into())
}

/// A connected Unix stream pair: (percore side, std side).
pub fn unix_pair() -> (SharedFd, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (shared(a), b)
}

/// A Unix stream pair whose percore side's send buffer is full (a send will wait).
pub fn full_unix_pair() -> (SharedFd, UnixStream) {
    let (mut a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match a.write(&chunk) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the socket: {e}"),
        }
    }
    a.set_nonblocking(false).unwrap();
    (shared(a), b)
}

pub fn tcp_listener() -> (SharedFd, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (shared(l), addr)
}

/// A TCP listener with backlog 0 whose accept queue is already full, so a further connect
/// stays in flight (the kernel drops its SYN). Returns the listener and the client filling it.
pub fn full_backlog_listener() -> (OwnedFd, SocketAddr, TcpStream) {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a new socket we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let std_listener = TcpListener::from(owned);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    let _ = addr;
    use std::os::fd::AsRawFd;
    // SAFETY: `sin` is a valid sockaddr_in for the duration of the call.
    let rc = unsafe {
        libc::bind(
            std_listener.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: listen on our own bound socket.
    assert_eq!(unsafe { libc::listen(std_listener.as_raw_fd(), 0) }, 0);
    let addr = std_listener.local_addr().unwrap();
    let filler = TcpStream::connect(addr).unwrap();
    (OwnedFd::from(std_listener), addr, filler)
}

/// A new TCP socket (not connected) for `connect`.
pub fn tcp_socket() -> SharedFd {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a new socket we own.
    shared(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn udp_socket() -> (SharedFd, SocketAddr) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    (shared(s), addr)
}
