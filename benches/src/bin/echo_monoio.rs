//! The TCP echo server of the echo benchmark on monoio 0.2 with its io_uring driver: one
//! runtime on one pinned thread (CPU 0 by default), a `TcpListener`, and per connection a
//! spawned task that reads into a reused 4 KiB `Vec` and `write_all`s it back (monoio's owned
//! buffer API).
//!
//! Run: `echo_monoio --listen 127.0.0.1:7000 --cpu 0`; see `benches/echo/run.sh`.

use std::io;
use std::net::SocketAddr;

use clap::Parser;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// The CPU to pin the runtime thread to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
}

async fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let (res, back) = stream.read(buf).await;
        if res? == 0 {
            return Ok(());
        }
        let (res, mut back) = stream.write_all(back).await;
        res?;
        back.clear();
        buf = back;
    }
}

async fn serve(listen: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    eprintln!("echo_monoio listening on {}", listener.local_addr()?);
    loop {
        let (stream, _peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        monoio::spawn(echo(stream));
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    core_affinity::set_for_current(core_affinity::CoreId { id: args.cpu });
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()?
        .block_on(serve(args.listen))
}
