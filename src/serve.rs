//! `percore serve`: the built-in services, on every chosen CPU, stopped by Ctrl-C or SIGTERM.
//!
//! - `echo`: TCP; every byte read is written back.
//! - `holla`: TCP; each line is answered upper-cased (diesel's tutorial server).
//! - `proxy`: TCP; each connection is joined to a new connection to `--to` (a TCP address or
//!   `unix:PATH`), bytes relayed both ways by the cores' drivers, half-closes passed on.
//! - `udp-echo`: UDP; each datagram is sent back to its sender.
//! - `conversation-echo`: UDP conversations; a peer's k-th datagram is answered `k:payload`
//!   (k counted per peer from 1); peers beyond `--max-conversations` (per core) get no answer.
//!
//! Each core binds its own `SO_REUSEPORT` socket on the address; the kernel spreads peers
//! across cores (or, with `--accept handoff`, for the TCP services only, the first core accepts
//! every connection and hands each to the least-loaded core). On SIGINT/SIGTERM the services
//! stop accepting, open connections are closed at their next read or while a reply waits for a
//! peer that does not read, and the process exits 0 once every core is done. With
//! `--idle-timeout`, a TCP connection is also closed when its peer sends nothing, takes no
//! reply, or (holla) does not complete a line within it (echo and proxy: when no byte moved
//! for a whole timeout; it is closed between one and two timeouts after the last). A proxied
//! connection is not cut at a shutdown: it has most of the grace period to finish (its client
//! and upstream may be in the middle of an exchange), then it is closed and counted failed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use percore::net::service::{Accept, TcpService, UdpService};
use percore::net::tcp::{Handoff, TcpListener, TcpStream};
// Status lines: a stderr nobody reads any more (the `percore bench` that started this
// service is gone) loses the line; the service stops as it was going to, not by a panic.
use percore::net::log::line as note;
use percore::net::udp::UdpSocket;
use percore::net::unix::UnixStream;
use percore::net::{relay_both, BufStream, RelayBoth, Relayable, Relaying};
use percore::scope::fail_after;
use percore::udp_conversation::{numbered_echo, ConversationService};
use percore::{first, shutdown, First};

/// Which service to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Service {
    /// TCP echo: every byte read is written back.
    Echo,
    /// TCP: each line answered upper-cased.
    Holla,
    /// TCP proxy: each connection relayed both ways to a new connection to `--to`.
    Proxy,
    /// UDP echo: each datagram sent back.
    UdpEcho,
    /// UDP conversations: a peer's k-th datagram answered `k:payload`.
    ConversationEcho,
}

impl Service {
    /// Its name on the command line.
    fn name(self) -> &'static str {
        match self {
            Service::Echo => "echo",
            Service::Holla => "holla",
            Service::Proxy => "proxy",
            Service::UdpEcho => "udp-echo",
            Service::ConversationEcho => "conversation-echo",
        }
    }
}

/// How TCP connections reach the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AcceptMode {
    /// A `SO_REUSEPORT` listener per core; the kernel's hash spreads connections.
    Sharded,
    /// One listener on the first core; each connection handed to the least-loaded core.
    Handoff,
}

