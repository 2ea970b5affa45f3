//! percore: a thread-per-core io_uring networking runtime for Linux.
//!
//! This is the facade: it re-exports the engine (executor, ops, time, scopes, sync, cross-core
//! channels, launcher) and, as they land, the networking, pool, protocol and load-generation
//! crates. The `percore` binary (`percore bench`, `serve`, `load`, `engine-bench`) is built
//! from it.
//!
//! # Example
//!
//! ```
//! #[percore::main]
//! async fn main() {
//!     let h = percore::spawn(async { 1 + 1 });
//!     assert_eq!(h.await.unwrap(), 2);
//! }
//! # main();
//! ```
//!
//! See `percore_engine` for the threads and system calls the runtime uses.

#![forbid(unsafe_code)]

pub use percore_engine::*;
pub use percore_macros::{main, test};

/// The networking crate: TCP, UDP and Unix sockets, buffered streams, services.
pub use percore_net as net;

/// The load generator behind `percore load` and `percore bench`.
pub use percore_loadtest as loadtest;

/// The core-local connection pool.
pub use percore_pool as pool;

/// UDP conversations: one task per peer on a shared port.
pub use percore_udp_conversation as udp_conversation;
