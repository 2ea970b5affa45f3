//! The demultiplexer's receive path, behind one small seam.
//!
//! [`DatagramSource::next`] yields one datagram at a time as a borrowed slice, its sender, and
//! whether it was cut to the maximum size. Today it is a plain `recvmsg` op into one owned
//! buffer that is reused for every datagram (the demultiplexer copies out only what it
//! delivers). A multishot `recvmsg` into a provided buffer ring can replace the inside without
//! touching the demultiplexer.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use percore_net::udp::UdpSocket;

/// One received datagram, valid until the next receive.
#[derive(Debug)]
pub(crate) struct Received<'a> {
    pub(crate) payload: &'a [u8],
    pub(crate) from: Option<SocketAddr>,
    pub(crate) truncated: bool,
}

/// Datagrams from one socket.
#[derive(Debug)]
pub(crate) struct DatagramSource {
    socket: Rc<UdpSocket>,
    buf: Option<Vec<u8>>,
    max_datagram: usize,
}

impl DatagramSource {
    pub(crate) fn new(socket: Rc<UdpSocket>, max_datagram: usize) -> DatagramSource {
        DatagramSource {
            socket,
            buf: None,
            max_datagram: max_datagram.max(1),
        }
    }

    /// The next datagram.
    ///
    /// # Errors
    ///
    /// The kernel's receive error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the receive; a datagram it had already received is lost
    /// (the buffer goes with the op, and the next call makes a new one).
    pub(crate) async fn next(&mut self) -> io::Result<Received<'_>> {
        let mut buf = self
            .buf
            .take()
            .unwrap_or_else(|| Vec::with_capacity(self.max_datagram));
        buf.clear();
        let (meta, buf) = self.socket.recv_from(buf).await;
        let buf = self.buf.insert(buf);
        let meta = meta?;
        Ok(Received {
            payload: &buf[..meta.len.min(buf.len())],
            from: meta.from,
            truncated: meta.truncated,
        })
    }
}