/// Options of `percore serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The service.
    service: Service,
    /// Address to listen on (every core binds it). Port 0 picks a free port, printed at start.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// CPUs to run a core on: `0`, `0-3` or `0,2` (default: all).
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<CpuList>,
    /// How TCP connections reach the cores.
    #[arg(long, value_enum, default_value_t = AcceptMode::Sharded)]
    accept: AcceptMode,
    /// Where `proxy` connects each connection to: `HOST:PORT` (resolved once, at start) or
    /// `unix:PATH`.
    #[arg(long, value_parser = parse_upstream)]
    to: Option<Upstream>,
    /// How long `proxy` waits for `--to` to accept a connection before closing the client's
    /// (default 5s).
    #[arg(long, value_parser = parse_timeout)]
    connect_timeout: Option<Duration>,
    /// Live connections per core at most (at least 1).
    #[arg(long, value_parser = parse_limit, default_value_t = 10_000)]
    max_connections: usize,
    /// Close a connection idle this long (`500ms`, `30s`, `2m`; more than zero): no bytes from
    /// the peer, no reply taken, or (holla) no whole line within it; default: never
    /// (conversation-echo: 60s).
    #[arg(long, value_parser = parse_timeout)]
    idle_timeout: Option<Duration>,
    /// Live UDP conversations per core at most (conversation-echo; at least 1).
    #[arg(long, value_parser = parse_limit, default_value_t = 10_000)]
    max_conversations: usize,
    /// Longest line `holla` accepts, in bytes (at least 1).
    #[arg(long, value_parser = parse_limit, default_value_t = 64 * 1024)]
    max_line: usize,
    /// Longest datagram `udp-echo` and `conversation-echo` take, in bytes (1 to 65535; longer
    /// ones are counted and dropped).
    #[arg(long, value_parser = parse_datagram_size, default_value_t = 2048)]
    max_datagram: usize,
    /// How long connections get to finish after Ctrl-C / SIGTERM.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    grace: Duration,
    /// Also stop (as on SIGTERM) when standard input reaches its end: `percore bench` holds
    /// the other end, so its service never outlives it.
    #[arg(long, hide = true)]
    stop_at_stdin_end: bool,
}

/// A list of CPUs, as `--cpus` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CpuList(pub(crate) Vec<usize>);

/// The CPUs this process may run on, in order: its affinity mask (a cpuset or `taskset`
/// narrows it), or every CPU counted if the mask cannot be read.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => {
            let mut cpus: Vec<usize> = ids.into_iter().map(|c| c.id).collect();
            cpus.sort_unstable();
            cpus
        }
        _ => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// CPU numbers go up to this (the kernel's `CPU_SETSIZE`).
const MAX_CPU: usize = 1023;

/// Parses `0`, `0-3`, `0,2`, `0-1,4`: CPU numbers up to [`MAX_CPU`].
pub(crate) fn parse_cpus(s: &str) -> Result<CpuList, String> {
    // One flag per CPU number: a list that names CPUs again and again takes no more room.
    let mut named = [false; MAX_CPU + 1];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad CPU number in {part:?}"))?;
                let b: usize = b
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad CPU number in {part:?}"))?;
                if a > b {
                    return Err(format!("empty CPU range {part:?}"));
                }
                if b > MAX_CPU {
                    return Err(format!("CPU numbers go up to {MAX_CPU}: {part:?}"));
                }
                named[a..=b].fill(true);
            }
            None => {
                let cpu: usize = part
                    .parse()
                    .map_err(|_| format!("bad CPU number {part:?}"))?;
                if cpu > MAX_CPU {
                    return Err(format!("CPU numbers go up to {MAX_CPU}: {part:?}"));
                }
                named[cpu] = true;
            }
        }
    }
    let cpus: Vec<usize> = (0..=MAX_CPU).filter(|&c| named[c]).collect();
    if cpus.is_empty() {
        return Err("expected CPUs like 0, 0-3 or 0,2".into());
    }
    Ok(CpuList(cpus))
}

/// Parses a limit: a whole number, at least 1 (a limit of zero would refuse everything, and
/// the services would quietly take 1 instead).
fn parse_limit(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("expected at least 1 (a limit of 0 would refuse everything)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number from 1 up, got {s:?}")),
    }
}

/// The largest UDP datagram's payload is under 64 KiB.
const MAX_DATAGRAM: usize = 65_535;

/// Parses `--max-datagram`: 1 to [`MAX_DATAGRAM`] bytes (each receive buffer is this large).
fn parse_datagram_size(s: &str) -> Result<usize, String> {
    match parse_limit(s)? {
        n if n > MAX_DATAGRAM => Err(format!(
            "expected at most {MAX_DATAGRAM} (no UDP datagram is longer), got {n}"
        )),
        n => Ok(n),
    }
}

