//! percore-pool: a core-local, bounded connection pool (diesel's `ConnectionPool`).
//!
//! A [`Pool`] lives on one core (it is `!Send`; clones share it through an `Rc`) and hands out
//! connections made by an async factory:
//!
//! - a required hard maximum of connections (in use, idle and being created), and `max_idle`
//!   (diesel's `pool_size`), the number kept resting;
//! - checkout with a timeout; waiters are served first come, first served, and a waiter that
//!   gives up never takes a connection with it;
//! - a guard, [`PooledConn`]: [`PooledConn::release`] returns the connection after a complete
//!   exchange; a guard dropped after use through `&mut` without `release` (its holder failed,
//!   timed out, was cancelled or panicked mid-exchange) discards it, as does one marked
//!   broken; one never used mutably goes back on drop. [`Pool::with`] releases when its
//!   closure returns `Ok` and discards otherwise;
//! - an optional health check on checkout, idle expiry and a maximum lifetime;
//! - [`Pool::close`]: waiters, and checkouts creating or health-checking a connection, fail
//!   with [`PoolError::Closed`]; idle connections close now, the ones in use when they come
//!   back;
//! - [`PoolStats`]: in use, idle, pending, waiting, and counters of checkouts, creations,
//!   discards (and why), factory failures, health-check failures and timeouts.
//!
//! # Example
//!
//! ```
//! use percore_net::tcp::{TcpListener, TcpStream};
//! use percore_net::BufStream;
//! use percore_pool::Pool;
//!
//! percore_engine::block_on(async {
//!     // A holla server: every line back upper-cased.
//!     let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let addr = listener.local_addr();
//!     let _server = percore_engine::spawn(async move {
//!         let mut conns = Vec::new();
//!         while let Ok((conn, _)) = listener.accept().await {
//!             conns.push(percore_engine::spawn(async move {
//!                 let mut conn = BufStream::new(conn);
//!                 while let Ok(Some(line)) = conn.read_line(1024).await {
//!                     conn.write(&line.to_ascii_uppercase()).await.unwrap();
//!                     conn.flush().await.unwrap();
//!                 }
//!             }));
//!         }
//!     });
//!
//!     let pool = Pool::builder(4).build(move || async move {
//!         Ok(BufStream::new(TcpStream::connect(addr).await?))
//!     });
//!     // `with` discards the connection if the closure fails, panics or is cancelled.
//!     let reply = pool
//!         .with(async |conn: &mut BufStream| -> std::io::Result<Vec<u8>> {
//!             conn.write(b"holla\n").await?;
//!             conn.flush().await?;
//!             // EOF: the server hung up; an `Err` discards the dead connection.
//!             Ok(conn.read_line(1024).await?.ok_or(std::io::ErrorKind::UnexpectedEof)?)
//!         })
//!         .await
//!         .unwrap();
//!     assert_eq!(reply, b"HOLLA\n");
//!     assert_eq!(pool.stats().idle, 1);
//! });
//! ```
//!
//! # Threads and system calls
//!
//! None of its own. It reads the clock only when a timeout or expiry is configured and a
//! checkout has to wait or a connection comes back; a checkout that waits arms one timer on
//! the core's wheel. Connections are opened and closed by the factory and by dropping them.

#![forbid(unsafe_code)]

mod builder;
mod checkout;
mod conn;
mod error;
mod inner;
mod pool;
mod stats;

pub use builder::Builder;
pub use conn::PooledConn;
pub use error::PoolError;
pub use pool::Pool;
pub use stats::PoolStats;
