//! [`ClientConversation`]: the client side, a conversation with one server on a connected socket.
//!
//! # Design
//!
//! The socket is connected to the peer, so the kernel drops datagrams from anyone else; a
//! datagram from another address that was queued before the connect is dropped here too (and
//! counted), so strangers cannot inject datagrams. [`ClientConversation::request`] is diesel's
//! `first(sleep=5, datagram=True)` client: send, wait for the reply or the timeout, whichever
//! comes first, and send again up to `retries` times.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use percore_engine::buf::IoBuf;
use percore_engine::scope::move_on_after;
use percore_net::udp::UdpSocket;

/// A conversation with one UDP peer from a connected socket.
pub struct ClientConversation {
    socket: UdpSocket,
    peer: SocketAddr,
    max_datagram: usize,
    /// The receive buffer, reused (a reply is copied out at its own length).
    buf: RefCell<Option<Vec<u8>>>,
    strangers: Cell<u64>,
    unmatched: Cell<u64>,
    stale: Cell<u64>,
}

impl fmt::Debug for ClientConversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConversation")
            .field("local", &self.socket.local_addr())
            .field("peer", &self.peer)
            .field("strangers_dropped", &self.strangers.get())
            .finish()
    }
}

impl ClientConversation {
    /// Binds an ephemeral port (on the unspecified address of `peer`'s family) and connects it
    /// to `peer`.
    ///
    /// # Errors
    ///
    /// The kernel's bind or connect error.
    pub fn connect(peer: SocketAddr) -> io::Result<ClientConversation> {
        let local: SocketAddr = if peer.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        ClientConversation::connect_from(local, peer)
    }

    /// Like [`ClientConversation::connect`] from the local address `local`.
    ///
    /// # Errors
    ///
    /// The kernel's bind or connect error.
    pub fn connect_from(local: SocketAddr, peer: SocketAddr) -> io::Result<ClientConversation> {
        let socket = UdpSocket::bind(local)?;
        socket.connect(peer)?;
        Ok(ClientConversation {
            socket,
            peer,
            max_datagram: 65_535,
            buf: RefCell::new(None),
            strangers: Cell::new(0),
            unmatched: Cell::new(0),
            stale: Cell::new(0),
        })
    }

    /// Sets the longest datagram [`ClientConversation::recv`] accepts (at least 1; default
    /// 65,535).
    pub fn with_max_datagram(mut self, n: usize) -> Self {
        self.max_datagram = n.max(1);
        self.buf = RefCell::new(None);
        self
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The bound local address (its IP is the unspecified address unless
    /// [`ClientConversation::connect_from`] named one; the port is the one in use).
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// Datagrams from other addresses dropped so far (queued before the connect).
    pub fn strangers_dropped(&self) -> u64 {
        self.strangers.get()
    }

    /// Replies [`ClientConversation::request_matching`] skipped as not matching.
    pub fn unmatched_dropped(&self) -> u64 {
        self.unmatched.get()
    }

    /// Datagrams from the peer that were waiting when a request began (late replies to an
    /// earlier request's attempts), dropped so that they are not taken for its reply.
    pub fn stale_dropped(&self) -> u64 {
        self.stale.get()
    }

    /// Drops every datagram already queued on the socket, without waiting: the peer's are
    /// counted as stale, others as strangers.
    fn drain_queued(&self) -> io::Result<()> {
        let socket = socket2::SockRef::from(self.socket.fd());
        // Each datagram is consumed whole whatever the buffer's size; only its sender matters.
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        loop {
            match socket.recv_from_with_flags(&mut byte, libc::MSG_DONTWAIT) {
                Ok((_, from)) if from.as_socket() == Some(self.peer) => {
                    self.stale.set(self.stale.get() + 1);
                }
                Ok(_) => self.strangers.set(self.strangers.get() + 1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // An ICMP error queued by an earlier send is this request's to see.
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `buf`'s bytes to the peer as one datagram.
    ///
    /// # Errors
    ///
    /// The kernel's error (`ConnectionRefused` when an earlier datagram drew an ICMP
    /// port-unreachable, ...).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the send; the datagram may have gone out anyway.
    pub async fn send<B: IoBuf>(&self, buf: B) -> io::Result<()> {
        let (sent, _) = self.socket.send(buf).await;
        sent.map(drop)
    }

    /// The peer's next datagram (zero-length datagrams are data: an empty `Vec`).
    ///
    /// # Errors
    ///
    /// `InvalidData` for a datagram longer than the maximum (it is consumed); the kernel's
    /// errors (`ConnectionRefused` after an ICMP port-unreachable, ...).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the receive; a datagram it had already received is lost
    /// (UDP may lose datagrams anyway).
    pub async fn recv(&self) -> io::Result<Vec<u8>> {
        loop {
            let mut buf = self
                .buf
                .take()
                .unwrap_or_else(|| Vec::with_capacity(self.max_datagram));
            buf.clear();
            let (meta, buf) = self.socket.recv(buf).await;
            let datagram = buf.clone();
            *self.buf.borrow_mut() = Some(buf);
            let meta = meta?;
            if meta.from != Some(self.peer) {
                self.strangers.set(self.strangers.get() + 1);
                continue;
            }
            if meta.truncated {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "datagram from {} longer than the maximum of {} bytes",
                        self.peer, self.max_datagram
                    ),
                ));
            }
            return Ok(datagram);
        }
    }

    /// Sends `request` and returns the first reply, waiting at most `timeout` per attempt and
    /// sending again up to `retries` times.
    ///
    /// Datagrams already waiting when the request begins are dropped first and counted
    /// ([`ClientConversation::stale_dropped`]): a late reply to an earlier request is never
    /// taken for this one's. Within the request, a reply to any of its attempts counts as the
    /// reply; if attempts must be told apart, carry an id and use
    /// [`ClientConversation::request_matching`].
    ///
    /// # Errors
    ///
    /// `TimedOut` when no reply came after `1 + retries` attempts; an error the socket had
    /// queued (`ConnectionRefused` after an ICMP port-unreachable); the errors of
    /// [`ClientConversation::send`] and [`ClientConversation::recv`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the request; a reply arriving later is left in the socket
    /// for the next `recv`.
    pub async fn request(
        &self,
        request: &[u8],
        timeout: Duration,
        retries: u32,
    ) -> io::Result<Vec<u8>> {
        self.request_matching(request, timeout, retries, |_| true)
            .await
    }

    /// Like [`ClientConversation::request`], keeping only a reply for which `is_reply` is true;
    /// other datagrams are dropped and counted ([`ClientConversation::unmatched_dropped`]).
    ///
    /// # Errors
    ///
    /// As [`ClientConversation::request`].
    ///
    /// # Cancel safety
    ///
    /// As [`ClientConversation::request`].
    pub async fn request_matching(
        &self,
        request: &[u8],
        timeout: Duration,
        retries: u32,
        is_reply: impl Fn(&[u8]) -> bool,
    ) -> io::Result<Vec<u8>> {
        self.drain_queued()?;
        for _attempt in 0..=retries {
            self.send(request.to_vec()).await?;
            let wait = async {
                loop {
                    let reply = self.recv().await?;
                    if is_reply(&reply) {
                        return Ok::<_, io::Error>(reply);
                    }
                    self.unmatched.set(self.unmatched.get() + 1);
                }
            };
            if let Some(reply) = move_on_after(timeout, wait).await {
                return reply;
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no reply from {} after {} attempts of {timeout:?}",
                self.peer,
                u64::from(retries) + 1
            ),
        ))
    }
}