/// Parses an idle timeout: a duration as [`parse_duration`] takes it, more than zero (a zero
/// timeout would close every connection at once).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err("expected a timeout above zero, like 500ms or 30s".into()),
        d => Ok(d),
    }
}

/// Where a proxy connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Upstream {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Tcp(addr) => write!(f, "{addr}"),
            Upstream::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Parses `--to`: `unix:PATH`, or `HOST:PORT` resolved now (the first address the resolver
/// gives; a proxy that looked the name up per connection would stall every core on it).
fn parse_upstream(s: &str) -> Result<Upstream, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("expected a socket's path after unix:".into());
        }
        return Ok(Upstream::Unix(path.into()));
    }
    use std::net::ToSocketAddrs as _;
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT or unix:PATH, got {s:?}: {e}"))?;
    addrs
        .next()
        .map(Upstream::Tcp)
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// Parses `250ms`, `2s`, `1m`, `1.5s`, or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 500ms or 2s, got {s:?}"))?;
    let secs = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} (use us, ms, s, m)")),
    };
    // Longer than a year is a typo, and near `Duration`'s end adding it to a clock overflows.
    const MAX_SECS: f64 = 366.0 * 24.0 * 3600.0;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if secs <= MAX_SECS => Ok(d),
        _ => Err(format!("duration out of range: {s:?} (from 0 to 366 days)")),
    }
}

/// For port 0: binds a `SO_REUSEPORT` socket to a free port and keeps it for the run, so that
/// every core joins that one port and no other server can be handed it meanwhile.
fn reserve_port(
    addr: SocketAddr,
    udp: bool,
) -> anyhow::Result<(SocketAddr, Option<socket2::Socket>)> {
    if addr.port() != 0 {
        return Ok((addr, None));
    }
    let ty = if udp {
        socket2::Type::DGRAM
    } else {
        socket2::Type::STREAM
    };
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), ty, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    let actual = socket
        .local_addr()?
        .as_socket()
        .context("reserved socket has no IP address")?;
    Ok((actual, Some(socket)))
}

/// Start-up shared by the cores: the port reservation is dropped once every core is bound (a
/// bound reservation would take its share of a UDP port's datagrams and never read them).
struct Startup {
    reservation: std::sync::Mutex<Option<socket2::Socket>>,
    bound: std::sync::atomic::AtomicUsize,
    cores: usize,
}

impl Startup {
    /// Called by each core once its socket is bound; prints where it listens (scripts and
    /// tests wait for this line).
    fn core_bound(&self, addr: SocketAddr) {
        note(format_args!(
            "percore serve: core {} listening on {addr}",
            percore::current_core().index
        ));
        let bound = self.bound.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        if bound == self.cores {
            let mut reservation = self.reservation.lock().unwrap_or_else(|e| e.into_inner());
            drop(reservation.take());
        }
    }
}

