//! Bounded channels between cores.
//!
//! A sender (on any core or thread) pushes into a bounded queue and wakes the receiver's task,
//! whose waker routes through its core's remote queue: a `MSG_RING` from the
//! sender's ring, or an eventfd write. Senders blocked on a full channel are woken in arrival
//! order as the receiver makes room. A sender may close the channel for all
//! ([`CrossSender::close`]): the receiver then drains what is queued and sees the end, as when
//! the last sender is dropped. The state sits behind one mutex: this is the explicit
//! hand-off path, never the per-request one, and one short uncontended lock costs less than the
//! wake-up that follows it.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::sync::channel::{SendError, TryRecvError, TrySendError};

struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    receiver_waker: Option<Waker>,
    /// Blocked senders in arrival order, by ticket.
    sender_wakers: VecDeque<(u64, Waker)>,
    next_ticket: u64,
    senders: usize,
    receiver_alive: bool,
    /// Closed by a sender ([`CrossSender::close`]): no more values go in.
    closed: bool,
}

impl<T> State<T> {
    /// Whether nothing more can arrive: every sender is gone or one closed the channel.
    fn ended(&self) -> bool {
        self.senders == 0 || self.closed
    }

    /// Whether a value offered now is refused for good.
    fn refuses(&self) -> bool {
        !self.receiver_alive || self.closed
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Creates a bounded channel for values that cross cores.
///
/// # Panics
///
/// Panics if `capacity` is zero.
///
/// # Examples
///
/// ```
/// let (tx, rx) = percore_engine::cross::channel::bounded::<u64>(16);
/// let t = std::thread::spawn(move || {
///     percore_engine::block_on(async move { tx.send(7).await.unwrap() })
/// });
/// let v = percore_engine::block_on(async move { rx.recv().await });
/// t.join().unwrap();
/// assert_eq!(v, Some(7));
/// ```
pub fn bounded<T: Send>(capacity: usize) -> (CrossSender<T>, CrossReceiver<T>) {
    assert!(
        capacity > 0,
        "cross-core channel capacity must be at least 1"
    );
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            receiver_waker: None,
            sender_wakers: VecDeque::new(),
            next_ticket: 0,
            senders: 1,
            receiver_alive: true,
            closed: false,
        }),
    });
    (
        CrossSender {
            shared: shared.clone(),
        },
        CrossReceiver { shared },
    )
}

/// The sending half; `Send` and `Clone`, usable from any core or thread.
pub struct CrossSender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half; `Send` (move it to the receiving core), not `Clone`.
pub struct CrossReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> fmt::Debug for CrossSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CrossSender")
    }
}

impl<T> fmt::Debug for CrossReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CrossReceiver")
    }
}

impl<T> Clone for CrossSender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        CrossSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for CrossSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            if state.senders == 0 {
                state.receiver_waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for CrossReceiver<T> {
    fn drop(&mut self) {
        let (wakers, items) = {
            let mut state = self.shared.lock();
            state.receiver_alive = false;
            let wakers: Vec<Waker> = state.sender_wakers.drain(..).map(|(_, w)| w).collect();
            (wakers, std::mem::take(&mut state.queue))
        };
        drop(items);
        for w in wakers {
            w.wake();
        }
    }
}

impl<T: Send> CrossSender<T> {
    /// Sends without waiting.
    ///
    /// # Errors
    ///
    /// `Full(v)` at capacity (or while earlier senders wait), `Closed(v)` when the receiver
    /// is gone or the channel was closed.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut state = self.shared.lock();
            if state.refuses() {
                return Err(TrySendError::Closed(value));
            }
            if state.queue.len() >= state.capacity || !state.sender_wakers.is_empty() {
                return Err(TrySendError::Full(value));
            }
            state.queue.push_back(value);
            state.receiver_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Closes the channel for every sender (this one's clones too): sends from now on fail,
    /// giving their value back, senders waiting for room are woken and fail the same way, and
    /// the receiver takes what is queued, then sees the end. Closing twice does nothing.
    pub fn close(&self) {
        let (receiver, senders) = {
            let mut state = self.shared.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            let senders: Vec<Waker> = state.sender_wakers.iter().map(|(_, w)| w.clone()).collect();
            (state.receiver_waker.take(), senders)
        };
        receiver.into_iter().chain(senders).for_each(Waker::wake);
    }

    /// Sends, waiting while the channel is full.
    ///
    /// # Errors
    ///
    /// Gives the value back when the receiver is gone or the channel was closed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops the value unsent; nothing is half-sent.
    pub fn send(&self, value: T) -> CrossSend<'_, T> {
        CrossSend {
            sender: self,
            value: Some(value),
            ticket: None,
        }
    }
}

/// The future of [`CrossSender::send`].
#[must_use = "futures do nothing unless polled"]
pub struct CrossSend<'a, T> {
    sender: &'a CrossSender<T>,
    value: Option<T>,
    ticket: Option<u64>,
}

