//! Multi-producer, multi-consumer FIFO channels for tasks on one core.
//!
//! - [`bounded`]`(capacity)` → ([`Sender`], [`Receiver`]): `send` waits while
//!   `capacity` messages are buffered. Capacity 0 (rendezvous) is not supported.
//! - [`unbounded`]`()` → ([`UnboundedSender`], [`Receiver`]): `send` never waits.
//!   The only way to get an unbounded buffer, so it is visible in code review.
//!
//! Both halves are `Clone`. Every message goes to exactly one receiver, in the order
//! the messages were sent.
//!
//! # Fairness
//!
//! Blocked senders and blocked receivers each wait in a [`WaitQueue`](super::WaitQueue)
//! and are served FIFO with hand-off: a slot freed while senders are blocked is
//! reserved for the oldest one, a message sent while receivers are blocked is claimed
//! for the oldest one. `try_send`/`try_recv` and first polls never take a reserved
//! slot or a claimed message, so they cannot overtake a blocked task.
//!
//! # Closing
//!
//! The channel closes when [`Sender::close`], [`UnboundedSender::close`] or
//! [`Receiver::close`] is called, when the last sender is dropped, or when the last
//! receiver is dropped (the buffered messages are then dropped too). Once closed,
//! every send fails and gives its value back; receivers drain the buffer, then get
//! `None` / [`TryRecvError::Closed`]. Closing wakes every blocked task and revokes
//! reservations and claims.
//!
//! # Cancellation
//!
//! A dropped `send` future drops its unsent value (it is never half-sent) and passes
//! a reserved slot on; a dropped `recv` future never consumes a message and passes
//! its claim on. See [`Sender::send`] and [`Receiver::recv`].

mod bounded;
mod chan;
mod error;
mod receiver;
mod unbounded;

pub use bounded::{SendFuture, Sender};
pub use error::{SendError, TryRecvError, TrySendError};
pub use receiver::{Receiver, RecvFuture};
pub use unbounded::UnboundedSender;

/// Creates a channel buffering at most `capacity` messages.
///
/// # Panics
///
/// If `capacity` is 0: rendezvous channels are not supported, use
/// [`unbounded`] or a capacity of at least 1.
///
/// # Examples
///
/// ```
/// # use percore_engine::sync::channel::{self, TrySendError};
/// let (tx, rx) = channel::bounded(1);
/// tx.try_send(1).unwrap();
/// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
/// assert_eq!(rx.try_recv(), Ok(1));
/// ```
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(
        capacity >= 1,
        "channel::bounded: capacity must be at least 1, got 0"
    );
    let (tx, rx) = chan::chan(Some(capacity));
    (Sender::new(tx), Receiver::new(rx))
}