pub(crate) fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    let udp = match args.service {
        Service::Echo | Service::Holla | Service::Proxy => false,
        Service::UdpEcho | Service::ConversationEcho => true,
    };
    if udp && args.accept == AcceptMode::Handoff {
        bail!(
            "--accept handoff hands TCP connections to the cores, and {} is a UDP service \
             (its cores share the port through SO_REUSEPORT): drop --accept or use echo or holla",
            args.service.name()
        );
    }
    match (args.service, &args.to) {
        (Service::Proxy, None) => bail!("proxy needs --to HOST:PORT or --to unix:PATH"),
        (Service::Proxy, Some(_)) | (_, None) => {}
        (service, Some(_)) => bail!(
            "--to is where proxy connects, and {} is not a proxy: drop --to",
            service.name()
        ),
    }
    if args.service != Service::Proxy && args.connect_timeout.is_some() {
        bail!(
            "--connect-timeout is for proxy's connections to --to, and {} makes none: drop it",
            args.service.name()
        );
    }
    let (listen, reservation) = reserve_port(args.listen, udp).context("choosing a port")?;
    args.listen = listen;
    let mut builder = percore::Runtime::builder()
        .handle_signals(true)
        .announce(true)
        .grace_period(args.grace);
    if let Some(cpus) = &args.cpus {
        builder = builder.cpus(cpus.0.iter().copied());
    }
    let runtime = builder.build().context("building the runtime")?;
    if args.stop_at_stdin_end {
        stop_at_stdin_end(&runtime)?;
    }
    // A proxy says where it connects: `--to` named by host resolves once, here.
    let to = args
        .to
        .as_ref()
        .map(|to| format!(" to {to}"))
        .unwrap_or_default();
    note(format_args!(
        "percore serve {:?} on {}{to} (CPUs {:?}); Ctrl-C to stop",
        args.service,
        args.listen,
        runtime.cpus()
    ));
    // TCP only (refused above for UDP).
    let handoff = (args.accept == AcceptMode::Handoff).then(|| Handoff::new(runtime.cpus().len()));
    let startup = Startup {
        reservation: std::sync::Mutex::new(reservation),
        bound: std::sync::atomic::AtomicUsize::new(0),
        // In hand-off mode only the first core listens.
        cores: if handoff.is_some() {
            1
        } else {
            runtime.cpus().len()
        },
    };
    let outcome = runtime.run(|_| async {
        let result = match args.service {
            Service::Echo | Service::Holla | Service::Proxy => {
                serve_tcp(&args, &startup, handoff.as_ref()).await
            }
            Service::UdpEcho => serve_udp(&args, &startup).await,
            Service::ConversationEcho => serve_conversations(&args, &startup).await,
        };
        result.map_err(|e| e.to_string())
    });
    match outcome {
        Ok(cores) => {
            let failures: Vec<_> = cores.into_iter().filter_map(Result::err).collect();
            if !failures.is_empty() {
                bail!("service failed: {}", failures.join("; "));
            }
            note(format_args!("percore serve: stopped"));
            Ok(())
        }
        Err(e) => bail!("{e}"),
    }
}

/// Starts the thread that requests `runtime`'s shutdown when stdin reaches its end (or fails).
fn stop_at_stdin_end(runtime: &percore::Runtime) -> anyhow::Result<()> {
    let handle = runtime.handle();
    // The thread starts with SIGINT and SIGTERM held, as the cores will: a signal must reach
    // the runtime's signalfd, not end the process through a thread that does not hold it.
    let _held = percore::runtime::hold_shutdown_signals().context("holding SIGINT/SIGTERM")?;
    std::thread::Builder::new()
        .name("percore-stdin".into())
        .spawn(move || {
            use std::io::Read as _;
            let mut stdin = std::io::stdin().lock();
            let mut sink = [0u8; 256];
            loop {
                match stdin.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            handle.shutdown();
        })
        .context("starting the stdin watcher")?;
    Ok(())
}

async fn serve_tcp(
    args: &ServeArgs,
    startup: &Startup,
    handoff: Option<&Arc<Handoff>>,
) -> std::io::Result<()> {
    let accept = match handoff {
        None => {
            let listener = TcpListener::bind(args.listen)?;
            startup.core_bound(args.listen);
            Accept::Sharded(listener)
        }
        Some(handoff) => {
            let listener = if percore::current_core().index == 0 {
                let listener = TcpListener::bind(args.listen)?;
                startup.core_bound(args.listen);
                Some(listener)
            } else {
                None
            };
            Accept::Handoff {
                handoff: handoff.clone(),
                listener,
            }
        }
    };
    let mut service = TcpService::new().max_connections(args.max_connections);
    if let Some(t) = args.idle_timeout {
        service = service.idle_timeout(t);
    }
    let (max_line, idle) = (args.max_line, args.idle_timeout);
    let stats = match (args.service, &args.to) {
        (Service::Holla, _) => {
            service
                .serve_with(accept, move |conn, _| holla(conn, max_line, idle))
                .await?
        }
        (Service::Proxy, Some(upstream)) => {
            let upstream = Rc::new(upstream.clone());
            let connect_timeout = args.connect_timeout.unwrap_or(CONNECT_TIMEOUT);
            let drain = drain_time(args.grace);
            service
                .serve_with(accept, move |conn, _| {
                    proxy(conn, upstream.clone(), connect_timeout, idle, drain)
                })
                .await?
        }
        (Service::Proxy, None) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "proxy needs --to",
            ))
        }
        _ => {
            service
                .serve_with(accept, move |conn, _| echo(conn, idle))
                .await?
        }
    };
    note(format_args!(
        "percore serve: core {}: {} connections ({} failed, {} panicked)",
        percore::current_core().index,
        stats.accepted,
        stats.failed,
        stats.panicked
    ));
    Ok(())
}

