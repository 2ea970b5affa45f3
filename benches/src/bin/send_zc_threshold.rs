//! Where zero-copy send (`SEND_ZC`) starts to beat a plain send, over a real TCP connection.
//!
//! The sender is a percore core (CPU 0 by default) writing `--total` bytes per trial in writes
//! of one size through `TcpStream::write`, once with the zero-copy threshold off (plain send)
//! and once with it at 0 (every write zero-copy), alternating, `--rounds` times per size. The
//! receiver is a std thread on another CPU (1) reading into a 1 MiB buffer and acknowledging
//! each trial with one byte. For each size it prints the median throughput of each mode, the
//! ratio zero-copy / plain, and the sender's CPU time (user + system) per MiB.
//!
//! Run: `cargo run --release -p percore-benches --bin send_zc_threshold`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use percore_engine::Runtime;
use percore_net::tcp::{TcpListener, TcpStream};

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// CPU of the sending core.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// CPU of the receiving thread.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Bytes sent per trial.
    #[arg(long, default_value_t = 256 << 20)]
    total: usize,
    /// Trials per mode and size (alternating plain / zero-copy).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write sizes in KiB.
    #[arg(long, value_delimiter = ',', default_value = "4,16,64,256,1024,4096")]
    sizes_kib: Vec<usize>,
}

/// One trial's outcome.
#[derive(Debug, Clone, Copy)]
struct Trial {
    wall: Duration,
    cpu: Duration,
}

fn cpu_now() -> Duration {
    let (user, system) = percore_engine::thread_cpu_time();
    user + system
}

/// Sends `total` bytes in writes of `data.len()` and waits for the receiver's acknowledgement.
async fn trial(stream: &TcpStream, data: &Bytes, total: usize) -> std::io::Result<Trial> {
    let (t0, c0) = (Instant::now(), cpu_now());
    let mut left = total;
    while left > 0 {
        let mut chunk = data.slice(..data.len().min(left));
        while !chunk.is_empty() {
            let (res, back) = stream.write(chunk).await;
            let n = res?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            left -= n;
            chunk = back.slice(n..);
        }
    }
    let (res, _) = stream.read(Vec::with_capacity(1)).await;
    if res? != 1 {
        return Err(std::io::Error::other("receiver went away"));
    }
    Ok(Trial {
        wall: t0.elapsed(),
        cpu: cpu_now() - c0,
    })
}

fn receiver(addr: SocketAddr, cpu: usize, trials: Vec<usize>) -> std::io::Result<()> {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    let mut s = std::net::TcpStream::connect(addr)?;
    let mut buf = vec![0u8; 1 << 20];
    for total in trials {
        let mut got = 0;
        while got < total {
            match s.read(&mut buf)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        s.write_all(&[1])?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let rt = Runtime::builder().cpus([args.cpu]).build()?;
    let per_size = 2 * args.rounds;
    let results = rt
        .run(|_| {
            let args = &args;
            async move {
                let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
                let addr = listener.local_addr();
                let trials = vec![args.total; per_size * args.sizes_kib.len()];
                let cpu = args.client_cpu;
                let client = std::thread::spawn(move || receiver(addr, cpu, trials));
                let (stream, _) = listener.accept().await?;
                let mut rows = Vec::new();
                for &kib in &args.sizes_kib {
                    let data = Bytes::from(vec![0x5au8; kib * 1024]);
                    let (mut plain, mut zc) = (Vec::new(), Vec::new());
                    for _ in 0..args.rounds {
                        stream.set_send_zc_threshold(None);
                        plain.push(trial(&stream, &data, args.total).await?);
                        stream.set_send_zc_threshold(Some(0));
                        zc.push(trial(&stream, &data, args.total).await?);
                    }
                    rows.push((kib, plain, zc));
                }
                client
                    .join()
                    .map_err(|_| std::io::Error::other("receiver panicked"))??;
                Ok::<_, std::io::Error>(rows)
            }
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let rows = results
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("no core ran"))??;
    let mib = args.total as f64 / (1 << 20) as f64;
    println!(
        "write size | plain MiB/s | zero-copy MiB/s | zc / plain | plain CPU us/MiB | zc CPU us/MiB"
    );
    println!("---|---|---|---|---|---");
    for (kib, plain, zc) in rows {
        let rate = |t: &[Trial]| median(t.iter().map(|t| mib / t.wall.as_secs_f64()).collect());
        let cpu = |t: &[Trial]| median(t.iter().map(|t| t.cpu.as_secs_f64() * 1e6 / mib).collect());
        let (p, z) = (rate(&plain), rate(&zc));
        println!(
            "{kib} KiB | {p:.0} | {z:.0} | {:.2} | {:.0} | {:.0}",
            z / p,
            cpu(&plain),
            cpu(&zc)
        );
    }
    Ok(())
}
