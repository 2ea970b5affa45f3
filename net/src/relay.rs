//! Relays on byte streams: every byte a stream receives sent on another socket (a proxy's
//! direction) or back on itself (an echo), by the core's driver, with no task wake-up per
//! chunk: see [`percore_engine::ops::Relay`].

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use percore_engine::ops::Relay;

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

    /// Bytes received plus bytes sent so far (see [`Relay::progress`]): an owner that closes
    /// idle connections compares it between two looks.
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