/// Every byte back, until the peer closes or a shutdown starts.
///
/// The stream is relayed back to itself
/// ([`TcpStream::relay_back`](percore::net::tcp::TcpStream::relay_back)): the core's driver
/// sends each received chunk back from its ring buffer as the receive completes, and the next
/// when the last send completes, so an exchange wakes no task at all,
/// and a connection waiting for its peer holds no buffer. The task wakes when the peer closes
/// (or fails), and, with an idle timeout, once per timeout to look at the relay's progress.
///
/// With an idle timeout, a connection that moves no byte for a whole timeout (its peer sends
/// nothing, or takes no reply: the relay's receive pauses behind the replies that wait) is
/// closed, between one and two timeouts after its last byte moved. A shutdown ends the
/// exchange at once, cancelling replies that wait for their peer.
///
/// Sized with care: every idle connection holds this future, sized for its largest state (the
/// relay's future and a timer). Not an `async fn`: one moves its arguments into a second slot
/// of its future; an `async move` block keeps the one it captured.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold the stream twice (see above)
fn echo(conn: BufStream, idle: Option<Duration>) -> impl Future<Output = std::io::Result<()>> {
    // Unwrapped before the future is built, which then holds the stream alone. The service
    // hands the connection over before reading from it: nothing is buffered.
    let (mut stream, buffered_in, _) = conn.into_parts();
    debug_assert!(buffered_in.is_empty());
    drop(buffered_in);
    async move {
        // Pinned in place, not boxed: an idle connection's task holds no extra allocation.
        let exchange = std::pin::pin!(async {
            let relay = stream.relay_back()?;
            match idle {
                None => relay.await.map(drop),
                Some(limit) => relay_while_busy(relay, limit).await,
            }
        });
        until_shutdown(exchange).await
    }
}

/// Awaits `relay`, failing it when a whole `limit` passes with no byte moved.
async fn relay_while_busy(relay: Relaying<'_>, limit: Duration) -> std::io::Result<()> {
    let relay = std::pin::pin!(relay);
    while_busy(relay, Relaying::progress, limit).await.map(drop)
}

/// Awaits `work`, failing it when a whole `limit` passes in which `progress` read the same
/// (one timer per `limit`, not per exchange).
async fn while_busy<F, T, P>(
    mut work: Pin<&mut F>,
    progress: impl Fn(&F) -> P,
    limit: Duration,
) -> std::io::Result<T>
where
    F: Future<Output = std::io::Result<T>>,
    P: PartialEq,
{
    let mut seen = progress(&work);
    loop {
        match fail_after(limit, work.as_mut()).await {
            Ok(done) => return done,
            Err(_) => {
                let now = progress(&work);
                if now == seen {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no byte moved within the idle timeout ({limit:?})"),
                    ));
                }
                seen = now;
            }
        }
    }
}

