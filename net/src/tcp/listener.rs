//! A listening socket on the current core, sharded by `SO_REUSEPORT`.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use percore_engine::fd::SharedFd;
use percore_engine::ops::{self, AcceptStream};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::TcpStream;

/// The listen backlog unless told otherwise.
pub const DEFAULT_BACKLOG: i32 = 1024;

/// Back-off after an accept failed for lack of fds or memory: doubles from the first value up
/// to the second while the failures go on.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// What a listener counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AcceptStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Accepts that failed for lack of fds (`EMFILE`, `ENFILE`) or memory (`ENOBUFS`,
    /// `ENOMEM`); each was followed by a back-off, never a spin.
    pub resource_errors: u64,
    /// Connections that went away before they could be accepted (`ECONNABORTED`).
    pub aborted: u64,
}

/// A TCP listener on this core; see the module docs for sharding across cores.
pub struct TcpListener {
    fd: SharedFd,
    accepts: Option<AcceptStream>,
    local: SocketAddr,
    stats: Cell<AcceptStats>,
    backoff: Duration,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local)
            .field("stats", &self.stats.get())
            .finish()
    }
}

impl TcpListener {
    /// Binds `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`) and the default backlog. Every
    /// core that binds the same address gets its share of the connections. Port 0 picks a
    /// free port; bind the other cores to [`TcpListener::local_addr`] to share it.
    ///
    /// # Errors
    ///
    /// The kernel's error (`AddrInUse` when a socket without `SO_REUSEPORT` holds the port).
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind_with_backlog(addr, DEFAULT_BACKLOG)
    }

    /// Like [`TcpListener::bind`] with a chosen listen backlog.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::bind`].
    pub fn bind_with_backlog(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(backlog)?;
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        Ok(TcpListener {
            fd: SharedFd::new(OwnedFd::from(socket)),
            accepts: None,
            local,
            stats: Cell::new(AcceptStats::default()),
            backoff: ACCEPT_BACKOFF.0,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What this listener counted so far.
    pub fn stats(&self) -> AcceptStats {
        self.stats.get()
    }

    /// Accepts the next connection (`TCP_NODELAY` on) and its peer's address.
    ///
    /// Running out of fds or memory does not end the loop: the failure is counted, logged
    /// once per streak, and followed by a doubling back-off (5 ms to 1 s) while existing
    /// connections keep being served; accepting resumes when fds free up.
    ///
    /// # Errors
    ///
    /// Errors other than those: the listener is unusable (closed, invalid).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: connections the kernel accepted wait in the listener's multishot accept
    /// until a later call takes them; none is lost or leaked.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            let accepts = match &mut self.accepts {
                Some(a) => a,
                None => self.accepts.insert(ops::accept_multishot(&self.fd)?),
            };
            match accepts.next().await {
                Some(Ok(fd)) => {
                    self.backoff = ACCEPT_BACKOFF.0;
                    let mut stats = self.stats.get();
                    stats.accepted += 1;
                    self.stats.set(stats);
                    let peer = SockRef::from(&fd)
                        .peer_addr()
                        .ok()
                        .and_then(|a| a.as_socket());
                    let stream = TcpStream::from_owned_fd(fd)?;
                    match peer {
                        Some(peer) => return Ok((stream, peer)),
                        // Reset between accept and getpeername: not a connection any more.
                        None => continue,
                    }
                }
                Some(Err(e)) => {
                    self.accepts = None;
                    match e {
                        e if is_resource_exhaustion(&e) => {
                            let mut stats = self.stats.get();
                            if self.backoff == ACCEPT_BACKOFF.0 {
                                eprintln!(
                                    "percore-net: accept on {} failed ({e}); backing off",
                                    self.local
                                );
                            }
                            stats.resource_errors += 1;
                            self.stats.set(stats);
                            percore_engine::time::sleep(self.backoff).await;
                            self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF.1);
                        }
                        e if is_aborted(&e) => {
                            let mut stats = self.stats.get();
                            stats.aborted += 1;
                            self.stats.set(stats);
                        }
                        e => return Err(e),
                    }
                }
                // The kernel ended the multishot: re-arm.
                None => self.accepts = None,
            }
        }
    }
}

/// Whether an accept failed for lack of fds or memory (back off and retry, never spin).
pub(crate) fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// Whether an accept failed because the connection went away first (just go on).
pub(crate) fn is_aborted(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ECONNABORTED)
}

// Linux errno values (identical on every Linux architecture).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
const ENOBUFS: i32 = 105;
const ENOMEM: i32 = 12;
const ECONNABORTED: i32 = 103;