/// Creates a channel with an unbounded buffer: sending never waits.
///
/// Prefer [`bounded`] wherever a producer can outpace its consumers: an unbounded
/// buffer turns overload into memory growth instead of back-pressure.
pub fn unbounded<T>() -> (UnboundedSender<T>, Receiver<T>) {
    let (tx, rx) = chan::chan(None);
    (UnboundedSender::new(tx), Receiver::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_util::{poll_noop, CountingWaker};
    use std::collections::VecDeque;
    use std::pin::{pin, Pin};
    use std::rc::Rc;
    use std::task::Poll;

    #[test]
    #[should_panic(expected = "capacity must be at least 1")]
    fn zero_capacity_panics() {
        let _ = bounded::<()>(0);
    }

    #[test]
    fn dropping_every_receiver_fails_senders_and_drops_the_buffer() {
        let (tx, rx) = bounded(1);
        let rx2 = rx.clone();
        let tracked = Rc::new(());
        tx.try_send(tracked.clone()).unwrap();
        let waker = CountingWaker::new();
        let mut send = pin!(tx.send(tracked.clone()));
        assert!(waker.poll(send.as_mut()).is_pending());
        drop(rx);
        assert!(!tx.is_closed());
        drop(rx2);
        assert_eq!(waker.count(), 1);
        assert_eq!(Rc::strong_count(&tracked), 2, "buffered message dropped");
        let Poll::Ready(Err(SendError(value))) = waker.poll(send.as_mut()) else {
            panic!()
        };
        assert!(Rc::ptr_eq(&value, &tracked));
        assert!(matches!(tx.try_send(value), Err(TrySendError::Closed(_))));
    }

    #[test]
    fn dropping_every_sender_drains_then_ends() {
        let (tx, rx) = bounded(4);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        let (w1, w2) = (CountingWaker::new(), CountingWaker::new());
        drop(tx);
        assert_eq!(poll_noop(pin!(rx.recv())), Poll::Ready(Some(1)));
        let mut a = pin!(rx.recv());
        let mut b = pin!(rx.recv());
        assert!(w1.poll(a.as_mut()).is_pending());
        assert!(w2.poll(b.as_mut()).is_pending());
        drop(tx2);
        assert_eq!((w1.count(), w2.count()), (1, 1));
        assert_eq!(w2.poll(b.as_mut()), Poll::Ready(None));
        assert_eq!(w1.poll(a.as_mut()), Poll::Ready(None));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn close_revokes_claims_but_keeps_messages() {
        let (tx, rx) = bounded(2);
        let (w1, w2) = (CountingWaker::new(), CountingWaker::new());
        let mut a = pin!(rx.recv());
        let mut b = pin!(rx.recv());
        assert!(w1.poll(a.as_mut()).is_pending());
        assert!(w2.poll(b.as_mut()).is_pending());
        tx.try_send('x').unwrap(); // claimed for a
        rx.close();
        assert_eq!((w1.count(), w2.count()), (1, 1));
        assert_eq!(tx.try_send('y'), Err(TrySendError::Closed('y')));
        // After a close, woken receivers take what is left, first come first served.
        assert_eq!(w2.poll(b.as_mut()), Poll::Ready(Some('x')));
        assert_eq!(w1.poll(a.as_mut()), Poll::Ready(None));
        assert_eq!(SendError(1).to_string(), "sending on a closed channel");
        assert_eq!(format!("{:?}", TrySendError::Full(())), "Full(..)");
    }

    /// xorshift64*: deterministic, no external crates.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }
    }

    /// A blocked future, its waker, whether the model expects it to be notified, and
    /// (for senders) its value.
    struct Blocked<F> {
        fut: Pin<Box<F>>,
        waker: CountingWaker,
        notified: bool,
        value: u32,
    }

    /// The real channel next to a model that predicts every result and exactly which
    /// blocked future is woken (the oldest unnotified one, FIFO hand-off).
    struct Sim<'a> {
        tx: &'a Sender<u32>,
        rx: &'a Receiver<u32>,
        cap: usize,
        buffer: VecDeque<u32>,
        senders: Vec<Blocked<SendFuture<'a, u32>>>,
        receivers: Vec<Blocked<RecvFuture<'a, u32>>>,
        next: u32,
    }

    fn offer<F>(queue: &mut [Blocked<F>]) {
        if let Some(waiter) = queue.iter_mut().find(|w| !w.notified) {
            waiter.notified = true;
        }
    }

    fn notified<F>(queue: &[Blocked<F>]) -> usize {
        queue.iter().filter(|w| w.notified).count()
    }

    impl<'a> Sim<'a> {
        fn can_send(&self) -> bool {
            self.buffer.len() + notified(&self.senders) < self.cap
        }

        fn push(&mut self, value: u32) {
            self.buffer.push_back(value);
            offer(&mut self.receivers);
        }

        fn pop(&mut self) -> Option<u32> {
            if self.buffer.len() <= notified(&self.receivers) {
                return None;
            }
            offer(&mut self.senders);
            self.buffer.pop_front()
        }

        fn step(&mut self, op: usize, pick: usize) {
            let value = self.next;
            match op {
                0 => {
                    self.next += 1;
                    if self.can_send() {
                        assert_eq!(self.tx.try_send(value), Ok(()));
                        self.push(value);
                    } else {
                        assert_eq!(self.tx.try_send(value), Err(TrySendError::Full(value)));
                    }
                }
                1 => {
                    let expected = self.pop().ok_or(TryRecvError::Empty);
                    assert_eq!(self.rx.try_recv(), expected);
                }
                2 => {
                    self.next += 1;
                    let (mut fut, waker) = (Box::pin(self.tx.send(value)), CountingWaker::new());
                    if self.can_send() {
                        assert!(matches!(waker.poll(fut.as_mut()), Poll::Ready(Ok(()))));
                        self.push(value);
                    } else {
                        assert!(waker.poll(fut.as_mut()).is_pending());
                        self.senders.push(Blocked {
                            fut,
                            waker,
                            notified: false,
                            value,
                        });
                    }
                }
                3 => {
                    let (mut fut, waker) = (Box::pin(self.rx.recv()), CountingWaker::new());
                    match self.pop() {
                        Some(v) => assert_eq!(waker.poll(fut.as_mut()), Poll::Ready(Some(v))),
                        None => {
                            assert!(waker.poll(fut.as_mut()).is_pending());
                            self.receivers.push(Blocked {
                                fut,
                                waker,
                                notified: false,
                                value,
                            });
                        }
                    }
                }
                4 if !self.senders.is_empty() => {
                    let i = pick % self.senders.len();
                    let w = &mut self.senders[i];
                    if w.notified {
                        assert!(matches!(w.waker.poll(w.fut.as_mut()), Poll::Ready(Ok(()))));
                        let w = self.senders.remove(i);
                        self.push(w.value);
                    } else {
                        assert!(w.waker.poll(w.fut.as_mut()).is_pending());
                    }
                }
                5 if !self.receivers.is_empty() => {
                    let i = pick % self.receivers.len();
                    let w = &mut self.receivers[i];
                    if w.notified {
                        let mut w = self.receivers.remove(i);
                        let expected = self.pop();
                        assert!(expected.is_some());
                        assert_eq!(w.waker.poll(w.fut.as_mut()), Poll::Ready(expected));
                    } else {
                        assert!(w.waker.poll(w.fut.as_mut()).is_pending());
                    }
                }
                6 if !self.senders.is_empty() => {
                    let w = self.senders.remove(pick % self.senders.len());
                    drop(w.fut);
                    if w.notified {
                        offer(&mut self.senders);
                    }
                }
                7 if !self.receivers.is_empty() => {
                    let w = self.receivers.remove(pick % self.receivers.len());
                    drop(w.fut);
                    if w.notified {
                        offer(&mut self.receivers);
                    }
                }
                _ => {}
            }
            self.check();
        }

        /// Every blocked future was woken exactly once iff the model notified it.
        fn check(&self) {
            assert_eq!(self.tx.len(), self.buffer.len());
            for w in &self.senders {
                assert_eq!(w.waker.count(), usize::from(w.notified));
            }
            for w in &self.receivers {
                assert_eq!(w.waker.count(), usize::from(w.notified));
            }
        }

        /// Close, then everyone is woken: senders fail, receivers drain in order.
        fn finish(mut self) {
            self.rx.close();
            for mut w in self.senders.drain(..) {
                assert_eq!(w.waker.count(), 1);
                let Poll::Ready(Err(SendError(v))) = w.waker.poll(w.fut.as_mut()) else {
                    panic!("blocked sender must fail after close")
                };
                assert_eq!(v, w.value);
            }
            for mut w in self.receivers.drain(..) {
                assert_eq!(w.waker.count(), 1);
                let expected = self.buffer.pop_front();
                assert_eq!(w.waker.poll(w.fut.as_mut()), Poll::Ready(expected));
            }
            for v in self.buffer.drain(..) {
                assert_eq!(self.rx.try_recv(), Ok(v));
            }
            assert_eq!(self.rx.try_recv(), Err(TryRecvError::Closed));
        }
    }

    #[test]
    fn randomised_against_a_model() {
        for seed in 1..=64u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let cap = 1 + rng.below(4);
            let (tx, rx) = bounded(cap);
            let mut sim = Sim {
                tx: &tx,
                rx: &rx,
                cap,
                buffer: VecDeque::new(),
                senders: Vec::new(),
                receivers: Vec::new(),
                next: 0,
            };
            for _ in 0..500 {
                let (op, pick) = (rng.below(8), rng.below(64));
                sim.step(op, pick);
            }
            sim.finish();
        }
    }
}