/// Joins the connection to a new one to `upstream` and relays both ways
/// ([`relay_both`](percore::net::relay_both): each direction by the core's driver, no task
/// wake-up per chunk; a half-close passed on) until both directions ended. A client whose
/// upstream cannot be reached within `connect_timeout` is closed, and the failure counted.
///
/// When a side refuses bytes (an upstream that answered early and closed while its client was
/// still sending), the other direction still delivers what was sent before, and what the
/// client goes on sending is read and dropped meanwhile, so that a client that sends all
/// before it reads gets to its answer (see [`relay_both`](percore::net::relay_both)). The
/// client then gets up to [`LINGER`] to take the answer before the close. A side that resets
/// has the other side reset too.
///
/// With an idle timeout, a connection on which no byte moved either way for a whole timeout
/// is closed (both sides). A shutdown does not cut it at once: it is closed `drain` later
/// (see [`drain_time`]) if it has not ended by then, and counted failed. Built as [`echo`]'s
/// future.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold the stream twice (see `echo`)
fn proxy(
    conn: BufStream,
    upstream: Rc<Upstream>,
    connect_timeout: Duration,
    idle: Option<Duration>,
    drain: Duration,
) -> impl Future<Output = std::io::Result<()>> {
    let (mut client, buffered_in, _) = conn.into_parts();
    debug_assert!(buffered_in.is_empty());
    drop(buffered_in);
    async move {
        let exchange = std::pin::pin!(async {
            let relayed = match &*upstream {
                Upstream::Tcp(addr) => {
                    let mut server = TcpStream::connect_timeout(*addr, connect_timeout)
                        .await
                        .map_err(|e| unreachable_upstream(&upstream, e))?;
                    relay_with(&mut client, &mut server, idle).await
                }
                Upstream::Unix(path) => {
                    let connect = UnixStream::connect(path);
                    let mut server = percore::scope::move_on_after(connect_timeout, connect)
                        .await
                        .unwrap_or_else(|| {
                            Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("connect timed out after {connect_timeout:?}"),
                            ))
                        })
                        .map_err(|e| unreachable_upstream(&upstream, e))?;
                    relay_with(&mut client, &mut server, idle).await
                }
            };
            if let Err(e) = &relayed {
                if percore::ops::is_refusal(e) {
                    // A side refused bytes (an upstream that answered early and closed, say):
                    // the client may still be sending, and closing on its unread bytes would
                    // reset the connection and throw away the answer on its way to it.
                    let _ = client.linger(LINGER).await;
                }
            }
            relayed
        });
        until_drained(exchange, drain).await
    }
}

/// Relays the client and its upstream both ways (see [`relay_until_idle`]). If a side reset
/// ended it, the other side is reset too when its socket closes (`SO_LINGER` 0), as a proxy
/// passes an abort on, rather than ended as if all was well.
async fn relay_with(
    client: &mut TcpStream,
    server: &mut impl Relayable,
    idle: Option<Duration>,
) -> std::io::Result<()> {
    let relayed = {
        let both = std::pin::pin!(relay_both(client, server));
        relay_until_idle(both, idle).await
    };
    if let Err(e) = &relayed {
        if e.kind() == std::io::ErrorKind::ConnectionReset && !percore::ops::is_refusal(e) {
            for fd in [client.fd(), server.fd()] {
                // Best effort: a socket the reset already closed refuses it, harmlessly.
                let _ = socket2::SockRef::from(fd).set_linger(Some(Duration::ZERO));
            }
        }
    }
    relayed
}

/// How long a proxy waits for its upstream to accept a connection, unless told.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a proxied connection whose side refused bytes waits for its client to take what
/// was sent to it before it is closed (nginx's `lingering_timeout` is as long).
const LINGER: Duration = Duration::from_secs(5);

/// How long a proxied connection may go on after a shutdown request: the grace period less a
/// margin (a quarter of it, at most 500 ms), so that the service ends by itself, its
/// connections closed, before the runtime would cancel it.
fn drain_time(grace: Duration) -> Duration {
    grace.saturating_sub((grace / 4).min(Duration::from_millis(500)))
}

/// Runs a connection's `exchange` until it ends, or until `drain` after a shutdown request.
/// One still going then is cut: that is an error (`TimedOut`), so the service counts it
/// failed, not completed: its bytes in flight were dropped.
async fn until_drained<F>(exchange: Pin<&mut F>, drain: Duration) -> std::io::Result<()>
where
    F: Future<Output = std::io::Result<()>>,
{
    let drained = std::pin::pin!(async {
        shutdown::requested().await;
        percore::time::sleep(drain).await;
    });
    match first(drained, exchange).await {
        First::A((), _) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("cut at the shutdown: still open {drain:?} after it was asked for"),
        )),
        First::B(result, _) => result,
    }
}

