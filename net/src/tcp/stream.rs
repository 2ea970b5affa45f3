//! A TCP connection on the current core.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use percore_engine::buf::ring::RingBuf;
use percore_engine::buf::{IoBuf, IoBufMut};
use percore_engine::fd::SharedFd;
use percore_engine::ops;
use socket2::{Domain, SockRef, Socket, Type};

use crate::stream::{ByteStream, StreamCore};

/// How long [`TcpStream::linger`] waits for bytes between two looks at the send queue.
const LINGER_LOOK: Duration = Duration::from_millis(10);

/// Writes of at least this many bytes go through zero-copy `SEND_ZC` unless a stream is told
/// otherwise ([`TcpStream::set_send_zc_threshold`]); `None`: never. Measured on loopback
/// here, see BENCHMARKS.md "SEND_ZC threshold".
pub const DEFAULT_SEND_ZC_THRESHOLD: Option<usize> = None;

/// A TCP connection. `!Send`: it lives on the core that made it (hand it to another core as an
/// fd with [`TcpStream::into_owned_fd`] and [`TcpStream::from_owned_fd`]).
pub struct TcpStream {
    core: StreamCore,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("fd", self.core.fd())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

impl TcpStream {
    /// Connects to `addr` (IPv4 or IPv6). `TCP_NODELAY` is on.
    ///
    /// # Errors
    ///
    /// The kernel's error (`ConnectionRefused`, ...), or running off a percore core.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the connect and closes the socket.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        let fd = SharedFd::new(OwnedFd::from(socket));
        ops::connect(&fd, addr).await?;
        let stream = TcpStream::from_shared(fd);
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Connects to `addr`, giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// `TimedOut` when the deadline passed, otherwise as [`TcpStream::connect`]. A timeout
    /// too long for the clock (`Duration::MAX`) is no deadline: the connect waits as long as
    /// the kernel lets it.
    ///
    /// # Cancel safety
    ///
    /// As [`TcpStream::connect`].
    pub async fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        // Checked: `Instant + Duration` panics past the clock's range.
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return TcpStream::connect(addr).await;
        };
        match percore_engine::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(result) => result,
            Err(elapsed) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out after {timeout:?} ({elapsed})"),
            )),
        }
    }

    fn from_shared(fd: SharedFd) -> TcpStream {
        TcpStream {
            core: StreamCore::new(fd, DEFAULT_SEND_ZC_THRESHOLD),
        }
    }

    /// Wraps a connected socket (from another core, or from std). `TCP_NODELAY` is set.
    ///
    /// # Errors
    ///
    /// Fails if the fd is not a socket.
    pub fn from_owned_fd(fd: OwnedFd) -> io::Result<TcpStream> {
        let stream = TcpStream::from_shared(SharedFd::new(fd));
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Wraps a std stream.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::from_owned_fd`].
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        TcpStream::from_owned_fd(OwnedFd::from(stream))
    }

    /// Gives the fd back, for hand-off to another core or to std.
    ///
    /// # Errors
    ///
    /// Gives the stream back, unchanged, while an op holds the fd: a receive armed by
    /// [`TcpStream::recv_chunk`] (it may hold bytes nobody read: use
    /// [`TcpStream::into_owned_fd_with_received`]), or a dropped op whose cancel has not landed
    /// yet (try again after a loop turn).
    pub fn into_owned_fd(self) -> Result<OwnedFd, TcpStream> {
        self.core.into_fd().map_err(|core| TcpStream { core })
    }

    /// Gives the fd back with the bytes the stream had received but nobody had read: an armed
    /// receive is stopped and drained first, so nothing is lost on the way to another core or
    /// to std. Waits until no op holds the fd.
    ///
    /// # Errors
    ///
    /// A receive error that came before the receive stopped.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped before it returns, the stream is closed and what it had
    /// received is lost.
    pub async fn into_owned_fd_with_received(self) -> io::Result<(OwnedFd, Vec<u8>)> {
        self.core.into_fd_with_received().await
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// `NotConnected` after the peer went away.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock()
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("peer is not an IP address"))
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// The kernel's error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock()
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("local address is not an IP address"))
    }

    /// Sets `TCP_NODELAY` (on by default).
    ///
    /// # Errors
    ///
    /// The kernel's error.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.sock().set_tcp_nodelay(on)
    }

    /// Sends of at least `threshold` bytes ([`TcpStream::write`], [`TcpStream::write_all`])
    /// go through zero-copy `SEND_ZC` (the kernel sends from the buffer's pages and posts a
    /// notification when it no longer reads them; the buffer comes back after that); smaller
    /// ones are plain copying sends. `None`: never zero-copy. The default is
    /// [`DEFAULT_SEND_ZC_THRESHOLD`]. On a kernel without `SEND_ZC` it stays off (see
    /// [`TcpStream::send_zc_threshold`]).
    ///
    /// # Panics
    ///
    /// Panics off a percore core (it asks the core's ring whether it has `SEND_ZC`).
    pub fn set_send_zc_threshold(&self, threshold: Option<usize>) {
        let supported = percore_engine::ring_features().send_zc;
        self.core.set_zc_threshold(threshold.filter(|_| supported));
    }

    /// The zero-copy threshold in use (see [`TcpStream::set_send_zc_threshold`]).
    pub fn send_zc_threshold(&self) -> Option<usize> {
        self.core.zc_threshold()
    }

    /// Turns TCP keepalive on with probes after `idle`, or off with `None`.
    ///
    /// # Errors
    ///
    /// The kernel's error.
    pub fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()> {
        let sock = self.sock();
        match idle {
            Some(idle) => sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle)),
            None => sock.set_keepalive(false),
        }
    }

    fn sock(&self) -> SockRef<'_> {
        SockRef::from(self.core.fd())
    }

    /// The shared fd (for ops this type does not wrap).
    pub fn fd(&self) -> &SharedFd {
        self.core.fd()
    }

    /// Receives into `buf`'s spare capacity (one receive op). Returns the count (0: the peer
    /// closed its side) and the buffer.
    ///
    /// # Errors
    ///
    /// The kernel's error (`ConnectionReset`, ...).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the receive; bytes it had already received are lost with
    /// the buffer. For reads that must survive cancellation use [`TcpStream::recv_chunk`] (or
    /// [`BufStream`](crate::BufStream), built on it).
    pub async fn read<B: IoBufMut>(&self, buf: B) -> (io::Result<usize>, B) {
        self.core.read(buf).await
    }

    /// Sends `buf`'s initialised bytes once (zero-copy at or above the stream's
    /// [threshold](TcpStream::set_send_zc_threshold)); returns how many were sent.
    ///
    /// # Errors
    ///
    /// The kernel's error (`BrokenPipe`, `ConnectionReset`, ...).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the send; some bytes may have been sent. A zero-copy
    /// send's buffer is kept by the engine until the kernel's notification says it no longer
    /// reads it, then freed: the pages are never freed or reused under the kernel.
    pub fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = (io::Result<usize>, B)> + '_ {
        // Not an `async fn`: the op's future itself, with no wrapper state around it.
        self.core.write(buf)
    }

    /// Sends all of `buf`, looping over short sends. The buffer comes back emptied of what was
    /// sent, its allocation kept for reuse: empty on success, the unsent rest on error.
    ///
    /// # Errors
    ///
    /// The kernel's error; the returned buffer then holds what was not sent.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops sending; a prefix of the bytes may have been sent, so the
    /// stream should then be closed.
    pub fn write_all(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)> + '_ {
        self.core.write_all(buf)
    }

    /// Sends all of `buf` as one op the kernel itself retries until every byte is out
    /// (`MSG_WAITALL`): it completes with the whole length, or with an error, or (the
    /// connection failed after some bytes went) a shorter count. Unlike
    /// [`TcpStream::write_all`] it borrows nothing, so it can stay in flight while the stream
    /// receives: a request/response client submits its request and waits for the answer,
    /// checking the send's result when the answer (or its deadline) comes, without a wake-up
    /// for the send's own completion (poll it first with a no-op waker).
    ///
    /// # Errors
    ///
    /// The kernel's error (`BrokenPipe`, `ConnectionReset`, ...).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the send; a prefix of the bytes may have been sent, so the
    /// stream should then be closed. The buffer is kept until the kernel is done with it.
    pub fn send_whole<B: IoBuf>(&self, buf: B) -> ops::Send<B> {
        ops::send(self.core.fd(), buf, MSG_WAITALL)
    }

    /// Sends a received chunk back out (an echo, a proxy) straight from its ring buffer: all
    /// of it, or an error. The buffer goes back to the ring when the kernel is done with it,
    /// whether or not the future is polled then, so a server can submit its reply, wait for
    /// the next request, and only then read the reply's result: submitted unwatched
    /// ([`SendOwned::start_unwatched`](ops::SendOwned::start_unwatched)), it costs no wake-up
    /// of its own. Submit a stream's next send only after the previous one completed, or the
    /// two may interleave.
    ///
    /// # Errors
    ///
    /// The kernel's error (after a part went, maybe); `WriteZero` if the kernel took none of
    /// what was left.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before the send completed cancels it (a prefix may have gone, so
    /// close the stream then); the buffer returns to its ring when the kernel is done with it.
    pub fn send_chunk(&self, chunk: RingBuf) -> ops::SendOwned {
        ops::send_chunk(self.core.fd(), chunk)
    }

    /// Relays what this stream receives to `to` (another stream's socket: one direction of
    /// a proxy), until this stream reaches its end and all of it went: each chunk is sent
    /// from the ring buffer it arrived in, by the core's driver, which sends the next when the
    /// last completes, so the awaiting task is not woken per chunk (see [`ops::relay`]).
    /// Chunks received before and not yet taken go first. Past a sixteenth of the core's ring
    /// (8 to 64 buffers) waiting to be sent, the receive pauses (what the kernel delivers
    /// before the pause lands comes on top) and TCP's flow control holds the peer. `to` is
    /// not half-closed at the end: call `shutdown` on it if the peer should see the end too.
    ///
    /// For both directions of a proxy, with each end passed on, see
    /// [`relay_both`](crate::relay_both).
    ///
    /// # Errors
    ///
    /// Off a percore core. The relay's errors (a reset, a closed destination) come from the
    /// future.
    ///
    /// # Cancel safety
    ///
    /// See [`Relaying`](crate::Relaying): dropping it stops the relay and loses what was
    /// received and not sent; close both streams then. Nothing leaks.
    pub fn relay_to(&mut self, to: &SharedFd) -> io::Result<crate::Relaying<'_>> {
        self.core.relay_to(to)
    }

    /// Sends every byte this stream receives back on it (an echo), as
    /// [`relay_to`](Self::relay_to) does, until the peer closes its side and everything went
    /// back.
    ///
    /// # Errors
    ///
    /// As [`relay_to`](Self::relay_to).
    ///
    /// # Cancel safety
    ///
    /// As [`relay_to`](Self::relay_to).
    pub fn relay_back(&mut self) -> io::Result<crate::Relaying<'_>> {
        self.core.relay_back()
    }

    /// Sends all of `bytes`, as [`TcpStream::send_chunk`] sends a chunk: the op owns the
    /// buffer and frees it when the kernel is done with it, so the send can go out unwatched
    /// ([`SendOwned::start_unwatched`](ops::SendOwned::start_unwatched)) and its result be
    /// read later, with no buffer held meanwhile ([`ops::send_vec`]). Plain (copying) send,
    /// whatever the zero-copy threshold.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::send_chunk`]; `InvalidInput` for more than `i32::MAX` bytes.
    ///
    /// # Cancel safety
    ///
    /// As [`TcpStream::send_chunk`]; the buffer is freed when the kernel is done with it.
    pub fn send_vec(&self, bytes: Vec<u8>) -> ops::SendOwned {
        ops::send_vec(self.core.fd(), bytes)
    }

    /// Sends several buffers with one `writev`; returns the count sent (possibly short).
    ///
    /// # Errors
    ///
    /// The kernel's error.
    ///
    /// # Cancel safety
    ///
    /// As [`TcpStream::write`].
    pub async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        self.core.writev(bufs).await
    }

    /// Half-closes the connection: `Shutdown::Write` sends FIN (the peer reads end of
    /// stream) while this side can still receive.
    ///
    /// # Errors
    ///
    /// The kernel's error (`NotConnected`).
    ///
    /// # Cancel safety
    ///
    /// The shutdown may or may not have happened when the future is dropped.
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc_shut::RD,
            Shutdown::Write => libc_shut::WR,
            Shutdown::Both => libc_shut::RDWR,
        };
        self.core.shutdown(how).await
    }

    /// A lingering close's wait, for a stream whose peer may still be sending while bytes
    /// sent to it are on their way (a proxy whose upstream answered early and refused the rest
    /// of the request): half-closes this side, then reads and drops what the peer sends until
    /// the peer's kernel acknowledged every byte sent to it (the send queue is empty), or the
    /// peer's end, or `limit`. A socket closed with bytes unread resets its connection, and the
    /// reset throws away what the peer had not received; after this, the stream can be dropped
    /// without that loss. Call it once the stream's sends completed and any relay from it
    /// ended: bytes a send in flight has not handed to the kernel yet are not in the queue it
    /// watches. It looks at the queue every 10 ms, and whenever bytes come.
    ///
    /// `Ok` means the queue emptied, or the peer ended its side (nothing unread can come after
    /// that, so the close will not reset), or the connection was reset already and another op
    /// took the error: not in every case that the peer has everything.
    ///
    /// # Errors
    ///
    /// `TimedOut` when `limit` passed first; the kernel's errors (`ConnectionReset`: the peer
    /// is gone, and with it what it had not received).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future ends the wait; the stream stays half-closed, and what the wait
    /// dropped was the peer's to lose. The stream closes when it is dropped.
    pub async fn linger(&mut self, limit: Duration) -> io::Result<()> {
        // Half-closed already, or the connection is gone: either way the queue says the rest.
        let _ = self.shutdown(Shutdown::Write).await;
        let start = Instant::now();
        loop {
            if self.fd().unsent_bytes()? == 0 {
                return Ok(());
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the peer took not all of what was sent within {limit:?}"),
                ));
            }
            // Bytes (dropped), the end, or a look at the queue again a little later.
            let wait = LINGER_LOOK.min(left);
            match percore_engine::scope::move_on_after(wait, self.recv_chunk()).await {
                Some(Ok(Some(dropped))) => drop(dropped),
                // Nothing unread can come after it: a close no longer resets.
                Some(Ok(None)) => return Ok(()),
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    }

    /// The next chunk of received bytes, in a buffer lent by the core's receive ring (give
    /// it back by dropping it soon); `Ok(None)` at end of stream.
    ///
    /// The first call arms a multishot receive on the core's shared ring; it stays armed while
    /// the connection lives, and buffers are only taken when bytes arrive. When more than a few
    /// chunks wait untaken (the caller stopped calling this for a while) the receive pauses
    /// itself, so that one connection cannot take the ring from the core's others: its bytes
    /// then wait in the socket (TCP's flow control holds the peer), and the receive is
    /// re-armed once the waiting chunks are taken. No byte is lost or reordered either way.
    ///
    /// # Errors
    ///
    /// The kernel's error (`ConnectionReset`, ...).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a chunk leaves the stream only when this returns it; chunks that arrive
    /// while nobody awaits wait in the stream.
    pub fn recv_chunk(&mut self) -> impl Future<Output = io::Result<Option<RingBuf>>> + '_ {
        // Not an `async fn`: the receive's own future, with no wrapper state around it.
        self.core.recv_chunk()
    }
}

impl ByteStream for TcpStream {
    fn recv_chunk(&mut self) -> impl Future<Output = io::Result<Option<RingBuf>>> {
        self.core.recv_chunk()
    }

    fn write_all(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)> {
        self.core.write_all(buf)
    }

    fn send_vec(&self, bytes: Vec<u8>) -> ops::SendOwned {
        TcpStream::send_vec(self, bytes)
    }

    async fn shutdown_write(&self) -> io::Result<()> {
        self.core.shutdown_write().await
    }
}

/// `MSG_WAITALL` (Linux ABI): an io_uring send with it retries short sends until done.
const MSG_WAITALL: i32 = 0x100;

/// `shutdown(2)`'s `how` values (Linux ABI).
mod libc_shut {
    pub(super) const RD: i32 = 0;
    pub(super) const WR: i32 = 1;
    pub(super) const RDWR: i32 = 2;
}
