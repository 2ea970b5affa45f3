//! Memory per idle connection: how much a TCP echo server's resident memory grows per open,
//! idle connection.
//!
//! Starts the server command given after `--` (it must print `listening on ADDR` on stderr;
//! give it `--listen 127.0.0.1:0`), pins it with `taskset -c SERVER_CPU`, warms it up with
//! `--warmup-round-trips` echoes on one connection (enough to cycle fixed per-core buffers such
//! as percore's 2048-buffer receive ring once), lets it settle and reads its `VmRSS` from
//! `/proc/PID/status`. Then,
//! from this process pinned to CLIENT_CPU, opens `--connections` connections, echoes
//! `--hello` bytes once on each (so every connection has been read from and written to, as a
//! real idle client would have), lets the server settle again and reads `VmRSS` once more. It
//! prints the growth per connection and stops the server. The soft open-file limit is raised
//! to the hard one (the server inherits it).
//!
//! Run: `idle_memory --connections 8000 -- target/release/echo_tokio --listen 127.0.0.1:0`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// Idle connections to open.
    #[arg(long, default_value_t = 8000)]
    connections: usize,
    /// Bytes echoed once on each connection before it goes idle (0: none).
    #[arg(long, default_value_t = 16)]
    hello: usize,
    /// Round trips of `--hello` bytes on the warm-up connection before the first reading:
    /// they cycle a server's fixed per-core buffers (percore's receive ring) so that only what
    /// grows per connection is measured.
    #[arg(long, default_value_t = 4096)]
    warmup_round_trips: usize,
    /// Seconds the server is left alone before each RSS reading.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// CPU the server is pinned to.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU this client is pinned to.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// A name for the result line (default: the server program's file name).
    #[arg(long)]
    name: Option<String>,
    /// The server command and its arguments.
    #[arg(last = true, required = true)]
    server: Vec<String>,
}

/// The server process; killed when dropped.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so the servers that handle it stop cleanly; then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raise_nofile() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmRSS in /proc/PID/status"))
}

fn start(args: &Args) -> std::io::Result<(Server, SocketAddr)> {
    let mut child = Command::new("taskset")
        .args(["-c", &args.server_cpu.to_string()])
        .args(&args.server)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let stderr = child.stderr.take().expect("piped stderr");
    let server = Server { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        // Keep draining stderr so the server never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| std::io::Error::other("the server never said `listening on ADDR`"))?;
    let addr = addr
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad address {addr:?}")))?;
    Ok((server, addr))
}

fn echo_once(stream: &mut TcpStream, bytes: usize) -> std::io::Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    // `Z`s ending in a newline: a line server that upper-cases (`percore serve holla`)
    // answers it with the same bytes.
    let mut out = vec![b'Z'; bytes];
    if let Some(last) = out.last_mut() {
        *last = b'\n';
    }
    stream.write_all(&out)?;
    let mut back = vec![0u8; bytes];
    stream.read_exact(&mut back)?;
    if back != out {
        return Err(std::io::Error::other("the echo differs"));
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let limit = raise_nofile()?;
    if (limit as usize) < args.connections + 100 {
        eprintln!("warning: open-file limit {limit} is below the connection count");
    }
    core_affinity::set_for_current(core_affinity::CoreId {
        id: args.client_cpu,
    });
    let settle = Duration::from_secs_f64(args.settle);
    let (server, addr) = start(&args)?;
    let pid = server.child.id();
    let mut warm = TcpStream::connect(addr)?;
    for _ in 0..args.warmup_round_trips.max(1) {
        echo_once(&mut warm, args.hello.max(1))?;
    }
    drop(warm);
    std::thread::sleep(settle);
    let before = rss_kib(pid)?;
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let mut s = TcpStream::connect(addr)?;
        echo_once(&mut s, args.hello)?;
        conns.push(s);
    }
    std::thread::sleep(settle);
    let after = rss_kib(pid)?;
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / args.connections as f64;
    let name = args.name.clone().unwrap_or_else(|| {
        std::path::Path::new(&args.server[0])
            .file_name()
            .map_or_else(|| args.server[0].clone(), |n| n.to_string_lossy().into())
    });
    println!(
        "{name}\tconnections {}\tRSS before {before} KiB\tafter {after} KiB\tper connection {per_conn:.0} B",
        args.connections
    );
    drop(conns);
    drop(server);
    Ok(())
}
