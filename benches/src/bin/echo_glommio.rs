//! The TCP echo server of the echo benchmark on glommio 0.9: one `LocalExecutor` placed on one
//! CPU (0 by default), a `TcpListener`, and per connection a `spawn_local` task that reads into
//! a 4 KiB buffer and `write_all`s it back.
//!
//! Run: `echo_glommio --listen 127.0.0.1:7000 --cpu 0`; see `benches/echo/run.sh`.

use std::io;
use std::net::SocketAddr;

use clap::Parser;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// The CPU of the executor.
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
    let listener = TcpListener::bind(listen)?;
    eprintln!("echo_glommio listening on {}", listener.local_addr()?);
    loop {
        let stream = listener.accept().await?;
        stream.set_nodelay(true)?;
        glommio::spawn_local(echo(stream)).detach();
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    LocalExecutorBuilder::new(Placement::Fixed(args.cpu))
        .name("echo-glommio")
        .make()
        .map_err(|e| io::Error::other(e.to_string()))?
        .run(serve(args.listen))
}
