//! Relays on byte streams: every byte a stream receives sent on another socket (a proxy's
//! direction) or back on itself (an echo), by the core's driver, with no task wake-up per
//! chunk: see [`percore_engine::ops::Relay`]. [`relay_both`] runs a proxy's two directions.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use percore_engine::fd::SharedFd;
use percore_engine::ops::{self, Relay};

use crate::tcp::TcpStream;
use crate::unix::UnixStream;

/// A relay from a stream ([`TcpStream::relay_to`](crate::tcp::TcpStream::relay_to),
/// [`TcpStream::relay_back`](crate::tcp::TcpStream::relay_back), and the same on
/// [`UnixStream`](crate::unix::UnixStream)). It borrows the stream it receives from, which
/// therefore cannot receive otherwise meanwhile. Resolves to the bytes relayed once the stream
/// reached its end and all of them went.
///
/// # Errors
///
/// The first receive or send error: see [`Relay`].
///
/// # Cancel safety
///
/// Dropping it stops the relay: bytes received and not yet sent are lost, so close both
/// streams then. Nothing leaks (see [`Relay`]).
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Relaying<'a> {
    relay: Relay,
    _from: PhantomData<&'a mut ()>,
}

impl Relaying<'_> {
    pub(crate) fn new(relay: Relay) -> Self {
        Relaying {
            relay,
            _from: PhantomData,
        }
    }

    /// A count that changes whenever the relay moves bytes (see [`Relay::progress`]): an
    /// owner that closes idle connections compares it between two looks.
    pub fn progress(&self) -> u64 {
        self.relay.progress()
    }
}

impl Future for Relaying<'_> {
    type Output = io::Result<u64>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.relay).poll(cx)
    }
}

/// A stream that can be relayed: [`TcpStream`] and [`UnixStream`]. Sealed: the relay needs
/// the stream's receive path.
pub trait Relayable: sealed::Sealed {
    /// The stream's socket.
    fn fd(&self) -> &SharedFd;

    /// Relays what the stream receives to `to`: see [`TcpStream::relay_to`].
    ///
    /// # Errors
    ///
    /// As [`TcpStream::relay_to`].
    fn relay_to(&mut self, to: &SharedFd) -> io::Result<Relaying<'_>>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::tcp::TcpStream {}
    impl Sealed for crate::unix::UnixStream {}
}

impl Relayable for TcpStream {
    fn fd(&self) -> &SharedFd {
        TcpStream::fd(self)
    }

    fn relay_to(&mut self, to: &SharedFd) -> io::Result<Relaying<'_>> {
        TcpStream::relay_to(self, to)
    }
}

impl Relayable for UnixStream {
    fn fd(&self) -> &SharedFd {
        UnixStream::fd(self)
    }

    fn relay_to(&mut self, to: &SharedFd) -> io::Result<Relaying<'_>> {
        UnixStream::relay_to(self, to)
    }
}

/// A proxy's two directions: relays `a` to `b` and `b` to `a` at once, each by the core's
/// driver (see [`TcpStream::relay_to`]), until both have ended. The two may be of either kind
/// (a TCP front for a Unix socket's server, say). When one side reaches its end
/// (its peer half-closed), the other side is half-closed in turn (`shutdown(Write)`), so that
/// its peer sees the end too, and the other direction goes on until it ends as well. Resolves
/// to the bytes relayed from `a` to `b` and from `b` to `a`; [`RelayBoth::progress`] tells an
/// owner that closes idle connections whether anything moved.
///
/// # Errors
///
/// From the first poll: the first error of either direction (a reset, a closed destination,
/// a failed half-close); the other direction is stopped then. Off a percore core, or when a
/// relay cannot start, the future resolves to that error at once.
///
/// # Cancel safety
///
/// Dropping the future stops both directions: bytes received and not yet sent are lost, so
/// close both streams then. Nothing leaks (see [`Relaying`]).
pub fn relay_both<'a>(a: &'a mut impl Relayable, b: &'a mut impl Relayable) -> RelayBoth<'a> {
    let (a_fd, b_fd) = (a.fd().clone(), b.fd().clone());
    RelayBoth {
        forward: Direction::start(a.relay_to(&b_fd), b_fd),
        back: Direction::start(b.relay_to(&a_fd), a_fd),
    }
}

/// Both directions of a proxy: see [`relay_both`].
#[must_use = "futures do nothing unless polled"]
pub struct RelayBoth<'a> {
    forward: Direction<'a>,
    back: Direction<'a>,
}

impl std::fmt::Debug for RelayBoth<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBoth")
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

impl RelayBoth<'_> {
    /// A pair that changes whenever either direction moves bytes, ends, or finishes
    /// half-closing its destination: an owner that closes idle connections compares it
    /// between two looks (see [`Relaying::progress`]).
    pub fn progress(&self) -> (u64, u64) {
        (self.forward.progress(), self.back.progress())
    }
}

impl Future for RelayBoth<'_> {
    type Output = io::Result<(u64, u64)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Both are polled every time: each registers for its own wake-up.
        let forward = this.forward.poll(cx)?;
        let back = this.back.poll(cx)?;
        match (forward, back) {
            (Poll::Ready(forward), Poll::Ready(back)) => Poll::Ready(Ok((forward, back))),
            _ => Poll::Pending,
        }
    }
}

/// One direction of a [`RelayBoth`].
enum Direction<'a> {
    /// Relaying into `to`, which is half-closed when the relay ends.
    Relaying { relay: Relaying<'a>, to: SharedFd },
    /// The relay ended after `relayed` bytes; its destination is being half-closed.
    Closing {
        close: Pin<Box<dyn Future<Output = io::Result<()>>>>,
        relayed: u64,
    },
    /// Over: `relayed` bytes went and the destination saw the end.
    Done { relayed: u64 },
    /// The relay could not start; the error goes to the first poll.
    Failed(Option<io::Error>),
}

impl<'a> Direction<'a> {
    fn start(relay: io::Result<Relaying<'a>>, to: SharedFd) -> Direction<'a> {
        match relay {
            Ok(relay) => Direction::Relaying { relay, to },
            Err(e) => Direction::Failed(Some(e)),
        }
    }

    /// While relaying, the relay's own count (below 2^32); past it, one value per stage.
    fn progress(&self) -> u64 {
        match self {
            Direction::Relaying { relay, .. } => relay.progress(),
            Direction::Closing { .. } => 1 << 32,
            Direction::Done { .. } | Direction::Failed(_) => (1 << 32) + 1,
        }
    }

    /// Drives the direction through its stages; `Ready(bytes)` once its destination saw the
    /// end.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        loop {
            match self {
                Direction::Relaying { relay, to } => {
                    let relayed = std::task::ready!(Pin::new(relay).poll(cx))?;
                    let to = to.clone();
                    // Boxed: once per direction, when it ends.
                    let close = Box::pin(async move { ops::shutdown(&to, SHUT_WR).await });
                    *self = Direction::Closing { close, relayed };
                }
                Direction::Closing { close, relayed } => {
                    std::task::ready!(close.as_mut().poll(cx))?;
                    *self = Direction::Done { relayed: *relayed };
                }
                Direction::Done { relayed } => return Poll::Ready(Ok(*relayed)),
                Direction::Failed(e) => {
                    return Poll::Ready(Err(e
                        .take()
                        .unwrap_or_else(|| io::Error::other("relay_both polled after it failed"))))
                }
            }
        }
    }
}

/// `shutdown(2)`'s `SHUT_WR` (Linux ABI).
const SHUT_WR: i32 = 1;
