//! Unix domain stream sockets, with the same stream API as TCP.
//!
//! [`UnixListener`] accepts through a multishot accept like its TCP sibling (and backs off the
//! same way when fds run out); [`UnixStream`] receives on the core's buffer ring and works with
//! [`BufStream`](crate::BufStream).

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use percore_engine::buf::ring::RingBuf;
use percore_engine::buf::{IoBuf, IoBufMut};
use percore_engine::fd::SharedFd;
use percore_engine::ops;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::stream::{ByteStream, StreamCore};
use crate::tcp::listener::Acceptor;
use crate::tcp::AcceptStats;

/// A connected Unix stream socket; `!Send`.
pub struct UnixStream {
    core: StreamCore,
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("fd", self.core.fd())
            .finish()
    }
}

impl UnixStream {
    /// Connects to the socket at `path`, through the core's ring: while the listener's
    /// backlog is full the connect waits (in the kernel's io_uring worker, never on the core's
    /// thread) until the listener accepts and makes room, like a TCP connect waits for its
    /// handshake. Bound the wait with a deadline
    /// ([`move_on_after`](percore_engine::scope::move_on_after), say) when the listener may
    /// never accept.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a path too long for a Unix address; the kernel's error
    /// (`NotFound`, `ConnectionRefused`, ...); running off a percore core.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the connect (the kernel interrupts a wait for backlog
    /// room) and closes the socket once the kernel is done with it.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        // Blocking mode (and close-on-exec, as socket2 always sets): a non-blocking Unix
        // connect fails with EAGAIN on a full backlog instead of waiting, and Unix sockets
        // have no "connect in progress" to poll for. The blocking happens in the ring's
        // worker, which a cancel interrupts.
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        let fd = SharedFd::new(OwnedFd::from(socket));
        ops::connect_unix(&fd, path.as_ref()).await?;
        Ok(UnixStream::from_shared(fd))
    }

    /// A connected pair (for tests, and parent/child plumbing).
    ///
    /// # Errors
    ///
    /// The kernel's error.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None)?;
        Ok((
            UnixStream::from_owned_fd(OwnedFd::from(a)),
            UnixStream::from_owned_fd(OwnedFd::from(b)),
        ))
    }

    /// Wraps a connected socket.
    pub fn from_owned_fd(fd: OwnedFd) -> UnixStream {
        UnixStream::from_shared(SharedFd::new(fd))
    }

    fn from_shared(fd: SharedFd) -> UnixStream {
        UnixStream {
            // Unix sockets have no zero-copy send.
            core: StreamCore::new(fd, None),
        }
    }

    /// Wraps a std stream.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> UnixStream {
        UnixStream::from_owned_fd(OwnedFd::from(stream))
    }

    /// Gives the fd back (for hand-off); fails while an op still holds it.
    ///
    /// # Errors
    ///
    /// Gives the stream back, unchanged, while an op holds the fd: an armed receive (use
    /// [`UnixStream::into_owned_fd_with_received`]) or a dropped op whose cancel has not landed.
    pub fn into_owned_fd(self) -> Result<OwnedFd, UnixStream> {
        self.core.into_fd().map_err(|core| UnixStream { core })
    }

    /// As [`TcpStream::into_owned_fd_with_received`](crate::tcp::TcpStream): the fd and the
    /// bytes received but not read, nothing lost.
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

    /// The shared fd.
    pub fn fd(&self) -> &SharedFd {
        self.core.fd()
    }

    /// Receives into `buf`'s spare capacity; see [`TcpStream::read`](crate::tcp::TcpStream::read).
    ///
    /// # Errors
    ///
    /// The kernel's error.
    ///
    /// # Cancel safety
    ///
    /// As [`TcpStream::read`](crate::tcp::TcpStream::read): bytes in flight are lost when
    /// dropped; [`UnixStream::recv_chunk`] is the cancel-safe receive.
    pub async fn read<B: IoBufMut>(&self, buf: B) -> (io::Result<usize>, B) {
        self.core.read(buf).await
    }

    /// Sends once; see [`TcpStream::write`](crate::tcp::TcpStream::write).
    ///
    /// # Errors
    ///
    /// The kernel's error.
    ///
    /// # Cancel safety
    ///
    /// Some bytes may have been sent when dropped.
    pub async fn write<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        self.core.write(buf).await
    }

    /// Sends all of `buf`; it comes back emptied of what was sent (the unsent rest on error).
    ///
    /// # Errors
    ///
    /// The kernel's error.
    ///
    /// # Cancel safety
    ///
    /// A prefix may have been sent when dropped.
    pub async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.core.write_all(buf).await
    }

    /// Sends a received chunk straight from its ring buffer, which goes back to the ring when
    /// the kernel is done with it: see [`TcpStream::send_chunk`](crate::tcp::TcpStream::send_chunk).
    ///
    /// # Errors
    ///
    /// The kernel's error (after a part went, maybe); `WriteZero` if the kernel took none of
    /// what was left.
    ///
    /// # Cancel safety
    ///
    /// As [`TcpStream::send_chunk`](crate::tcp::TcpStream::send_chunk).
    pub fn send_chunk(&self, chunk: RingBuf) -> ops::SendOwned {
        ops::send_chunk(self.core.fd(), chunk)
    }

    /// Relays what this stream receives to `to` by the core's driver, with no task wake-up per
    /// chunk, until this stream reaches its end and all of it went: see
    /// [`TcpStream::relay_to`](crate::tcp::TcpStream::relay_to).
    ///
    /// # Errors
    ///
    /// Off a percore core; the relay's errors come from the future.
    ///
    /// # Cancel safety
    ///
    /// As [`TcpStream::relay_to`](crate::tcp::TcpStream::relay_to): dropping it stops the
    /// relay and loses what was received and not sent. Nothing leaks.
    pub fn relay_to(&mut self, to: &SharedFd) -> io::Result<crate::Relaying<'_>> {
        self.core.relay_to(to)
    }

    /// Sends every byte this stream receives back on it (an echo): see
    /// [`TcpStream::relay_back`](crate::tcp::TcpStream::relay_back).
    ///
    /// # Errors
    ///
    /// As [`UnixStream::relay_to`].
    ///
    /// # Cancel safety
    ///
    /// As [`UnixStream::relay_to`].
    pub fn relay_back(&mut self) -> io::Result<crate::Relaying<'_>> {
        self.core.relay_back()
    }

    /// Sends all of `bytes` with an op that owns them and frees them at its completion: see
    /// [`TcpStream::send_vec`](crate::tcp::TcpStream::send_vec).
    ///
    /// # Errors
    ///
    /// As [`UnixStream::send_chunk`]; `InvalidInput` for more than `i32::MAX` bytes.
    ///
    /// # Cancel safety
    ///
    /// As [`UnixStream::send_chunk`]; the buffer is freed when the kernel is done with it.
    pub fn send_vec(&self, bytes: Vec<u8>) -> ops::SendOwned {
        ops::send_vec(self.core.fd(), bytes)
    }

    /// The next received chunk, lent by the core's ring; `None` at end of stream.
    ///
    /// # Errors
    ///
    /// The kernel's error.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub fn recv_chunk(&mut self) -> impl Future<Output = io::Result<Option<RingBuf>>> + '_ {
        self.core.recv_chunk()
    }

    /// Half-closes the sending side.
    ///
    /// # Errors
    ///
    /// The kernel's error.
    ///
    /// # Cancel safety
    ///
    /// The shutdown may or may not have happened when dropped.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        self.core.shutdown_write().await
    }
}

