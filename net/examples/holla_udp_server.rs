//! diesel's tutorial UDP "holla" server: every datagram comes back upper-cased, on every core.
//!
//! `cargo run -p percore-net --example holla_udp_server -- 127.0.0.1:1234`. Ctrl-C stops it.

use percore_engine::{first, shutdown, First};
use percore_net::udp::UdpSocket;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1234".into())
        .parse()?;
    let runtime = percore_engine::Runtime::builder()
        .handle_signals(true)
        .build()?;
    let per_core = runtime.run(|_| async move {
        let socket = UdpSocket::bind_sharded(addr)?;
        loop {
            let datagram = Box::pin(socket.recv_from(Vec::with_capacity(65_536)));
            let (meta, message) = match first(shutdown::requested(), datagram).await {
                First::A((), _) => return Ok::<(), std::io::Error>(()),
                First::B(received, _) => received,
            };
            if let Some(from) = meta?.from {
                let (sent, _) = socket.send_to(message.to_ascii_uppercase(), from).await;
                sent?;
            }
        }
    })?;
    for result in per_core {
        result?;
    }
    Ok(())
}
