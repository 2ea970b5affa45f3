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
    /// Connections accepted and handed to the caller.
    pub accepted: u64,
    /// Accepts that failed for lack of fds (`EMFILE`, `ENFILE`) or memory (`ENOBUFS`,
    /// `ENOMEM`); each was followed by a back-off, never a spin.
    pub resource_errors: u64,
    /// Connections that went away before they could be handed over: `ECONNABORTED` from the
    /// accept, or (TCP) a reset between the accept and reading the peer's address.
    pub aborted: u64,
}

/// A TCP listener on this core; see the module docs for sharding across cores.
pub struct TcpListener {
    acceptor: Acceptor,
    local: SocketAddr,
}

/// The accept loop both listeners share: a multishot accept re-armed whenever the kernel ends
/// it, a doubling back-off when fds or memory run out, and the counts.
///
/// While the multishot is armed the kernel accepts every connection that arrives, whether or
/// not anyone calls `next`: the fds wait in the op's completion queue, without limit. An owner
/// that stops taking connections (a service at its cap) must therefore [`Acceptor::pause`]:
/// the multishot is cancelled, newcomers stay in the kernel's backlog (which the listen backlog
/// bounds), and the few fds the kernel accepted before the cancel landed stay queued for the
/// next `next`, which re-arms once they are taken.
pub(crate) struct Acceptor {
    fd: SharedFd,
    accepts: Option<AcceptStream>,
    /// A cancel was sent for `accepts`: its final `ECANCELED` is the pause, not an error.
    cancelled: bool,
    stats: Cell<AcceptStats>,
    backoff: Duration,
    name: String,
}

impl Acceptor {
    pub(crate) fn new(fd: SharedFd, name: String) -> Acceptor {
        Acceptor {
            fd,
            accepts: None,
            cancelled: false,
            stats: Cell::new(AcceptStats::default()),
            backoff: ACCEPT_BACKOFF.0,
            name,
        }
    }

    pub(crate) fn stats(&self) -> AcceptStats {
        self.stats.get()
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut AcceptStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    /// Stops the kernel accepting on this listener until the next call to `next` (see the
    /// type's docs). Connections it accepted already stay queued for `next`; none is lost.
    pub(crate) fn pause(&mut self) {
        if let Some(accepts) = &self.accepts {
            if !self.cancelled {
                accepts.cancel();
                self.cancelled = true;
            }
        }
    }

    /// The next accepted fd. Cancel-safe (connections wait in the multishot accept); running
    /// out of fds or memory is counted, logged once per streak and backed off, never returned.
    pub(crate) async fn next(&mut self) -> io::Result<OwnedFd> {
        loop {
            let accepts = match &mut self.accepts {
                Some(a) => a,
                None => {
                    self.cancelled = false;
                    self.accepts.insert(ops::accept_multishot(&self.fd)?)
                }
            };
            match accepts.next().await {
                Some(Ok(fd)) => {
                    self.backoff = ACCEPT_BACKOFF.0;
                    self.count(|s| s.accepted += 1);
                    return Ok(fd);
                }
                // The end of a paused multishot: re-arm.
                Some(Err(e)) if self.cancelled && e.raw_os_error() == Some(ECANCELED) => {
                    self.accepts = None;
                }
                Some(Err(e)) => {
                    self.accepts = None;
                    if is_resource_exhaustion(&e) {
                        if self.backoff == ACCEPT_BACKOFF.0 {
                            crate::log::line(format_args!(
                                "percore-net: accept on {} failed ({e}); backing off",
                                self.name
                            ));
                        }
                        self.count(|s| s.resource_errors += 1);
                        percore_engine::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF.1);
                    } else if is_aborted(&e) {
                        self.count(|s| s.aborted += 1);
                    } else {
                        return Err(e);
                    }
                }
                // The kernel ended the multishot (or a pause did): re-arm.
                None => self.accepts = None,
            }
        }
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local)
            .field("stats", &self.acceptor.stats())
            .finish()
    }
}

impl TcpListener {
    /// Binds `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`) and the default backlog. Every
    /// core that binds the same address gets its share of the connections. Port 0 picks a
    /// free port; bind the other cores to [`TcpListener::local_addr`] to share it.
    ///
    /// An IPv6 address gets `IPV6_V6ONLY`, whatever the system default
    /// (`net.ipv6.bindv6only`): `[::]:port` accepts IPv6 connections only, never IPv4-mapped
    /// ones. To serve both families bind an IPv4 and an IPv6 listener on the port.
    ///
    /// # Errors
    ///
    /// The kernel's error (`AddrInUse` when a socket without `SO_REUSEPORT` holds the port).
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind_with_backlog(addr, DEFAULT_BACKLOG)
    }

    /// Like [`TcpListener::bind`] with a chosen listen backlog (IPv6 addresses get
    /// `IPV6_V6ONLY` there too).
    ///
    /// # Errors
    ///
    /// As [`TcpListener::bind`].
    pub fn bind_with_backlog(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            // One family per socket, as documented on `bind`: the same on every host.
            socket.set_only_v6(true)?;
        }
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(backlog)?;
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        Ok(TcpListener {
            acceptor: Acceptor::new(SharedFd::new(OwnedFd::from(socket)), local.to_string()),
            local,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What this listener counted so far.
    pub fn stats(&self) -> AcceptStats {
        self.acceptor.stats()
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
    /// until a later call takes them; none is lost or leaked. The multishot stays armed
    /// between calls (the kernel goes on accepting): pause it with
    /// [`TcpListener::pause_accepting`] when no call will come for a while.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (fd, peer) = self.accept_fd().await?;
        Ok((TcpStream::from_owned_fd(fd)?, peer))
    }

    /// Stops accepting until the next [`TcpListener::accept`] (or
    /// [`TcpListener::accept_fd`]): the listener's multishot accept is cancelled, so new
    /// connections wait in the kernel's backlog instead of being accepted into this process.
    /// Call it when the caller will not take connections for a while (a per-core connection
    /// cap reached): an armed multishot accept keeps accepting whether anyone calls `accept`
    /// or not, and the fds would pile up unserved. Connections accepted before the cancel
    /// landed stay queued and come out of the next `accept` first; none is lost or leaked.
    pub fn pause_accepting(&mut self) {
        self.acceptor.pause();
    }

    /// Like [`TcpListener::accept`], but gives the bare fd (to hand to another core).
    ///
    /// # Errors
    ///
    /// As [`TcpListener::accept`].
    ///
    /// # Cancel safety
    ///
    /// As [`TcpListener::accept`].
    pub async fn accept_fd(&mut self) -> io::Result<(OwnedFd, SocketAddr)> {
        loop {
            let fd = self.acceptor.next().await?;
            let peer = SockRef::from(&fd)
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket());
            // Reset between accept and getpeername: not a connection any more. It was counted
            // as accepted; it is closed here, never handed over, so it counts as aborted.
            let Some(peer) = peer else {
                self.acceptor.count(|s| {
                    s.accepted -= 1;
                    s.aborted += 1;
                });
                continue;
            };
            return Ok((fd, peer));
        }
    }
}

/// Whether an accept failed for lack of fds or memory (back off and retry, never spin).
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// Whether an accept failed because the connection went away first (just go on).
fn is_aborted(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ECONNABORTED)
}

// Linux errno values (identical on every Linux architecture).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
const ENOBUFS: i32 = 105;
const ENOMEM: i32 = 12;
const ECONNABORTED: i32 = 103;
const ECANCELED: i32 = 125;
