//! UDP sockets on the current core.
//!
//! [`UdpSocket::bind`] makes a plain socket; [`UdpSocket::bind_sharded`] sets `SO_REUSEPORT`
//! so every core can bind the same address and the kernel's 4-tuple hash keeps each peer on one
//! core. Datagrams go out and come in through io_uring ops with owned buffers; a datagram
//! longer than the buffer is cut and reported as truncated, never silently. A connected socket
//! ([`UdpSocket::connect`]) only receives from its peer: the kernel drops strangers' datagrams.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use percore_engine::buf::{IoBuf, IoBufMut};
use percore_engine::fd::SharedFd;
use percore_engine::ops::{self, RecvMeta};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

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
    /// # Errors
    ///
    /// The kernel's error (`AddrInUse`, ...).
    pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        UdpSocket::bind_with(addr, false)
    }

    /// Binds `addr` with `SO_REUSEPORT`, so each core can bind its own socket on the same port.
    ///
    /// # Errors
    ///
    /// As [`UdpSocket::bind`].
    pub fn bind_sharded(addr: SocketAddr) -> io::Result<UdpSocket> {
        UdpSocket::bind_with(addr, true)
    }

    fn bind_with(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
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
}
