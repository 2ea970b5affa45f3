//! UDP sockets on the current core.
//!
//! [`UdpSocket::bind`] makes a plain socket; [`UdpSocket::bind_sharded`] sets `SO_REUSEPORT`
//! so every core can bind the same address and the kernel's 4-tuple hash keeps each peer on one
//! core. Datagrams go out and come in through io_uring ops with owned buffers; a datagram
//! longer than the buffer is cut and reported as truncated, never silently. A connected socket
//! ([`UdpSocket::connect`]) only receives from its peer: the kernel drops strangers' datagrams.
//!
//! Servers receive with [`UdpSocket::datagrams`]: one multishot `recvmsg` armed on a provided
//! buffer ring (see [`datagram_ring`]), each datagram lent out in a ring buffer with its sender
//! and a truncation flag; a socket waiting for datagrams pins no buffer.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use percore_engine::buf::ring::BufRing;
use percore_engine::buf::{IoBuf, IoBufMut};
use percore_engine::fd::SharedFd;
use percore_engine::ops::{self, RecvMeta, RecvMsgStream, RECVMSG_OVERHEAD};

pub use percore_engine::ops::Datagram;
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use crate::stream::{ENOBUFS, RING_DRY_BACKOFF};

/// A UDP socket; `!Send`, it lives on the core that made it.
pub struct UdpSocket {
    fd: SharedFd,
    local: SocketAddr,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local", &self.local)
            .finish()
    }
}

impl UdpSocket {
    /// Binds `addr` (port 0 picks a free port).
    ///
    /// An IPv6 address gets `IPV6_V6ONLY`, whatever the system default
    /// (`net.ipv6.bindv6only`): a socket on `[::]` receives IPv6 datagrams only, never
    /// IPv4-mapped ones, and cannot send to IPv4 addresses. To serve both families bind an
    /// IPv4 and an IPv6 socket.
    ///
    /// # Errors
    ///
    /// The kernel's error (`AddrInUse`, ...).
    pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        UdpSocket::bind_with(addr, false)
    }

    /// Binds `addr` with `SO_REUSEPORT`, so each core can bind its own socket on the same port.
    /// On a percore core the socket also takes a slot in the core's registered file table
    /// ([`SharedFd::register`]): a server socket sends every reply of its core. IPv6
    /// addresses get `IPV6_V6ONLY`, as with [`UdpSocket::bind`].
    ///
    /// # Errors
    ///
    /// As [`UdpSocket::bind`].
    pub fn bind_sharded(addr: SocketAddr) -> io::Result<UdpSocket> {
        let socket = UdpSocket::bind_with(addr, true)?;
        // A core's server socket carries every datagram the core sends: its sends name it by
        // a registered-file slot (no fd lookup per send). Off a core it simply has none.
        socket.fd.register();
        Ok(socket)
    }

    fn bind_with(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            // One family per socket, as documented on `bind`: the same on every host.
            socket.set_only_v6(true)?;
        }
        socket.bind(&SockAddr::from(addr))?;
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("socket has no IP address"))?;
        Ok(UdpSocket {
            fd: SharedFd::new(OwnedFd::from(socket)),
            local,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connects to `peer`: [`UdpSocket::send`] goes there, and only its datagrams arrive.
    ///
    /// # Errors
    ///
    /// The kernel's error.
    pub fn connect(&self, peer: SocketAddr) -> io::Result<()> {
        SockRef::from(&self.fd).connect(&SockAddr::from(peer))
    }

    /// The connected peer.
    ///
    /// # Errors
    ///
    /// `NotConnected` before [`UdpSocket::connect`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        SockRef::from(&self.fd)
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("peer is not an IP address"))
    }

    /// Sends `buf`'s initialised bytes as one datagram to `to`.
    ///
    /// # Errors
    ///
    /// The kernel's error (`EMSGSIZE` for a datagram too large, ...).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the send; the datagram may have gone out anyway.
    pub async fn send_to<B: IoBuf>(&self, buf: B, to: SocketAddr) -> (io::Result<usize>, B) {
        ops::send_to(&self.fd, buf, to).await
    }

    /// Receives one datagram into `buf`'s spare capacity, with its sender and whether it was
    /// cut to fit ([`RecvMeta::truncated`]).
    ///
    /// # Errors
    ///
    /// The kernel's error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the receive; a datagram it had already received is lost
    /// (UDP may lose datagrams anyway).
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> (io::Result<RecvMeta>, B) {
        ops::recv_from(&self.fd, buf).await
    }

    /// Sends one datagram to the connected peer.
    ///
    /// # Errors
    ///
    /// `NotConnected` before [`UdpSocket::connect`]; the kernel's errors (`ConnectionRefused`
    /// when an earlier datagram drew an ICMP port-unreachable).
    ///
    /// # Cancel safety
    ///
    /// As [`UdpSocket::send_to`].
    pub async fn send<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        ops::send(&self.fd, buf, 0).await
    }

    /// Receives one datagram from the connected peer (or any sender if unconnected); the
    /// count and whether it was cut are in the [`RecvMeta`].
    ///
    /// # Errors
    ///
    /// The kernel's errors.
    ///
    /// # Cancel safety
    ///
    /// As [`UdpSocket::recv_from`].
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> (io::Result<RecvMeta>, B) {
        ops::recv_from(&self.fd, buf).await
    }

    /// The shared fd (for ops this type does not wrap).
    pub fn fd(&self) -> &SharedFd {
        &self.fd
    }

    /// A stream of the datagrams arriving on this socket, received by a multishot `recvmsg`
    /// into `ring`'s buffers (make one with [`datagram_ring`]). The stream holds its own
    /// reference to the socket, so the socket can send while the stream receives. Use one
    /// stream per socket, and no [`UdpSocket::recv_from`] beside it (each would see part of
    /// the datagrams).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the ring's buffers are too small for the `recvmsg` header.
    pub fn datagrams(&self, ring: &BufRing) -> io::Result<Datagrams> {
        if ring.buf_size() as usize <= RECVMSG_OVERHEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("datagram ring buffers must be larger than {RECVMSG_OVERHEAD} bytes"),
            ));
        }
        Ok(Datagrams {
            fd: self.fd.clone(),
            ring: ring.clone(),
            stream: None,
            ring_dry: 0,
        })
    }
}

