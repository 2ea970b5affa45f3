//! diesel's tutorial TCP "holla" server: every line comes back upper-cased, on every core.
//!
//! `cargo run -p percore-net --example holla_tcp_server -- 127.0.0.1:4321`, then
//! `telnet 127.0.0.1 4321` (or the holla_tcp_client example). Ctrl-C stops it.

use percore_net::service::TcpService;
use percore_net::tcp::TcpListener;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4321".into())
        .parse()?;
    let runtime = percore_engine::Runtime::builder()
        .handle_signals(true)
        .build()?;
    let per_core = runtime.run(|_| async move {
        let service = TcpService::new();
        service
            .serve(TcpListener::bind(addr)?, |mut conn, _peer| async move {
                while let Some(message) = conn.read_line(64 * 1024).await? {
                    conn.write(&message.to_ascii_uppercase()).await?;
                    // Sent behind: its result is read with the next line (or the end).
                    conn.start_flush().await?;
                }
                Ok(())
            })
            .await
    })?;
    for stats in per_core {
        println!("{:?}", stats?);
    }
    Ok(())
}
