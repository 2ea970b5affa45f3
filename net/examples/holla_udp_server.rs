//! diesel's tutorial UDP "holla" server: every datagram comes back upper-cased, on every core.
//!
//! `cargo run -p percore-net --example holla_udp_server -- 127.0.0.1:1234`. Ctrl-C stops it.

use percore_net::service::UdpService;
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
        UdpService::new()
            .serve(socket, |socket, datagram| async move {
                if let Some(from) = datagram.source {
                    let reply = datagram.payload.to_ascii_uppercase();
                    socket.send_to(reply, from).await.0?;
                }
                Ok(())
            })
            .await
    })?;
    for result in per_core {
        result?;
    }
    Ok(())
}
