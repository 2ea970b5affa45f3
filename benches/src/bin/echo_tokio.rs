//! The TCP echo server of the echo benchmark on tokio: a `current_thread` runtime on one
//! pinned thread (CPU 0 by default), a `TcpListener`, and per connection a spawned task that
//! reads into a 4 KiB buffer and `write_all`s it back.
//!
//! Run: `echo_tokio --listen 127.0.0.1:7000 --cpu 0`; see `benches/echo/run.sh`.

use std::io;
use std::net::SocketAddr;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn serve(listen: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("echo_tokio listening on {}", listener.local_addr()?);
    loop {
        let (stream, _peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(echo(stream));
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    core_affinity::set_for_current(core_affinity::CoreId { id: args.cpu });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(args.listen))
}
