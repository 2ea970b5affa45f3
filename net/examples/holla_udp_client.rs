//! diesel's tutorial UDP "holla" client: sends each argument as a datagram and prints the
//! reply, or "nothing :-(" after 5 seconds (diesel's `first(sleep=5, datagram=True)`). The
//! socket is connected, so only the server's datagrams get in.
//!
//! `cargo run -p percore-net --example holla_udp_client -- 127.0.0.1:1234 hello there`

use std::time::Duration;

use percore_engine::{first, time::sleep, First};
use percore_net::udp::UdpSocket;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:1234".into())
        .parse()?;
    let messages: Vec<String> = args.collect();
    percore_engine::block_on(async move {
        let client = UdpSocket::bind("127.0.0.1:0".parse().expect("literal address"))?;
        client.connect(server)?;
        for message in &messages {
            let (sent, _) = client.send(format!("{message}\r\n").into_bytes()).await;
            sent?;
            let reply = Box::pin(client.recv(Vec::with_capacity(65_536)));
            let text = match first(reply, sleep(Duration::from_secs(5))).await {
                First::A((meta, data), _) => {
                    meta?;
                    String::from_utf8_lossy(&data).trim().to_string()
                }
                First::B((), _) => "nothing :-(".to_string(),
            };
            println!("reply> {text}");
        }
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}