/// Awaits both directions of a proxied connection, ending them when no byte moved for a whole
/// `idle` (if given).
async fn relay_until_idle(
    both: Pin<&mut RelayBoth<'_>>,
    idle: Option<Duration>,
) -> std::io::Result<()> {
    match idle {
        None => both.await.map(drop),
        Some(limit) => while_busy(both, RelayBoth::progress, limit).await.map(drop),
    }
}

fn unreachable_upstream(upstream: &Upstream, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("upstream {upstream}: {e}"))
}

/// Each line back upper-cased (diesel's "holla" server). With an idle timeout, a line must
/// arrive whole within it: a peer that trickles bytes (slowloris) is closed even though each
/// byte resets the read's own idle timer. A shutdown ends it, and its future is built, as
/// [`echo`]'s.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold the stream twice (see `echo`)
fn holla(
    mut conn: BufStream,
    max_line: usize,
    idle: Option<Duration>,
) -> impl Future<Output = std::io::Result<()>> {
    async move {
        let exchange = std::pin::pin!(async {
            loop {
                let line = match idle {
                    None => conn.read_line(max_line).await,
                    Some(limit) => percore::scope::move_on_after(limit, conn.read_line(max_line))
                        .await
                        .unwrap_or_else(|| Err(too_slow("a line", limit))),
                };
                let Some(line) = line? else {
                    return Ok(());
                };
                conn.write(&line.to_ascii_uppercase()).await?;
                // Sent behind: read when the next line (or the end) comes, so an exchange
                // wakes this task once, for the line, and not again for the reply's send.
                conn.start_flush().await?;
            }
        });
        until_shutdown(exchange).await
    }
}

/// Runs a connection's `exchange` until it ends or a shutdown starts; a shutdown ends it at
/// once, wherever it waits (for the peer's bytes, or for the peer to take a reply: a peer
/// that stopped reading must not hold the shutdown to its grace period).
async fn until_shutdown<F>(exchange: std::pin::Pin<&mut F>) -> std::io::Result<()>
where
    F: Future<Output = std::io::Result<()>>,
{
    match first(shutdown::requested(), exchange).await {
        First::A((), _) => Ok(()),
        First::B(result, _) => result,
    }
}

fn too_slow(what: &str, limit: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} did not get through within the idle timeout ({limit:?})"),
    )
}

async fn serve_udp(args: &ServeArgs, startup: &Startup) -> std::io::Result<()> {
    let socket = UdpSocket::bind_sharded(args.listen)?;
    startup.core_bound(args.listen);
    let stats = UdpService::new()
        .max_datagram(args.max_datagram)
        .serve(socket, |socket, datagram| async move {
            // A refused reply is that datagram's failure: the service counts it (the first of
            // its kind is logged) and goes on.
            if let Some(to) = datagram.source {
                let (sent, _) = socket.send_to(datagram.payload, to).await;
                sent?;
            }
            Ok(())
        })
        .await?;
    note(format_args!(
        "percore serve: core {}: {} datagrams ({} truncated and dropped, {} receive errors, \
         {} replies failed)",
        percore::current_core().index,
        stats.received,
        stats.truncated,
        stats.receive_errors,
        stats.failed
    ));
    Ok(())
}

