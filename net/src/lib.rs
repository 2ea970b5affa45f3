//! percore-net: TCP on percore's per-core io_uring engine.
//!
//! - [`tcp::TcpListener`]: one `SO_REUSEPORT` socket per core on a shared port (the kernel
//!   spreads connections across cores), accepting through a multishot accept; running out of
//!   fds backs off instead of spinning.
//! - [`tcp::TcpStream`]: connect (with a timeout), owned-buffer reads and writes, half-close,
//!   socket options, and a receive path on multishot receive into the core's provided buffer
//!   ring, so an idle connection pins no buffer.
//! - Relays ([`tcp::TcpStream::relay_to`], [`tcp::TcpStream::relay_back`], [`relay_both`]):
//!   every byte a stream receives sent on another socket (a proxy's direction) or back (an
//!   echo) by the core's driver, from the ring buffer it arrived in, with no task wake-up per
//!   chunk.
//! - [`unix::UnixStream`] and [`unix::UnixListener`]: Unix domain stream sockets with the
//!   same stream API.
//! - [`tcp::Handoff`]: the other way to spread connections: one listener, each connection
//!   passed to the least-loaded core.
//! - [`udp::UdpSocket`]: datagrams with owned buffers, truncation reported, sharded binding,
//!   connected mode; for servers a multishot `recvmsg` into a buffer ring
//!   ([`udp::UdpSocket::datagrams`]).
//! - [`service::TcpService`]: a handler per connection in a scope, a per-core connection cap,
//!   idle timeouts, errors counted and reported, drained on graceful shutdown; sharded or
//!   hand-off accepting. [`service::UdpService`]: the same per datagram.
//! - [`BufStream`]: line, delimiter, exact and "some" reads, each with a required maximum
//!   length; bytes already received are never lost when a read future is dropped; writes
//!   buffered up to a bound with back-pressure; replies sent behind the handler's back
//!   ([`BufStream::start_flush`]: one wake-up per request/response exchange, not two).
//!
//! # Example
//!
//! ```
//! use percore_net::tcp::{TcpListener, TcpStream};
//! use percore_net::BufStream;
//!
//! percore_engine::block_on(async {
//!     let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let addr = listener.local_addr();
//!     let server = percore_engine::spawn(async move {
//!         let (conn, _) = listener.accept().await.unwrap();
//!         let mut conn = BufStream::new(conn);
//!         let line = conn.read_line(1024).await.unwrap().unwrap();
//!         conn.write(&line.to_ascii_uppercase()).await.unwrap();
//!         conn.flush().await.unwrap();
//!     });
//!     let mut client = BufStream::new(TcpStream::connect(addr).await.unwrap());
//!     client.write(b"holla\n").await.unwrap();
//!     client.flush().await.unwrap();
//!     assert_eq!(client.read_line(1024).await.unwrap().unwrap(), b"HOLLA\n");
//!     server.await.unwrap();
//! });
//! ```
//!
//! # Threads and system calls
//!
//! None of its own: every operation is an io_uring op on the calling core (socket creation and
//! socket options are plain `socket`/`setsockopt` calls through `socket2`). A Unix connect to
//! a listener whose backlog is full waits in one of the kernel's io_uring worker threads,
//! never on the core's own.

#![forbid(unsafe_code)]

mod buffered;
pub mod log;
mod relay;
pub mod service;
mod stream;
pub mod tcp;
pub mod udp;
pub mod unix;

pub use buffered::{BufStream, DEFAULT_WRITE_BUFFER};
pub use relay::{relay_both, RelayBoth, Relayable, Relaying};
pub use stream::ByteStream;
