//! `first`: race futures, keep the losers (diesel's `first()`).
//!
//! diesel's `first(sleep=5, datagram=True)` waits for whichever event comes first. Here the
//! race is a future over two or three futures. Two rules make it safe to use with I/O:
//!
//! - **Bias**: the futures are polled in argument order on every poll, so when several are
//!   ready at once the earliest argument wins. Put the event whose loss would hurt most (a
//!   read that carries data) first, the timer last.
//! - **No lost data**: the losers are not dropped, they are handed back with the winner's
//!   output. A receive that was about to complete can be polled again; or drop it, if the
//!   caller knows it is cancel-safe.
//!
//! Written here rather than taken from `futures`: the combinators there drop the losers, and
//! this one is twenty lines.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Which of two futures finished first, with the other one.
#[derive(Debug)]
pub enum First<A: Future, B: Future> {
    /// The first argument won; the second is returned unfinished.
    A(A::Output, B),
    /// The second argument won; the first is returned unfinished.
    B(B::Output, A),
}

/// Which of three futures finished first, with the other two.
#[derive(Debug)]
pub enum First3<A: Future, B: Future, C: Future> {
    /// The first argument won.
    A(A::Output, B, C),
    /// The second argument won.
    B(B::Output, A, C),
    /// The third argument won.
    C(C::Output, A, B),
}

/// Races `a` and `b`; see the module docs for bias and the losers.
///
/// # Cancel safety
///
/// Dropping the race drops both futures: as cancel-safe as they are.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use percore_engine::{first, First, time::sleep};
///
/// percore_engine::block_on(async {
///     let (tx, rx) = percore_engine::sync::channel::bounded::<u32>(1);
///     tx.try_send(7).unwrap();
///     let winner = first(rx.recv(), sleep(Duration::from_secs(5))).await;
///     match winner {
///         First::A(msg, _timer) => assert_eq!(msg, Some(7)),
///         First::B((), _recv) => panic!("timed out"),
///     }
/// });
/// ```
pub fn first<A: Future + Unpin, B: Future + Unpin>(a: A, b: B) -> Race2<A, B> {
    Race2 {
        futures: Some((a, b)),
    }
}

/// Races three futures; see [`first`].
///
/// # Cancel safety
///
/// Dropping the race drops all three futures: as cancel-safe as they are.
pub fn first3<A, B, C>(a: A, b: B, c: C) -> Race3<A, B, C>
where
    A: Future + Unpin,
    B: Future + Unpin,
    C: Future + Unpin,
{
    Race3 {
        futures: Some((a, b, c)),
    }
}

/// The future of [`first`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Race2<A, B> {
    futures: Option<(A, B)>,
}

impl<A: Future + Unpin, B: Future + Unpin> Future for Race2<A, B> {
    type Output = First<A, B>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (a, b) = self
            .futures
            .as_mut()
            .expect("Race2 polled after completion");
        if let Poll::Ready(out) = Pin::new(a).poll(cx) {
            let (_, b) = self.futures.take().expect("present");
            return Poll::Ready(First::A(out, b));
        }
        if let Poll::Ready(out) = Pin::new(b).poll(cx) {
            let (a, _) = self.futures.take().expect("present");
            return Poll::Ready(First::B(out, a));
        }
        Poll::Pending
    }
}

/// The future of [`first3`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Race3<A, B, C> {
    futures: Option<(A, B, C)>,
}

impl<A, B, C> Future for Race3<A, B, C>
where
    A: Future + Unpin,
    B: Future + Unpin,
    C: Future + Unpin,
{
    type Output = First3<A, B, C>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (a, b, c) = self
            .futures
            .as_mut()
            .expect("Race3 polled after completion");
        if let Poll::Ready(out) = Pin::new(a).poll(cx) {
            let (_, b, c) = self.futures.take().expect("present");
            return Poll::Ready(First3::A(out, b, c));
        }
        if let Poll::Ready(out) = Pin::new(b).poll(cx) {
            let (a, _, c) = self.futures.take().expect("present");
            return Poll::Ready(First3::B(out, a, c));
        }
        if let Poll::Ready(out) = Pin::new(c).poll(cx) {
            let (a, b, _) = self.futures.take().expect("present");
            return Poll::Ready(First3::C(out, a, b));
        }
        Poll::Pending
    }
}