async fn serve_conversations(args: &ServeArgs, startup: &Startup) -> std::io::Result<()> {
    let socket = UdpSocket::bind_sharded(args.listen)?;
    startup.core_bound(args.listen);
    let service = ConversationService::new()
        .max_conversations(args.max_conversations)
        .max_datagram(args.max_datagram)
        .idle_timeout(args.idle_timeout.unwrap_or(Duration::from_secs(60)));
    let stats = service.serve(socket, numbered_echo).await?;
    note(format_args!(
        "percore serve: core {}: {} conversations ({} failed, {} panicked, {} idle), \
         {} datagrams dropped ({} over the cap, {} too long, {} over the queue budget), \
         {} replies refused by the kernel",
        percore::current_core().index,
        stats.created,
        stats.ended.failed,
        stats.ended.panicked,
        stats.ended.idle_timeout,
        stats.dropped.total(),
        stats.dropped.over_cap,
        stats.dropped.truncated,
        stats.dropped.over_budget,
        stats.send_errors
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0"), Ok(CpuList(vec![0])));
        assert_eq!(parse_cpus("0-3"), Ok(CpuList(vec![0, 1, 2, 3])));
        assert_eq!(parse_cpus("0,2"), Ok(CpuList(vec![0, 2])));
        assert_eq!(parse_cpus("2,0-1,2"), Ok(CpuList(vec![0, 1, 2])));
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("1-").is_err());
    }

    #[test]
    fn upstreams() {
        assert_eq!(
            parse_upstream("127.0.0.1:6379"),
            Ok(Upstream::Tcp(([127, 0, 0, 1], 6379).into()))
        );
        assert_eq!(
            parse_upstream("[::1]:80"),
            Ok(Upstream::Tcp("[::1]:80".parse().unwrap()))
        );
        assert_eq!(
            parse_upstream("unix:/run/redis.sock"),
            Ok(Upstream::Unix("/run/redis.sock".into()))
        );
        assert_eq!(
            parse_upstream("unix:/run/redis.sock").unwrap().to_string(),
            "unix:/run/redis.sock"
        );
        // A name resolves, to some address of it.
        assert!(matches!(
            parse_upstream("localhost:7000"),
            Ok(Upstream::Tcp(addr)) if addr.port() == 7000 && addr.ip().is_loopback()
        ));
        for bad in [
            "unix:",
            "127.0.0.1",
            "no port here",
            ":80",
            "127.0.0.1:99999",
            "",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn drain_leaves_a_margin_of_the_grace_period() {
        assert_eq!(
            drain_time(Duration::from_secs(5)),
            Duration::from_millis(4500)
        );
        assert_eq!(
            drain_time(Duration::from_secs(1)),
            Duration::from_millis(750)
        );
        assert_eq!(
            drain_time(Duration::from_millis(100)),
            Duration::from_millis(75)
        );
        assert_eq!(drain_time(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("ms").is_err());
        // Numbers past the range (not malformed ones: those are refused as such).
        for huge in [
            "31622401",
            "31622401s",
            "18446744073709551616",
            "99999999999999999999999999999999m",
            "527041m",
        ] {
            let err = parse_duration(huge).unwrap_err();
            assert!(err.contains("out of range"), "{huge}: {err}");
        }
        assert!(parse_duration("31622400").is_ok());
        for malformed in ["1e300", "inf", "NaN", "400d", "-0.5s"] {
            assert!(parse_duration(malformed).is_err(), "{malformed}");
        }
        assert!(parse_cpus("0-18446744073709551615").is_err());
        assert!(parse_cpus("0-1024").is_err());
        assert_eq!(parse_cpus("1023").map(|c| c.0.len()), Ok(1));
    }

    /// Random strings over the characters these options are made of: the parsers answer
    /// every one (no panic, no huge allocation), and what they accept is in range.
    #[test]
    fn fuzz_duration_and_cpu_parsers() {
        const ALPHABET: &[u8] = b"0123456789-.,e+ msud9999x";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let len = (next() % 24) as usize;
            let text: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char)
                .collect();
            if let Ok(d) = parse_duration(&text) {
                assert!(d <= Duration::from_secs(366 * 24 * 3600), "{text:?}");
            }
            if let Ok(CpuList(cpus)) = parse_cpus(&text) {
                assert!(
                    !cpus.is_empty() && cpus.iter().all(|&c| c <= MAX_CPU),
                    "{text:?}"
                );
            }
        }
    }
}
