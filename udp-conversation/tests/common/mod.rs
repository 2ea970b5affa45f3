//! Helpers shared by the conversation tests: a served port, a numbered echo handler, bounded
//! waits for events.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use percore_engine::time::{sleep, Instant};
use percore_engine::JoinHandle;
use percore_net::udp::UdpSocket;
use percore_udp_conversation::{Conversation, ConversationService, ConversationStats};

/// A service running as a task on the current core; dropping it cancels the service.
pub struct Server {
    pub service: Rc<ConversationService>,
    pub addr: SocketAddr,
    pub task: JoinHandle<io::Result<ConversationStats>>,
}

impl Server {
    pub fn stats(&self) -> ConversationStats {
        self.service.stats()
    }
}

/// Serves a fresh port of 127.0.0.1 with `service` and `handler`.
pub fn serve<H, Fut, E>(service: ConversationService, handler: H) -> Server
where
    H: Fn(Conversation) -> Fut + 'static,
    Fut: Future<Output = Result<(), E>> + 'static,
    E: std::fmt::Display + 'static,
{
    let socket = UdpSocket::bind_sharded("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr();
    let service = Rc::new(service);
    let s = service.clone();
    let task = percore_engine::spawn(async move { s.serve(socket, handler).await });
    Server {
        service,
        addr,
        task,
    }
}

pub use percore_udp_conversation::numbered_echo;

/// `k:payload`.
pub fn numbered(k: u64, payload: &[u8]) -> Vec<u8> {
    percore_udp_conversation::numbered_reply(k, payload)
}

/// A client socket on 127.0.0.1.
pub fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// The next datagram on `socket` within `within`, with its sender.
pub async fn recv_within(socket: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let recv = socket.recv_from(Vec::with_capacity(65_536));
    let (meta, buf) = percore_engine::scope::move_on_after(within, recv).await?;
    let meta = meta.unwrap();
    Some((buf, meta.from.unwrap()))
}

/// Sends `payload` to `to` and returns the reply (panics after 5 s without one).
pub async fn ask(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (sent, _) = socket.send_to(payload.to_vec(), to).await;
    sent.unwrap();
    let (reply, from) = recv_within(socket, Duration::from_secs(5))
        .await
        .expect("a reply within 5 s");
    assert_eq!(from, to);
    reply
}

/// Waits (at most 10 s, then panics) until `done()`; checks every millisecond.
pub async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting until {what}");
        sleep(Duration::from_millis(1)).await;
    }
}
