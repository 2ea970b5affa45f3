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
use percore_engine::First;

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
/// its peer sees the end too, and the other direction goes on until it ends as well. Returns
/// the bytes relayed from `a` to `b` and from `b` to `a`.
///
/// # Errors
///
/// The first error of either direction (a reset, a closed destination, a failed half-close);
/// the other direction is stopped then.
///
/// # Cancel safety
///
/// Dropping the future stops both directions: bytes received and not yet sent are lost, so
/// close both streams then. Nothing leaks (see [`Relaying`]).
pub async fn relay_both(a: &mut impl Relayable, b: &mut impl Relayable) -> io::Result<(u64, u64)> {
    let (a_fd, b_fd) = (a.fd().clone(), b.fd().clone());
    let forward = std::pin::pin!(relay_then_close(a.relay_to(&b_fd), &b_fd));
    let back = std::pin::pin!(relay_then_close(b.relay_to(&a_fd), &a_fd));
    match percore_engine::first(forward, back).await {
        First::A(forward, back) => {
            let forward = forward?;
            Ok((forward, back.await?))
        }
        First::B(back, forward) => {
            let back = back?;
            Ok((forward.await?, back))
        }
    }
}

/// Awaits a relay, then half-closes its destination.
async fn relay_then_close(relay: io::Result<Relaying<'_>>, to: &SharedFd) -> io::Result<u64> {
    let relayed = relay?.await?;
    ops::shutdown(to, SHUT_WR).await?;
    Ok(relayed)
}

/// `shutdown(2)`'s `SHUT_WR` (Linux ABI).
const SHUT_WR: i32 = 1;
