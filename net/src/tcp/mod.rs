//! TCP: sharded listeners and streams.
//!
//! # Design
//!
//! A listener belongs to one core. To serve a port on every core, each core binds its own
//! [`TcpListener`] to the same address: the sockets have `SO_REUSEPORT`, and the kernel hashes
//! each new connection to one of them. Connections stay on the core that accepted them.
//!
//! A stream owns its fd ([`SharedFd`](percore_engine::fd::SharedFd): ops in flight hold
//! clones, so the fd cannot be closed and reused under them). Receiving has two forms:
//! [`TcpStream::read`] into a caller's buffer (one op per call), and
//! [`TcpStream::recv_chunk`], which keeps a multishot receive armed on the core's shared
//! buffer ring and lends out the kernel-filled buffers: no buffer is tied to a connection
//! while it is idle, and a chunk is only taken from the stream when returned (cancel-safe).
//! A stream whose chunks are not taken holds only a few buffers: past a limit its receive is
//! cancelled (what it received stays queued) and re-armed once the queue is taken.
//! Use one form or the other on a stream, not both (each would see part of the bytes).
//!
//! When the kernel's hash spreads connections badly, [`Handoff`] offers the other way: one
//! listener on one core, each accepted connection passed to the least-loaded core.

mod handoff;
pub(crate) mod listener;
mod stream;

pub use handoff::{Handoff, Inbox, INBOX_CAPACITY};
pub use listener::{AcceptStats, TcpListener, DEFAULT_BACKLOG};
pub use stream::{TcpStream, DEFAULT_SEND_ZC_THRESHOLD};
