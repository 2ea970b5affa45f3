//! The load client of the TCP echo benchmark: tokio `current_thread` on one pinned CPU,
//! `--connections` connections, each in a closed loop (send a `--size`-byte message, wait for
//! the whole echo, repeat). Latencies of the round trips completed after `--warmup` seconds
//! and within the next `--duration` seconds go into an HDR histogram; the client prints one
//! line of JSON: round trips/s and p50/p99/p99.9/max in µs.
//!
//! With `--server-pid PID` it also reads the server's utime/stime from `/proc/PID/stat` at
//! the start and at the end of the measured window and adds the server's user and system CPU
//! µs per round trip. `--free-port` prints a free TCP port of 127.0.0.1 and exits.
//!
//! The message is `Z`s ending in a newline, so `percore serve holla` (a line back upper-cased)
//! is loaded the same way.
//!
//! Run: `echo_client --cpu 1 --addr 127.0.0.1:7000 --connections 64 --size 64`.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use percore_benches::{block_on_pinned, latency_json, proc_times, server_cpu_json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// The echo server.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// The CPU to pin the client thread to.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// Concurrent connections, each one message in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The server's pid, to report its CPU time per round trip.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print a free TCP port of 127.0.0.1 and exit.
    #[arg(long)]
    free_port: bool,
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) if Instant::now() < give_up => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One connection's closed loop; records into `hist` the round trips ending in
/// `[measure_from, measure_to)` and returns when `measure_to` passes.
async fn run_connection(
    mut stream: TcpStream,
    size: usize,
    measure_from: Instant,
    measure_to: Instant,
    hist: Rc<RefCell<Histogram<u64>>>,
) -> io::Result<()> {
    // `Z`s ending in a newline: a line server that upper-cases (`percore serve holla`)
    // answers it with the same bytes, so it loads that one too.
    let mut msg = vec![b'Z'; size];
    if let Some(last) = msg.last_mut() {
        *last = b'\n';
    }
    let mut back = vec![0u8; size];
    loop {
        let start = Instant::now();
        stream.write_all(&msg).await?;
        stream.read_exact(&mut back).await?;
        let end = Instant::now();
        if end >= measure_to {
            return Ok(());
        }
        if end >= measure_from {
            let ns = end.duration_since(start).as_nanos() as u64;
            hist.borrow_mut().saturating_record(ns.max(1));
        }
    }
}

async fn run(args: &Args) -> io::Result<String> {
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        streams.push(connect(args.addr).await?);
    }
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(io::Error::other)?,
    ));
    let now = Instant::now();
    let measure_from = now + Duration::from_secs_f64(args.warmup);
    let measure_to = measure_from + Duration::from_secs_f64(args.duration);
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::with_capacity(streams.len());
    for stream in streams {
        handles.push(local.spawn_local(run_connection(
            stream,
            args.size,
            measure_from,
            measure_to,
            hist.clone(),
        )));
    }
    let pid = args.server_pid;
    let (cpu_before, cpu_after, errors) = local
        .run_until(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = pid.map(proc_times).transpose()?;
            tokio::time::sleep_until(measure_to.into()).await;
            let after = pid.map(proc_times).transpose()?;
            let mut errors = 0u64;
            for h in handles {
                match h.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        errors += 1;
                        eprintln!("connection: {e}");
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            Ok::<_, io::Error>((before, after, errors))
        })
        .await?;
    let hist = hist.borrow();
    let count = hist.len();
    let rt_per_s = count as f64 / args.duration;
    let mut json = format!(
        "{{\"connections\":{},\"size\":{},\"round_trips\":{},\"rt_per_s\":{:.1},{},\"errors\":{}",
        args.connections,
        args.size,
        count,
        rt_per_s,
        latency_json(&hist),
        errors,
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
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
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        println!("{}", l.local_addr()?.port());
        return Ok(());
    }
    let json = block_on_pinned(args.cpu, run(&args))??;
    println!("{json}");
    Ok(())
}
