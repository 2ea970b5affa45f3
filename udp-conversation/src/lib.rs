//! percore-udp-conversation: one UDP port, many peers, one task per peer that owns that peer's
//! context (the seed's UDPConnection / UDPClientConnection / ConnectedLoop, done safely).
//!
//! - [`ConversationService`]: serves a shared port, sharded per core (one `SO_REUSEPORT`
//!   socket per core; the kernel's 4-tuple hash keeps a peer on one core). A handler runs per
//!   peer with its [`Conversation`]: `recv()`, `send(bytes)`, `peer()`, `fork_child(..)`.
//!   New peers pass admission (tombstones, a per-core cap on live conversations, a per-core
//!   rate of new ones, a hook that sees the peer and its first datagram) before any state
//!   exists for them. Each conversation has a bounded inbox with an [`OverflowPolicy`]; the
//!   demultiplexer never waits. An idle timeout ends quiet conversations; a conversation's end
//!   (return, error, panic, idle, cancellation) always removes its entry, and failures go to
//!   the service's policy. Everything is counted: [`ConversationStats`].
//! - [`ClientConversation`]: the same conversation from the client side, on a connected
//!   socket (strangers cannot inject datagrams), with a request/response helper that retries
//!   on timeout.
//!
//! # Example
//!
//! A conversation that answers a peer's k-th datagram with `k:payload`:
//!
//! ```
//! use std::time::Duration;
//! use percore_net::udp::UdpSocket;
//! use percore_udp_conversation::{ClientConversation, Conversation, ConversationService};
//!
//! async fn numbered_echo(mut conv: Conversation) -> std::io::Result<()> {
//!     let mut k = 0u64;
//!     while let Some(payload) = conv.recv().await {
//!         k += 1;
//!         let mut reply = format!("{k}:").into_bytes();
//!         reply.extend_from_slice(&payload);
//!         conv.send(reply).await?;
//!     }
//!     Ok(())
//! }
//!
//! percore_engine::block_on(async {
//!     let socket = UdpSocket::bind_sharded("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let addr = socket.local_addr();
//!     let service = ConversationService::new()
//!         .max_conversations(1_000)
//!         .idle_timeout(Duration::from_secs(30));
//!     let server = percore_engine::spawn(async move { service.serve(socket, numbered_echo).await });
//!     let client = ClientConversation::connect(addr).unwrap();
//!     for (k, msg) in ["a", "b", "abc"].iter().enumerate() {
//!         let reply = client.request(msg.as_bytes(), Duration::from_secs(2), 3).await.unwrap();
//!         assert_eq!(reply, format!("{}:{msg}", k + 1).into_bytes());
//!     }
//!     drop(server);
//! });
//! ```
//!
//! # Threads and system calls
//!
//! None of its own: the service runs on the calling core; receives and sends are io_uring ops
//! through percore-net (the service: one multishot `recvmsg` into a provided buffer ring, and
//! `sendmsg`; the client: `recvmsg` and `send`); sockets are made with `socket`/`bind`/
//! `connect`/`setsockopt` (`SO_REUSEPORT`). Nothing here is `unsafe`.

#![forbid(unsafe_code)]

mod admission;
mod client;
mod conversation;
mod echo;
mod inbox;
mod panic;
mod receive;
mod service;
mod stats;

pub use admission::Admission;
pub use client::ClientConversation;
pub use conversation::{Conversation, ConversationSender, Failure};
pub use echo::{numbered_echo, numbered_reply};
pub use inbox::OverflowPolicy;
pub use service::ConversationService;
pub use stats::{ConversationStats, DropReason, DroppedStats, EndReason, EndedStats};
