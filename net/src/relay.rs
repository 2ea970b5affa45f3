//! Relays on byte streams: every byte a stream receives sent on another socket (a proxy's
//! direction) or back on itself (an echo), by the core's driver, with no task wake-up per
//! chunk: see [`percore_engine::ops::Relay`]. [`relay_both`] runs a proxy's two directions.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use percore_engine::fd::SharedFd;
use percore_engine::ops::{self, Relay};
use percore_engine::time::{sleep, Sleep};

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
/// owner that closes idle connections whether anything moved. Both relays start here, when
/// it is called, not at the first poll.
///
/// When a direction's destination refuses its bytes (its peer closed: an upstream that
/// answered early and closed while its client was still sending), that direction stops, and
/// the other goes on to its end, so that what the closing side sent before it closed still
/// reaches the other; the future then fails with the refusal. The other direction has a
/// bounded time for that ([`RelayBoth::refusal_grace`], 5 s by default): nobody reads the
/// refused direction's source any more, and a peer that waits to finish sending before it
/// reads would otherwise hold both for good. A side that resets instead of closing takes
/// what it sent and what waits for it with it (a reset is an abort): the error ends both
/// directions at once.
///
/// # Errors
///
/// From the first poll that sees it: an error of either direction other than a refusal (a
/// reset, a failed receive, a failed half-close), which ends both at once; or a destination's
/// refusal (see [`percore_engine::ops::is_refusal`]), once the other direction ended or
/// its grace ran out. Off a percore core, or when a relay cannot start, that error at once.
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
        refusal_grace: REFUSAL_GRACE,
        refused_at: None,
    }
}

/// How long the other direction may go on after a refusal, by default.
const REFUSAL_GRACE: Duration = Duration::from_secs(5);

/// Both directions of a proxy: see [`relay_both`].
///
/// # Errors
///
/// As [`relay_both`]'s.
///
/// # Cancel safety
///
/// Dropping it stops both directions: bytes received and not yet sent are lost, so close both
/// streams then. Nothing leaks (see [`Relaying`]).
#[must_use = "futures do nothing unless polled"]
pub struct RelayBoth<'a> {
    forward: Direction<'a>,
    back: Direction<'a>,
    refusal_grace: Duration,
    /// Armed at the first refusal: the other direction's time (boxed: rare, and every idle
    /// proxied connection holds this future).
    refused_at: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for RelayBoth<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBoth")
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

impl RelayBoth<'_> {
    /// How long the other direction may go on after one direction's destination refused its
    /// bytes, to deliver what it has (default 5 s); then both end, with the refusal.
    pub fn refusal_grace(mut self, grace: Duration) -> Self {
        self.refusal_grace = grace;
        self
    }

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
        // Both are driven every time: each registers for its own wake-up.
        if let Err(e) = this
            .forward
            .advance(cx)
            .and_then(|()| this.back.advance(cx))
        {
            // Over: a later poll reads an error, not a finished relay's panic.
            this.forward.end();
            this.back.end();
            return Poll::Ready(Err(e));
        }
        let refused = match (&mut this.forward, &mut this.back) {
            (Direction::Done { relayed: f }, Direction::Done { relayed: b }) => {
                return Poll::Ready(Ok((*f, *b)));
            }
            (Direction::Refused(e), other) | (other, Direction::Refused(e)) => {
                let over = other.over();
                let grace = this.refusal_grace;
                let out_of_time = over
                    || this
                        .refused_at
                        .get_or_insert_with(|| Box::pin(sleep(grace)))
                        .as_mut()
                        .poll(cx)
                        .is_ready();
                if !out_of_time {
                    return Poll::Pending;
                }
                e.take().unwrap_or_else(polled_after_it_ended)
            }
            _ => return Poll::Pending,
        };
        this.forward.end();
        this.back.end();
        Poll::Ready(Err(refused))
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
    /// Stopped: the destination refused the bytes; the error waits for the other direction
    /// to end.
    Refused(Option<io::Error>),
    /// The relay could not start (the error goes to the first poll), or the proxy is over.
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
            Direction::Done { .. } => (1 << 32) + 1,
            Direction::Refused(_) | Direction::Failed(_) => (1 << 32) + 2,
        }
    }

    /// Whether the direction has nothing more to do.
    fn over(&self) -> bool {
        matches!(self, Direction::Done { .. } | Direction::Refused(_))
    }

    /// Ends it for good (its relay or half-close, if any, is dropped: stopped).
    fn end(&mut self) {
        *self = Direction::Failed(None);
    }

    /// Drives the direction through its stages as far as it goes now. An error ends the
    /// whole proxy; a refused send only this direction (it becomes `Refused`).
    fn advance(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            match self {
                Direction::Relaying { relay, to } => match Pin::new(relay).poll(cx) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(Ok(relayed)) => {
                        let to = to.clone();
                        // Boxed: once per direction, when it ends.
                        let close = Box::pin(async move { ops::shutdown(&to, SHUT_WR).await });
                        *self = Direction::Closing { close, relayed };
                    }
                    Poll::Ready(Err(e)) if ops::is_refusal(&e) => {
                        *self = Direction::Refused(Some(e));
                        return Ok(());
                    }
                    Poll::Ready(Err(e)) => return Err(e),
                },
                Direction::Closing { close, relayed } => match close.as_mut().poll(cx) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(result) => {
                        result?;
                        *self = Direction::Done { relayed: *relayed };
                    }
                },
                Direction::Done { .. } | Direction::Refused(_) => return Ok(()),
                Direction::Failed(e) => return Err(e.take().unwrap_or_else(polled_after_it_ended)),
            }
        }
    }
}

fn polled_after_it_ended() -> io::Error {
    io::Error::other("relay_both polled after it ended")
}

/// `shutdown(2)`'s `SHUT_WR` (Linux ABI).
const SHUT_WR: i32 = 1;
