//! diesel's tutorial TCP "holla" client: sends each argument as a line and prints the reply,
//! giving up on a reply after 5 seconds (diesel's `first(sleep=5, until_eol=True)`).
//!
//! `cargo run -p percore-net --example holla_tcp_client -- 127.0.0.1:4321 hello there`

use std::time::Duration;

use percore_engine::{first, time::sleep, First};
use percore_net::tcp::TcpStream;
use percore_net::BufStream;

struct HollaClient {
    conn: BufStream,
}

impl HollaClient {
    async fn holla(&mut self, message: &str) -> std::io::Result<String> {
        self.conn.write(format!("{message}\r\n").as_bytes()).await?;
        self.conn.flush().await?;
        let reply = Box::pin(self.conn.read_line(64 * 1024));
        Ok(match first(reply, sleep(Duration::from_secs(5))).await {
            First::A(line, _) => String::from_utf8_lossy(&line?.unwrap_or_default())
                .trim()
                .to_string(),
            First::B((), _) => "nothing :-(".to_string(),
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:4321".into())
        .parse()?;
    let messages: Vec<String> = args.collect();
    percore_engine::block_on(async move {
        let mut client = HollaClient {
            conn: BufStream::new(TcpStream::connect(addr).await?),
        };
        for message in &messages {
            println!("reply> {}", client.holla(message).await?);
        }
        Ok(())
    })
}