impl ByteStream for UnixStream {
    fn recv_chunk(&mut self) -> impl Future<Output = io::Result<Option<RingBuf>>> {
        self.core.recv_chunk()
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.core.write_all(buf).await
    }

    fn send_vec(&self, bytes: Vec<u8>) -> ops::SendOwned {
        UnixStream::send_vec(self, bytes)
    }

    async fn shutdown_write(&self) -> io::Result<()> {
        self.core.shutdown_write().await
    }
}

/// A listening Unix stream socket on this core. The socket file is removed when the listener
/// is dropped.
pub struct UnixListener {
    acceptor: Acceptor,
    path: PathBuf,
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("path", &self.path)
            .field("stats", &self.acceptor.stats())
            .finish()
    }
}

impl UnixListener {
    /// Binds and listens at `path` (which must not exist).
    ///
    /// # Errors
    ///
    /// The kernel's error (`AddrInUse` when the path exists).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let path = path.as_ref().to_path_buf();
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&SockAddr::unix(&path)?)?;
        socket.listen(crate::tcp::DEFAULT_BACKLOG)?;
        Ok(UnixListener {
            acceptor: Acceptor::new(
                SharedFd::new(OwnedFd::from(socket)),
                path.display().to_string(),
            ),
            path,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What this listener counted.
    pub fn stats(&self) -> AcceptStats {
        self.acceptor.stats()
    }

    /// Stops accepting until the next [`UnixListener::accept`]; see
    /// [`TcpListener::pause_accepting`](crate::tcp::TcpListener::pause_accepting).
    pub fn pause_accepting(&mut self) {
        self.acceptor.pause();
    }

    /// Accepts the next connection.
    ///
    /// # Errors
    ///
    /// Fatal listener errors; running out of fds is not one: as for
    /// [`TcpListener::accept`](crate::tcp::TcpListener::accept), it is counted, logged and
    /// backed off (5 ms doubling to 1 s).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: accepted connections wait in the multishot accept for a later call.
    pub async fn accept(&mut self) -> io::Result<UnixStream> {
        Ok(UnixStream::from_owned_fd(self.acceptor.next().await?))
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        // The socket file is ours; a failure to remove it (already gone) is not actionable.
        let _ = std::fs::remove_file(&self.path);
    }
}
