//! A service at its per-core connection cap stops accepting: connections past the cap wait in
//! the kernel's listen backlog, not as accepted fds in the process, and one is served as soon
//! as a served connection ends.
//!
//! The sequence: a service with a cap of `CAP` on one core; `CAP` clients connect and are
//! echoed (they stay open); `EXTRA` more connect and each sends a line. Before the fix the
//! listener's multishot accept stayed armed at the cap, so the kernel accepted every extra
//! connection into the op's completion queue (fds without service or idle timeout, piling up
//! until the process ran out of fds). Now the process holds at most `CAP` plus the few the
//! kernel accepted before the pause landed, and the rest are in the listener's accept queue.
//! Then one served client leaves, and the first waiting client gets its echo.
//!
//! Clients and server share the process, so the server's fds are the process's open fds less
//! the baseline and the clients' own; the tests of this file take turns (`FDS`) so that they
//! do not count each other's.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percore_engine::time::{sleep, timeout};
use percore_engine::{first, open_fd_count, First};
use percore_net::service::{Accept, TcpService};
use percore_net::tcp::{Handoff, TcpListener, TcpStream};
use percore_net::BufStream;

/// Held by each test while it counts the process's fds.
static FDS: Mutex<()> = Mutex::new(());

const CAP: usize = 4;
const EXTRA: usize = 40;
/// Fds accepted past the cap before the pause reached the kernel (a loop turn's worth).
const SLACK: usize = 4;

/// Echoes lines until the peer closes.
async fn echo_lines(mut conn: BufStream, _peer: SocketAddr) -> std::io::Result<()> {
    while let Some(line) = conn.read_line(64).await? {
        conn.write(&line).await?;
        conn.flush().await?;
    }
    Ok(())
}

/// The length of the accept queue of the TCP listener on `port` (from `/proc/net/tcp`, whose
/// receive-queue column of a listening socket is its count of connections waiting for accept).
fn accept_queue(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields[1].rsplit(':').next().unwrap();
        if u16::from_str_radix(local_port, 16).unwrap() == port && fields[3] == "0A" {
            let rx_queue = fields[4].rsplit(':').next().unwrap();
            return usize::from_str_radix(rx_queue, 16).unwrap();
        }
    }
    panic!("no listener on port {port} in /proc/net/tcp");
}

/// The client side of the scenario; the server runs beside it on the same core.
async fn clients(addr: SocketAddr, baseline: usize) {
    let mut served = Vec::new();
    for i in 0..CAP {
        let mut c = BufStream::new(TcpStream::connect(addr).await.unwrap());
        c.write(format!("s{i}\n").as_bytes()).await.unwrap();
        c.flush().await.unwrap();
        assert_eq!(
            c.read_line(64).await.unwrap().unwrap(),
            format!("s{i}\n").as_bytes()
        );
        served.push(c);
    }
    let mut waiting = Vec::new();
    for i in 0..EXTRA {
        let mut c = BufStream::new(TcpStream::connect(addr).await.unwrap());
        c.write(format!("w{i}\n").as_bytes()).await.unwrap();
        c.flush().await.unwrap();
        waiting.push(c);
    }
    // Every extra connection is established (its connect returned), so it is in the
    // listener's accept queue or accepted. A few loop turns let the core reap any accept the
    // kernel completed, so an armed multishot would show here.
    for _ in 0..5 {
        sleep(Duration::from_millis(1)).await;
    }
    let server_fds = open_fd_count().unwrap() - baseline - (CAP + EXTRA);
    let queued = accept_queue(addr.port());
    eprintln!("server holds {server_fds} fds, {queued} connections wait in the kernel");
    assert!(
        server_fds <= CAP + SLACK,
        "at the cap the server holds {server_fds} accepted fds (cap {CAP})"
    );
    assert!(
        queued + server_fds >= CAP + EXTRA,
        "every connection is in the backlog or accepted: {queued} + {server_fds}"
    );
    // One served client leaves: its permit frees, accepting resumes, the first waiter is served.
    drop(served.pop());
    let first_waiting = &mut waiting[0];
    let echo = timeout(Duration::from_secs(10), first_waiting.read_line(64))
        .await
        .expect("a waiting client is served once a permit frees")
        .unwrap()
        .unwrap();
    assert_eq!(echo, b"w0\n");
}

/// Runs `clients` against a service on `accept` until they are done (then drops the service).
async fn run(accept: Accept, addr: SocketAddr, baseline: usize) {
    let service = Box::pin(async move {
        TcpService::new()
            .max_connections(CAP)
            .serve_with(accept, echo_lines)
            .await
    });
    match first(service, Box::pin(clients(addr, baseline))).await {
        First::A(result, _) => panic!("the service ended first: {result:?}"),
        First::B((), _) => {}
    }
}

#[test]
fn sharded_service_at_its_cap_leaves_connections_in_the_backlog() {
    let _turn = FDS.lock().unwrap_or_else(|e| e.into_inner());
    percore_engine::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        let baseline = open_fd_count().unwrap();
        run(Accept::Sharded(listener), addr, baseline).await;
    });
}

#[test]
fn handoff_service_at_its_cap_leaves_connections_in_the_backlog() {
    let _turn = FDS.lock().unwrap_or_else(|e| e.into_inner());
    percore_engine::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        let handoff: Arc<Handoff> = Handoff::new(1);
        let baseline = open_fd_count().unwrap();
        let accept = Accept::Handoff {
            handoff,
            listener: Some(listener),
        };
        run(accept, addr, baseline).await;
    });
}
