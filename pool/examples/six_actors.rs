//! diesel's "6 actors share 3 connections": a holla server (every line back upper-cased) runs
//! in this process on a free port, and six actors take turns on a pool of three connections.
//!
//! `cargo run -p percore-pool --example six_actors`

use std::io;
use std::time::Duration;

use percore_engine::time::sleep;
use percore_net::service::TcpService;
use percore_net::tcp::{TcpListener, TcpStream};
use percore_net::BufStream;
use percore_pool::Pool;

const ACTORS: usize = 6;
const CONNECTIONS: usize = 3;
const ROUNDS: usize = 3;
const MAX_LINE: usize = 1024;

fn main() -> io::Result<()> {
    percore_engine::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().expect("an address"))?;
        let addr = listener.local_addr();
        println!("holla server on {addr}");
        let _server = percore_engine::spawn(async move {
            TcpService::new()
                .serve(listener, |mut conn, _peer| async move {
                    while let Some(line) = conn.read_line(MAX_LINE).await? {
                        conn.write(&line.to_ascii_uppercase()).await?;
                        conn.flush().await?;
                    }
                    Ok(())
                })
                .await
        });

        let pool = Pool::builder(CONNECTIONS)
            .checkout_timeout(Duration::from_secs(5))
            .build(move || async move { Ok(BufStream::new(TcpStream::connect(addr).await?)) });
        let actors: Vec<_> = (0..ACTORS)
            .map(|actor| {
                let pool = pool.clone();
                percore_engine::spawn(async move { act(actor, &pool).await })
            })
            .collect();
        for actor in actors {
            actor.await.expect("actor task")?;
        }
        println!("{:?}", pool.stats());
        pool.close();
        Ok(())
    })
}

/// One actor: a few rounds of "check out, say something, hold the connection a moment".
async fn act(actor: usize, pool: &Pool<BufStream>) -> io::Result<()> {
    for round in 0..ROUNDS {
        let waiting = pool.stats().waiting;
        let reply = pool
            .with(async |conn: &mut BufStream| {
                let local = conn.get_ref().local_addr()?.port();
                conn.write(format!("holla from actor {actor}, round {round}\n").as_bytes())
                    .await?;
                conn.flush().await?;
                let reply = conn
                    .read_line(MAX_LINE)
                    .await?
                    .ok_or(io::ErrorKind::UnexpectedEof)?;
                sleep(Duration::from_millis(10)).await; // hold it, so others wait
                Ok::<_, io::Error>((local, reply))
            })
            .await?;
        let (port, line) = reply;
        println!(
            "actor {actor} (round {round}, {waiting} were waiting) on connection :{port} got {:?}",
            String::from_utf8_lossy(line.trim_ascii_end())
        );
    }
    Ok(())
}
