//! The TCP proxy of the proxy benchmark on tokio, as a tokio user writes one: a
//! `current_thread` runtime on one pinned thread (CPU 0 by default), a `TcpListener`, and per
//! connection a spawned task that connects to the upstream and runs
//! `tokio::io::copy_bidirectional` (an 8 KiB buffer each way; each end half-closed when the
//! other reaches its end).
//!
//! Run: `proxy_tokio --listen 127.0.0.1:7000 --to 127.0.0.1:7001 --cpu 0`; see
//! `benches/proxy/sampled.sh`.

use std::io;
use std::net::SocketAddr;

use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// The upstream each connection is relayed to.
    #[arg(long)]
    to: SocketAddr,
    /// The CPU to pin the runtime thread to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
}

async fn relay(mut client: TcpStream, to: SocketAddr) -> io::Result<()> {
    let mut upstream = TcpStream::connect(to).await?;
    upstream.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn serve(listen: SocketAddr, to: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("proxy_tokio listening on {}", listener.local_addr()?);
    loop {
        let (stream, _peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(e) = relay(stream, to).await {
                eprintln!("proxy_tokio: {e}");
            }
        });
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    core_affinity::set_for_current(core_affinity::CoreId { id: args.cpu });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(args.listen, args.to))
}
