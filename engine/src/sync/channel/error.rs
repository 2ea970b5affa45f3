//! Channel error types. Errors of sending operations give the unsent value back.
//! Their `Debug` does not require `T: Debug` (like `std::sync::mpsc`), so
//! `.unwrap()` works for any message type.

use std::fmt;

/// Error of [`Sender::send`](super::Sender::send) and
/// [`UnboundedSender::send`](super::UnboundedSender::send): the channel is closed
/// (closed explicitly, or every receiver is gone). Holds the value that was not sent.
#[derive(Clone, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Error of [`Sender::try_send`](super::Sender::try_send). Holds the value that was
/// not sent.
#[derive(Clone, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The channel is full (free slots may be reserved for blocked senders).
    Full(T),
    /// The channel is closed (closed explicitly, or every receiver is gone).
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(value) | Self::Closed(value) => value,
        }
    }
}

/// Error of [`Receiver::try_recv`](super::Receiver::try_recv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// No message is available right now (buffered messages may be claimed by
    /// blocked receivers that were woken first).
    Empty,
    /// The channel is closed and drained: no message will ever arrive.
    Closed,
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a closed channel")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "Full(..)",
            Self::Closed(_) => "Closed(..)",
        })
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "sending on a full channel",
            Self::Closed(_) => "sending on a closed channel",
        })
    }
}

impl<T> std::error::Error for TrySendError<T> {}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(err: SendError<T>) -> Self {
        Self::Closed(err.0)
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "receiving on an empty channel",
            Self::Closed => "receiving on a closed channel",
        })
    }
}

impl std::error::Error for TryRecvError {}
