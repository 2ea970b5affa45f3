//! The demultiplexer's receive path, behind one small seam.
//!
//! [`DatagramSource::next`] yields one datagram at a time: its payload, its sender, and whether
//! it was longer than the service's maximum. Inside is one multishot `recvmsg` on a provided
//! buffer ring ([`UdpSocket::datagrams`]): one submission receives datagram after datagram,
//! each completed in the socket's queue order, so arrival order holds; when the kernel ends
//! the multishot (after a zero-length datagram, or when the ring ran dry) the stream re-arms
//! it, and the datagrams that came meanwhile wait in the socket, in order.
//!
//! # Who holds the ring's buffers
//!
//! Only the demultiplexer, for one datagram at a time: it copies the payload into the
//! conversation's inbox and drops the [`Received`], which gives the buffer back before the
//! next receive. Inboxes never hold ring buffers, so an idle (or slow) conversation pins none,
//! the ring's size does not grow with conversations x inbox capacity, and when the ring runs
//! dry (more datagrams arrived between two turns of the demultiplexer than it has buffers)
//! every buffer is already back and the receive is re-armed at once, without a back-off: the
//! demultiplexer never waits for a handler. The copy is one allocation and one `memcpy` of the
//! payload, which the inbox's `Vec` needed before too.

use std::io;
use std::net::SocketAddr;

use percore_engine::buf::ring::RingBuf;
use percore_net::udp::{datagram_ring, Datagrams, UdpSocket};

/// One received datagram; it holds its ring buffer until dropped.
#[derive(Debug)]
pub(crate) struct Received {
    /// The payload, cut when `truncated`.
    pub(crate) payload: RingBuf,
    pub(crate) from: Option<SocketAddr>,
    /// Longer than the maximum datagram (the payload was cut).
    pub(crate) truncated: bool,
}

/// Datagrams from one socket.
#[derive(Debug)]
pub(crate) struct DatagramSource {
    datagrams: Datagrams,
}

impl DatagramSource {
    /// Receives on `socket` into a ring of `buffers` buffers, each with room for a datagram of
    /// `max_datagram` bytes (longer ones arrive cut and flagged).
    ///
    /// # Errors
    ///
    /// Making or registering the ring (off a percore core, or a kernel without buffer rings).
    pub(crate) fn new(
        socket: &UdpSocket,
        max_datagram: usize,
        buffers: u16,
    ) -> io::Result<DatagramSource> {
        let ring = datagram_ring(max_datagram.max(1), buffers.max(1))?;
        Ok(DatagramSource {
            datagrams: socket.datagrams(&ring)?,
        })
    }

    /// The next datagram.
    ///
    /// # Errors
    ///
    /// The kernel's receive error (the next call re-arms the receive).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a datagram leaves the source only when returned; those that arrive while
    /// nobody awaits wait in the ring or in the socket, in order.
    pub(crate) async fn next(&mut self) -> io::Result<Received> {
        let d = self.datagrams.next().await?;
        Ok(Received {
            payload: d.payload,
            from: d.source,
            truncated: d.truncated,
        })
    }

    /// Times the ring ran dry so far (each time the receive was re-armed).
    pub(crate) fn ring_dry(&self) -> u64 {
        self.datagrams.ring_dry()
    }
}
