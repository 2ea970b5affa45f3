//! Relays on byte streams: every byte a stream receives sent on another socket (a proxy's
//! direction) or back on itself (an echo), by the core's driver, with no task wake-up per
//! chunk: see [`percore_engine::ops::Relay`]. [`relay_both`] runs a proxy's two directions.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use percore_engine::buf::ring::BufRing;
use percore_engine::fd::SharedFd;
use percore_engine::ops::{self, Received, RecvStream, Relay};
use percore_engine::time::{sleep, Sleep};

use crate::stream::{untaken_chunk_limit, ENOBUFS, RING_DRY_BACKOFF, RING_DRY_BACKOFF_MAX};
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
/// reaches the other; the future then fails with the refusal. Meanwhile the refused
/// direction's source is drained: what it still sends is read and dropped (nobody would take
/// it), so that a peer that finishes sending before it reads (a client's upload that got an
/// early answer) gets to its reading. Both have a bounded time for that
/// ([`RelayBoth::refusal_grace`], 5 s by default), counted from the refusal: a peer that
/// neither stops sending nor reads would otherwise hold both for good. A side that resets
/// instead of closing takes what it sent and what waits for it with it (a reset is an abort):
/// the error ends both directions at once.
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
        forward: Direction::start(a.relay_to(&b_fd)),
        back: Direction::start(b.relay_to(&a_fd)),
        a: a_fd,
        b: b_fd,
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
    /// `a` to `b`.
    forward: Direction<'a>,
    /// `b` to `a`.
    back: Direction<'a>,
    a: SharedFd,
    b: SharedFd,
    refusal_grace: Duration,
    /// Armed at the first refusal: the time left for the other direction and the drain
    /// (boxed: rare, and every idle proxied connection holds this future).
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
    /// bytes, to deliver what it has, while the refused direction's source is drained
    /// (default 5 s); then both end, with the refusal.
    pub fn refusal_grace(mut self, grace: Duration) -> Self {
        self.refusal_grace = grace;
        self
    }

    /// A pair that changes whenever either direction moves bytes, ends, finishes
    /// half-closing its destination, or (refused) drops a drained chunk: an owner that closes
    /// idle connections compares it between two looks (see [`Relaying::progress`]).
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
            .advance(cx, &this.a, &this.b)
            .and_then(|()| this.back.advance(cx, &this.b, &this.a))
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
            (Direction::Refused { error, drain }, other)
            | (other, Direction::Refused { error, drain }) => {
                let over = other.over() && drain.is_none();
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
                error.take().unwrap_or_else(polled_after_it_ended)
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
    /// Relaying; its destination is half-closed when the relay ends.
    Relaying(Relaying<'a>),
    /// The relay ended after `relayed` bytes; its destination is being half-closed.
    Closing {
        close: Pin<Box<dyn Future<Output = io::Result<()>>>>,
        relayed: u64,
    },
    /// Over: `relayed` bytes went and the destination saw the end.
    Done { relayed: u64 },
    /// Stopped: the destination refused the bytes; the error waits for the other direction
    /// to end, and the source is drained (`None`: it reached its end).
    Refused {
        error: Option<io::Error>,
        /// Boxed: rare, and every proxied connection holds its directions.
        drain: Option<Box<Drain>>,
    },
    /// The relay could not start (the error goes to the first poll), or the proxy is over.
    Failed(Option<io::Error>),
}

impl<'a> Direction<'a> {
    fn start(relay: io::Result<Relaying<'a>>) -> Direction<'a> {
        match relay {
            Ok(relay) => Direction::Relaying(relay),
            Err(e) => Direction::Failed(Some(e)),
        }
    }

    /// While relaying, the relay's own count (below 2^32); past it, one value per stage (a
    /// refused one's moving with its drain).
    fn progress(&self) -> u64 {
        match self {
            Direction::Relaying(relay) => relay.progress(),
            Direction::Closing { .. } => 1 << 32,
            Direction::Done { .. } => (1 << 32) + 1,
            // Draining moves it too: an owner that closes idle connections sees the drain.
            Direction::Refused { drain, .. } => {
                (1 << 32) + 2 + drain.as_ref().map_or(0, |d| d.chunks)
            }
            Direction::Failed(_) => (1 << 32) + 2,
        }
    }

    /// Whether the direction has nothing more to do.
    fn over(&self) -> bool {
        matches!(
            self,
            Direction::Done { .. } | Direction::Refused { drain: None, .. }
        )
    }

    /// Ends it for good (its relay or half-close, if any, is dropped: stopped).
    fn end(&mut self) {
        *self = Direction::Failed(None);
    }

    /// Drives the direction from `from` to `to` through its stages as far as it goes now. An
    /// error ends the whole proxy; a refused send only this direction (it becomes `Refused`,
    /// and drains `from`).
    fn advance(&mut self, cx: &mut Context<'_>, from: &SharedFd, to: &SharedFd) -> io::Result<()> {
        loop {
            match self {
                Direction::Relaying(relay) => match Pin::new(relay).poll(cx) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(Ok(relayed)) => {
                        let to = to.clone();
                        // Boxed: once per direction, when it ends.
                        let close = Box::pin(async move { ops::shutdown(&to, SHUT_WR).await });
                        *self = Direction::Closing { close, relayed };
                    }
                    Poll::Ready(Err(e)) if ops::is_refusal(&e) => {
                        *self = Direction::Refused {
                            error: Some(e),
                            drain: Some(Box::new(Drain::new(from.clone()))),
                        };
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
                Direction::Refused { drain, .. } => {
                    if let Some(d) = drain {
                        if d.poll_end(cx).is_ready() {
                            *drain = None;
                        }
                    }
                    return Ok(());
                }
                Direction::Done { .. } => return Ok(()),
                Direction::Failed(e) => return Err(e.take().unwrap_or_else(polled_after_it_ended)),
            }
        }
    }
}

/// A refused direction's source, read to its end with what it sends dropped: see
/// [`relay_both`].
struct Drain {
    from: SharedFd,
    /// The receive, armed on first use and re-armed when the kernel ends it.
    recv: Option<RecvStream>,
    /// Waiting out a dry ring before the next receive.
    dry: Option<Pin<Box<Sleep>>>,
    backoff: Duration,
    /// Chunks dropped so far.
    chunks: u64,
}

impl Drain {
    fn new(from: SharedFd) -> Drain {
        Drain {
            from,
            recv: None,
            dry: None,
            backoff: RING_DRY_BACKOFF,
            chunks: 0,
        }
    }

    /// Ready when the source reached its end, or failed (a reset, or no receive could be
    /// armed): either way nothing more comes from it.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some(dry) = &mut self.dry {
                if dry.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.dry = None;
            }
            let recv = match &mut self.recv {
                Some(recv) => recv,
                None => match BufRing::core_default().and_then(|ring| {
                    let recv = ops::recv_multishot(&self.from, &ring)?;
                    // Bounded as a stream's receive is: a flood between two polls must not
                    // take the core's ring from every other connection.
                    recv.limit_queue(untaken_chunk_limit(&ring));
                    Ok(recv)
                }) {
                    Ok(recv) => self.recv.insert(recv),
                    Err(_) => return Poll::Ready(()),
                },
            };
            let Poll::Ready(received) = recv.poll_next(cx) else {
                return Poll::Pending;
            };
            match received {
                // Its buffer goes back to the ring here.
                Ok(Received::Data(chunk)) => {
                    drop(chunk);
                    self.chunks += 1;
                    self.backoff = RING_DRY_BACKOFF;
                }
                Ok(Received::Ended) => self.recv = None,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    self.recv = None;
                    self.dry = Some(Box::pin(sleep(self.backoff)));
                    self.backoff = (self.backoff * 2).min(RING_DRY_BACKOFF_MAX);
                }
                Ok(Received::Eof) | Err(_) => return Poll::Ready(()),
            }
        }
    }
}

fn polled_after_it_ended() -> io::Error {
    io::Error::other("relay_both polled after it ended")
}

/// `shutdown(2)`'s `SHUT_WR` (Linux ABI).
const SHUT_WR: i32 = 1;