/// A provided buffer ring for [`UdpSocket::datagrams`]: `buffers` buffers, each with room for a
/// datagram of `max_datagram` bytes after the kernel's `recvmsg` header and sender address.
/// Longer datagrams arrive cut, flagged [`Datagram::truncated`].
///
/// # Errors
///
/// `InvalidInput` for zero buffers or a size past 4 GiB (header included); fails off a
/// percore core.
pub fn datagram_ring(max_datagram: usize, buffers: u16) -> io::Result<BufRing> {
    // Checked: in a release build `usize::MAX + overhead` would wrap to a tiny size.
    let size = max_datagram
        .checked_add(RECVMSG_OVERHEAD)
        .and_then(|size| u32::try_from(size).ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "datagram size {max_datagram} too large: at most {} bytes",
                    u32::MAX as usize - RECVMSG_OVERHEAD
                ),
            )
        })?;
    BufRing::new(buffers, size)
}

/// The datagrams arriving on a socket; see [`UdpSocket::datagrams`].
pub struct Datagrams {
    fd: SharedFd,
    ring: BufRing,
    stream: Option<RecvMsgStream>,
    ring_dry: u64,
}

impl fmt::Debug for Datagrams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datagrams")
            .field("ring", &self.ring)
            .field("armed", &self.stream.is_some())
            .field("ring_dry", &self.ring_dry)
            .finish()
    }
}

impl Datagrams {
    /// The next datagram: its payload lent by the ring (drop it soon to give the buffer
    /// back), its sender, and whether it was cut to fit. The receive is re-armed whenever the
    /// kernel ends it (after a zero-length datagram, say). When the ring ran dry (the kernel
    /// had no buffer for a datagram; it stays in the socket), the receive is re-armed at once
    /// if buffers came back meanwhile, and only when every ring buffer is still lent out does
    /// it wait for some to come back. Either way the datagrams keep their order.
    ///
    /// # Errors
    ///
    /// The kernel's error (the socket was closed, ...); the next call re-arms.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a datagram leaves the stream only when returned; those that arrive while
    /// nobody awaits wait in the stream (in ring buffers) or in the socket.
    pub async fn next(&mut self) -> io::Result<Datagram> {
        loop {
            let stream = match &mut self.stream {
                Some(s) => s,
                None => self
                    .stream
                    .insert(ops::recvmsg_multishot(&self.fd, &self.ring)?),
            };
            match stream.next().await {
                Ok(Some(datagram)) => return Ok(datagram),
                // The kernel ended the multishot: re-arm.
                Ok(None) => self.stream = None,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    self.stream = None;
                    self.ring_dry += 1;
                    // Every datagram completed before this has been taken: a taker that gave
                    // its buffers back (it copied the payloads) gets the receive re-armed now.
                    if self.ring.lent() >= usize::from(self.ring.entries()) {
                        percore_engine::time::sleep(RING_DRY_BACKOFF).await;
                    }
                }
                Err(e) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
    }

    /// The ring the datagrams are lent from.
    pub fn ring(&self) -> &BufRing {
        &self.ring
    }

    /// Times the ring ran dry so far: the kernel had no buffer for a datagram and ended the
    /// receive, which was then re-armed (after a back-off when no buffer had come back).
    pub fn ring_dry(&self) -> u64 {
        self.ring_dry
    }
}