impl<T> fmt::Debug for CrossSend<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrossSend")
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl<T> Unpin for CrossSend<'_, T> {}

impl<T: Send> Future for CrossSend<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let value = this
            .value
            .take()
            .expect("CrossSend polled after completion");
        let waker = {
            let mut state = this.sender.shared.lock();
            if state.refuses() {
                return Poll::Ready(Err(SendError(value)));
            }
            let first_in_line = match this.ticket {
                Some(t) => state.sender_wakers.front().is_none_or(|(f, _)| *f == t),
                None => state.sender_wakers.is_empty(),
            };
            if state.queue.len() < state.capacity && first_in_line {
                if let Some(t) = this.ticket.take() {
                    state.sender_wakers.retain(|(x, _)| *x != t);
                }
                state.queue.push_back(value);
                let next_sender = if state.queue.len() < state.capacity {
                    state.sender_wakers.front().map(|(_, w)| w.clone())
                } else {
                    None
                };
                (state.receiver_waker.take(), next_sender)
            } else {
                this.value = Some(value);
                match this.ticket {
                    Some(t) => {
                        if let Some(entry) = state.sender_wakers.iter_mut().find(|(x, _)| *x == t) {
                            entry.1 = cx.waker().clone();
                        }
                    }
                    None => {
                        let t = state.next_ticket;
                        state.next_ticket += 1;
                        state.sender_wakers.push_back((t, cx.waker().clone()));
                        this.ticket = Some(t);
                    }
                }
                return Poll::Pending;
            }
        };
        if let Some(w) = waker.0 {
            w.wake();
        }
        if let Some(w) = waker.1 {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> Drop for CrossSend<'_, T> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            let next = {
                let mut state = self.sender.shared.lock();
                let was_first = state.sender_wakers.front().is_some_and(|(x, _)| *x == t);
                state.sender_wakers.retain(|(x, _)| *x != t);
                if was_first && state.queue.len() < state.capacity {
                    state.sender_wakers.front().map(|(_, w)| w.clone())
                } else {
                    None
                }
            };
            // Pass the turn on: the next sender in line may have room now.
            if let Some(w) = next {
                w.wake();
            }
        }
    }
}

impl<T: Send> CrossReceiver<T> {
    /// Takes a value without waiting.
    ///
    /// # Errors
    ///
    /// `Empty` when nothing is queued, `Closed` when every sender is gone (or one closed the
    /// channel) and nothing is left.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let (value, waker) = {
            let mut state = self.shared.lock();
            match state.queue.pop_front() {
                Some(v) => (v, state.sender_wakers.front().map(|(_, w)| w.clone())),
                None if state.ended() => return Err(TryRecvError::Closed),
                None => return Err(TryRecvError::Empty),
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(value)
    }

    /// Waits for the next value; `None` once every sender is gone (or one closed the channel)
    /// and the queue is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a value is only taken when returned.
    pub async fn recv(&self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next value.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let (value, waker) = {
            let mut state = self.shared.lock();
            match state.queue.pop_front() {
                Some(v) => (v, state.sender_wakers.front().map(|(_, w)| w.clone())),
                None if state.ended() => return Poll::Ready(None),
                None => {
                    match &state.receiver_waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => state.receiver_waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Poll::Ready(Some(value))
    }

    /// Values queued now.
    pub fn len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
