//! The TCP echo server of the echo benchmark on percore: one core (CPU 0 by default), a
//! `TcpListener`, and per connection a task that echoes what it receives.
//!
//! `--mode chunk` (the default, the fastest with the public API): `TcpStream::recv_chunk`
//! (a multishot receive into the core's provided-buffer ring), and the chunk sent straight
//! from the ring buffer with `TcpStream::send_chunk` (no copy; the buffer returns to the ring
//! at the send's completion, and the send's result is read when the next chunk comes, so an
//! exchange wakes the task once), like the raw loop. `--mode read`: a one-shot `TcpStream::read` into a
//! reused 64 KiB `Vec` and `write_all`. `--mode bufstream`: `BufStream::read_some` ->
//! `write` -> `flush`. `--mode relay`: `TcpStream::relay_back`, the driver sending each chunk
//! back from its ring buffer as its receive completes (no task wake-up per exchange).
//!
//! Run: `echo_percore --listen 127.0.0.1:7000 --cpu 0`; see `benches/echo/run.sh`.

use std::io;
use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use percore_engine::ops::SendOwned;
use percore_engine::Runtime;
use percore_net::tcp::{TcpListener, TcpStream};
use percore_net::BufStream;

/// How a connection task reads and writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// `recv_chunk` + `send_chunk`, the send's result read with the next chunk.
    Chunk,
    /// One-shot `read` into a reused `Vec` + `write_all`.
    Read,
    /// `BufStream::read_some` + `write` + `flush`.
    Bufstream,
    /// `TcpStream::relay_back`: the driver sends each chunk back itself, no task wake-up.
    Relay,
}

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// The CPU of the (single) core.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// How connections read and write.
    #[arg(long, value_enum, default_value_t = Mode::Chunk)]
    mode: Mode,
    /// Buffers in the core's shared receive ring (the engine's default when not given).
    #[arg(long)]
    receive_buffers: Option<u16>,
    /// Spin on the ring for up to this many microseconds before sleeping in the kernel
    /// (`Builder::busy_poll`; 0, the default: sleep at once).
    #[arg(long, default_value_t = 0)]
    busy_poll_us: u64,
}

/// Bytes read at most per `read` / `read_some`.
const READ_MAX: usize = 64 * 1024;

async fn echo_chunk(mut stream: TcpStream) -> io::Result<()> {
    // The last reply, submitted unwatched: its result is read when the next chunk arrives
    // (on a closed loop it completed long before), so an exchange wakes this task once. Its
    // ring buffer went back to the ring at the send's completion, not when it is read here.
    let mut replying: Option<SendOwned> = None;
    loop {
        let chunk = stream.recv_chunk().await?;
        // Sends go out in order: the next one waits for this one.
        // Awaited in place (by reference): every idle connection holds this future, sized
        // for its largest state.
        if let Some(reply) = &mut replying {
            reply.await?;
        }
        let Some(chunk) = chunk else {
            return Ok(());
        };
        // Sent straight from the ring buffer (no copy), all of it or an error.
        replying = stream.send_chunk(chunk).start_unwatched()?;
    }
}

async fn echo_relay(mut stream: TcpStream) -> io::Result<()> {
    stream.relay_back()?.await.map(drop)
}

async fn echo_read(stream: TcpStream) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_MAX);
    loop {
        buf.clear();
        let (res, back) = stream.read(buf).await;
        if res? == 0 {
            return Ok(());
        }
        let (res, back) = stream.write_all(back).await;
        res?;
        buf = back;
    }
}

async fn echo_bufstream(stream: TcpStream) -> io::Result<()> {
    let mut stream = BufStream::new(stream);
    while let Some(data) = stream.read_some(READ_MAX).await? {
        stream.write(&data).await?;
        stream.flush().await?;
    }
    Ok(())
}

async fn serve(listen: SocketAddr, mode: Mode) -> io::Result<()> {
    let mut listener = TcpListener::bind(listen)?;
    eprintln!(
        "echo_percore ({mode:?}) listening on {}",
        listener.local_addr()
    );
    loop {
        let (stream, _peer) = listener.accept().await?;
        // One task type per mode (not one future holding all three: it would be sized for
        // the largest, and every idle connection would hold that). A reset connection at the
        // end of a run is normal: nothing to report.
        match mode {
            Mode::Chunk => percore_engine::spawn(echo_chunk(stream)).detach(|_outcome| {}),
            Mode::Read => percore_engine::spawn(echo_read(stream)).detach(|_outcome| {}),
            Mode::Bufstream => percore_engine::spawn(echo_bufstream(stream)).detach(|_outcome| {}),
            Mode::Relay => percore_engine::spawn(echo_relay(stream)).detach(|_outcome| {}),
        }
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let mut builder = Runtime::builder().cpus([args.cpu]);
    if let Some(buffers) = args.receive_buffers {
        builder = builder.receive_buffers(buffers);
    }
    if args.busy_poll_us > 0 {
        builder = builder.busy_poll(std::time::Duration::from_micros(args.busy_poll_us));
    }
    let runtime = builder.build()?;
    let (listen, mode) = (args.listen, args.mode);
    for res in runtime
        .run(move |_core| serve(listen, mode))
        .map_err(|e| io::Error::other(e.to_string()))?
    {
        res?;
    }
    Ok(())
}
