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
    /// Connects to the socket at `path`.
    ///
    /// # Errors
    ///
    /// The kernel's error (`NotFound`, `ConnectionRefused`, ...).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the connect and closes the socket.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let addr = SockAddr::unix(path.as_ref())?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        // Unix connects complete at once (or fail with EAGAIN when the backlog is full), so a
        // plain connect(2) on the blocking socket is the right call here.
        socket.connect(&addr)?;
        Ok(UnixStream::from_owned_fd(OwnedFd::from(socket)))
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
        UnixStream {
            // Unix sockets have no zero-copy send.
            core: StreamCore::new(SharedFd::new(fd), None),
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
    /// Gives the stream back while an op holds the fd.
    pub fn into_owned_fd(self) -> Result<OwnedFd, UnixStream> {
        self.core.into_fd().map_err(|core| UnixStream { core })
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
