//! The servers of the UDP conversation benchmark, one core each (CPU 0 by default). All three
//! answer a peer's k-th datagram with `k:payload` (k counted per peer), so all three keep
//! per-peer state, and the client checks every reply:
//!
//! - `conv`: percore's `ConversationService` (a demultiplexer task, one task per peer, the
//!   counter lives in that task), with `numbered_echo`;
//! - `plain`: plain percore UDP on the same receive path as `conv` (one multishot `recvmsg`
//!   into a ring of the same buffers): percore-net's `UdpService` (the shape of `percore serve
//!   udp-echo`), the counter in a `HashMap<SocketAddr, u64>` bumped as each datagram is taken
//!   (in arrival order), the reply sent by the datagram's handler task, so sends overlap the
//!   next receives as `conv`'s do;
//! - `tokio`: the same loop as `plain` on a tokio `current_thread` runtime.
//!
//! Run: `udp_conv_echo --server conv --listen 127.0.0.1:7000 --cpu 0`; see
//! `benches/udp-conversation/run.sh`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use percore_engine::Runtime;
use percore_net::service::UdpService;
use percore_net::udp::UdpSocket;
use percore_udp_conversation::{numbered_echo, numbered_reply, ConversationService};

/// Which server.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Server {
    /// percore conversations.
    Conv,
    /// plain percore UDP with a HashMap of per-peer counters.
    Plain,
    /// tokio UDP with a HashMap of per-peer counters.
    Tokio,
}

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// Which server.
    #[arg(long, value_enum)]
    server: Server,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// The CPU of the (single) core.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// percore servers: spin on the ring this many µs before sleeping (the runtime's latency
    /// mode, `Builder::busy_poll`); 0 (the default) sleeps at once.
    #[arg(long, default_value_t = 0)]
    busy_poll_us: u64,
}

/// Longest datagram the servers take.
const MAX_DATAGRAM: usize = 65_535;

/// Receive buffers of the percore servers (`ConversationService`'s default).
const RING_BUFFERS: u16 = 64;

/// Every server's receive buffer: room for many peers' datagrams in flight (the default
/// ~208 KiB overflows with a few hundred closed-loop peers).
const RECV_BUFFER: usize = 4 << 20;

/// Binds the percore servers' socket, with the receive buffer set.
fn bind(listen: SocketAddr, name: &str) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind_sharded(listen)?;
    socket2::SockRef::from(socket.fd()).set_recv_buffer_size(RECV_BUFFER)?;
    eprintln!(
        "udp_conv_echo ({name}) listening on {}",
        socket.local_addr()
    );
    Ok(socket)
}

/// The per-peer counter of the `plain` and `tokio` servers.
fn next_reply(
    counters: &mut HashMap<SocketAddr, u64>,
    from: SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    let k = counters.entry(from).or_insert(0);
    *k += 1;
    numbered_reply(*k, payload)
}

async fn serve_conv(listen: SocketAddr) -> io::Result<()> {
    let socket = bind(listen, "conv")?;
    let service = ConversationService::new()
        .max_conversations(100_000)
        .max_datagram(MAX_DATAGRAM)
        .receive_buffers(RING_BUFFERS)
        .idle_timeout(Duration::from_secs(60));
    service.serve(socket, numbered_echo).await.map(drop)
}

async fn serve_plain(listen: SocketAddr) -> io::Result<()> {
    let socket = bind(listen, "plain")?;
    let counters = RefCell::new(HashMap::new());
    UdpService::new()
        .max_datagram(MAX_DATAGRAM)
        .buffers(RING_BUFFERS)
        // The handler gives its ring buffer back before it runs: no cap needed below the
        // peers in flight.
        .max_in_flight(1 << 16)
        .serve(socket, move |socket, datagram| {
            // The count and the reply are made here, as the datagram is taken (arrival order);
            // the ring buffer goes back with `datagram`, before the send.
            let reply = datagram.source.map(|from| {
                (
                    next_reply(&mut counters.borrow_mut(), from, &datagram.payload),
                    from,
                )
            });
            drop(datagram);
            async move {
                if let Some((reply, to)) = reply {
                    let (sent, _) = socket.send_to(reply, to).await;
                    sent?;
                }
                Ok(())
            }
        })
        .await
        .map(drop)
}

async fn serve_tokio(listen: SocketAddr) -> io::Result<()> {
    let socket = tokio::net::UdpSocket::bind(listen).await?;
    socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER)?;
    eprintln!(
        "udp_conv_echo (tokio) listening on {}",
        socket.local_addr()?
    );
    let mut counters = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let reply = next_reply(&mut counters, from, &buf[..n]);
        socket.send_to(&reply, from).await?;
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let listen = args.listen;
    if let Server::Tokio = args.server {
        core_affinity::set_for_current(core_affinity::CoreId { id: args.cpu });
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(serve_tokio(listen));
    }
    let mut builder = Runtime::builder().cpus([args.cpu]);
    if args.busy_poll_us > 0 {
        builder = builder.busy_poll(Duration::from_micros(args.busy_poll_us));
    }
    let runtime = builder.build()?;
    let server = args.server;
    for res in runtime
        .run(move |_core| async move {
            match server {
                Server::Conv => serve_conv(listen).await,
                _ => serve_plain(listen).await,
            }
        })
        .map_err(|e| io::Error::other(e.to_string()))?
    {
        res?;
    }
    Ok(())
}
