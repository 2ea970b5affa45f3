//! The load client of the UDP conversation benchmark: tokio `current_thread` on one pinned CPU,
//! `--peers` UDP sockets (one peer each, connected to the server), each in a closed loop: send
//! a `--size`-byte datagram, wait for the reply, check it is `k:payload` with k counting this
//! peer's datagrams from 1, repeat. Round trips completed after `--warmup` seconds and within
//! the next `--duration` seconds go into an HDR histogram; the client prints one line of JSON:
//! round trips/s, p50/p99/p99.9/max in µs, lost (no reply within `--loss-timeout-ms`: sent
//! again) and bad (a reply of the wrong shape or count) round trips.
//!
//! With `--server-pid PID` it adds the server's user and system CPU µs per round trip, from
//! `/proc/PID/stat` at the start and the end of the measured window. `--free-port` prints a
//! free UDP port of 127.0.0.1 and exits.
//!
//! Run: `udp_conv_client --cpu 1 --addr 127.0.0.1:7000 --peers 64 --size 64`.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use percore_benches::{block_on_pinned, latency_json, proc_times, server_cpu_json};
use tokio::net::UdpSocket;

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// The server.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// The CPU to pin the client thread to.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// Peers (client sockets), each one datagram in flight.
    #[arg(long, default_value_t = 64)]
    peers: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// A reply not back within this many ms counts as lost; the peer sends again.
    #[arg(long, default_value_t = 500)]
    loss_timeout_ms: u64,
    /// The server's pid, to report its CPU time per round trip.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print a free UDP port of 127.0.0.1 and exit.
    #[arg(long)]
    free_port: bool,
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// What the peers counted besides the histogram.
#[derive(Default)]
struct Tally {
    lost: Cell<u64>,
    bad: Cell<u64>,
}

/// Checks `reply` against `k:payload` and returns the k it carries.
fn reply_count(reply: &[u8], payload: &[u8]) -> Option<u64> {
    let colon = reply.iter().position(|&b| b == b':')?;
    let (k, rest) = reply.split_at(colon);
    if &rest[1..] != payload {
        return None;
    }
    std::str::from_utf8(k).ok()?.parse().ok()
}

/// One peer's closed loop until `measure_to`.
async fn run_peer(
    socket: UdpSocket,
    args: Rc<Args>,
    window: (Instant, Instant),
    hist: Rc<RefCell<Histogram<u64>>>,
    tally: Rc<Tally>,
) -> io::Result<()> {
    let payload = vec![0x5au8; args.size];
    let mut buf = vec![0u8; args.size + 32];
    let mut expected = 1u64;
    let loss_timeout = Duration::from_millis(args.loss_timeout_ms);
    loop {
        let start = Instant::now();
        socket.send(&payload).await?;
        let n = match tokio::time::timeout(loss_timeout, socket.recv(&mut buf)).await {
            Ok(n) => n?,
            Err(_) => {
                tally.lost.set(tally.lost.get() + 1);
                if Instant::now() >= window.1 {
                    return Ok(());
                }
                continue;
            }
        };
        let end = Instant::now();
        match reply_count(&buf[..n], &payload) {
            // A lost datagram (either way) moves the server's count on: follow it.
            Some(k) if k >= expected => expected = k + 1,
            _ => tally.bad.set(tally.bad.get() + 1),
        }
        if end >= window.1 {
            return Ok(());
        }
        if end >= window.0 {
            let ns = end.duration_since(start).as_nanos() as u64;
            hist.borrow_mut().saturating_record(ns.max(1));
        }
    }
}

async fn run(args: Rc<Args>) -> io::Result<String> {
    let mut sockets = Vec::with_capacity(args.peers);
    for _ in 0..args.peers {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(args.addr).await?;
        sockets.push(socket);
    }
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(io::Error::other)?,
    ));
    let tally = Rc::new(Tally::default());
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let measure_to = measure_from + Duration::from_secs_f64(args.duration);
    let local = tokio::task::LocalSet::new();
    let handles: Vec<_> = sockets
        .into_iter()
        .map(|s| {
            local.spawn_local(run_peer(
                s,
                args.clone(),
                (measure_from, measure_to),
                hist.clone(),
                tally.clone(),
            ))
        })
        .collect();
    let pid = args.server_pid;
    let (before, after) = local
        .run_until(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = pid.map(proc_times).transpose()?;
            tokio::time::sleep_until(measure_to.into()).await;
            let after = pid.map(proc_times).transpose()?;
            for h in handles {
                h.await.map_err(io::Error::other)??;
            }
            Ok::<_, io::Error>((before, after))
        })
        .await?;
    let hist = hist.borrow();
    let count = hist.len();
    let mut json = format!(
        "{{\"peers\":{},\"size\":{},\"round_trips\":{count},\"rt_per_s\":{:.1},{},\
         \"lost\":{},\"bad\":{}",
        args.peers,
        args.size,
        count as f64 / args.duration,
        latency_json(&hist),
        tally.lost.get(),
        tally.bad.get(),
    );
    if let (Some(before), Some(after)) = (before, after) {
        json.push_str(&server_cpu_json(
            before,
            after,
            count,
            clock_ticks_per_sec(),
        ));
    }
    json.push('}');
    Ok(json)
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    if args.free_port {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        println!("{}", socket.local_addr()?.port());
        return Ok(());
    }
    let json = block_on_pinned(args.cpu, run(Rc::new(args)))??;
    println!("{json}");
    Ok(())
}
