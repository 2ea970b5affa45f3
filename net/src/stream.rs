//! What every byte stream here shares: the fd, the receive path on the core's buffer ring,
//! sending (zero-copy `SEND_ZC` at or above a per-stream threshold, a plain send below),
//! half-close. [`TcpStream`](crate::tcp::TcpStream) and
//! [`UnixStream`](crate::unix::UnixStream) wrap a [`StreamCore`]; [`ByteStream`] is what
//! [`BufStream`](crate::BufStream) needs from them.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use percore_engine::buf::ring::{BufRing, RingBuf};
use percore_engine::buf::{IoBuf, IoBufMut};
use percore_engine::fd::SharedFd;
use percore_engine::ops::{self, Received, RecvStream};

/// What a buffered stream needs from the stream under it.
pub trait ByteStream {
    /// The next chunk of received bytes (lent by the core's ring); `None` at end of stream.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel-safe: a chunk leaves the stream only when returned.
    fn recv_chunk(&mut self) -> impl Future<Output = io::Result<Option<RingBuf>>>;

    /// Sends all of `buf`; gives it back emptied of what was sent (the unsent rest on error).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future mid-way may leave a prefix of `buf` sent: close the stream then.
    fn write_all(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;

    /// Sends all of `bytes` with an op that owns them and frees them at its completion
    /// ([`ops::send_vec`]): it can go out unwatched and be settled later, holding no buffer
    /// for its owner meanwhile.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before the send completed cancels it (a prefix may have gone:
    /// close the stream then).
    fn send_vec(&self, bytes: Vec<u8>) -> ops::SendOwned;

    /// Half-closes the sending side.
    ///
    /// # Cancel safety
    ///
    /// The shutdown may or may not have happened when the future is dropped.
    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>>;
}

/// The future of one send on a stream: a plain send, or a zero-copy one (boxed).
pub(crate) enum SendOp<'a, B: IoBuf> {
    Plain(ops::Send<B>),
    ZeroCopy(Pin<Box<dyn Future<Output = (io::Result<usize>, B)> + 'a>>),
}

impl<B: IoBuf> Future for SendOp<'_, B> {
    type Output = (io::Result<usize>, B);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            SendOp::Plain(send) => Pin::new(send).poll(cx),
            SendOp::ZeroCopy(send) => send.as_mut().poll(cx),
        }
    }
}

/// The future of a stream's `recv_chunk`, written by hand: each poll is one poll of the
/// multishot receive (no nested futures on the per-chunk path), and a back-off sleep while the
/// core's ring is dry (doubling while it stays dry: see [`RING_DRY_BACKOFF`]).
///
/// # Cancel safety
///
/// Cancel-safe: a chunk leaves the stream only when this returns it.
#[must_use = "futures do nothing unless polled"]
pub(crate) struct RecvChunk<'a> {
    core: &'a mut StreamCore,
    /// Set while every buffer of the ring is lent out: they get time to come back.
    dry: Option<percore_engine::time::Sleep>,
}

impl Future for RecvChunk<'_> {
    type Output = io::Result<Option<RingBuf>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(backoff) = &mut this.dry {
                if Pin::new(backoff).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.dry = None;
            }
            match this.core.poll_recv_chunk(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(RecvStep::Done(res)) => return Poll::Ready(res),
                Poll::Ready(RecvStep::RingDry) => {
                    let backoff = this.core.dry_backoff;
                    this.core.dry_backoff = (backoff * 2).min(RING_DRY_BACKOFF_MAX);
                    this.dry = Some(percore_engine::time::sleep(backoff));
                }
            }
        }
    }
}

/// What one step of a receive ended with.
enum RecvStep {
    /// A chunk, end of stream (`None`) or an error.
    Done(io::Result<Option<RingBuf>>),
    /// The ring ran dry: back off, then re-arm.
    RingDry,
}

/// The multishot receive, armed on first use.
struct Receiver {
    ring: BufRing,
    stream: Option<RecvStream>,
}

/// The shared part of a connected byte stream.
pub(crate) struct StreamCore {
    fd: SharedFd,
    receiver: Option<Receiver>,
    eof: bool,
    /// Sends of at least this many bytes go through `SEND_ZC`; `None`: never.
    zc_threshold: Cell<Option<usize>>,
    /// The next back-off when the ring is dry: it doubles while the ring stays dry for this
    /// stream, and starts over when a chunk arrives.
    dry_backoff: Duration,
}

/// How long a ring that ran dry is first given to refill before the receive is re-armed.
pub(crate) const RING_DRY_BACKOFF: Duration = Duration::from_micros(200);

/// The longest back-off of a stream whose receives keep finding the ring dry: a core with
/// many such streams re-arms each at most this often, instead of spinning on them.
pub(crate) const RING_DRY_BACKOFF_MAX: Duration = Duration::from_millis(10);

/// Ring buffers one stream's untaken chunks may hold before its receive is paused (cancelled;
/// re-armed once its owner took them): a handler that stops reading must not take the core's
/// shared ring from every other connection. A sixteenth of the ring, between 8 and 64 buffers.
pub(crate) fn untaken_chunk_limit(ring: &BufRing) -> usize {
    (usize::from(ring.entries()) / 16).clamp(8, 64)
}

/// `ENOBUFS` on Linux (every architecture): the provided buffer ring is empty.
pub(crate) const ENOBUFS: i32 = 105;

/// `shutdown(2)`'s `SHUT_WR` (Linux ABI).
const SHUT_WR: i32 = 1;

impl StreamCore {
    /// A stream core; sends of `zc_threshold` bytes or more are zero-copy (`None`: never).
    pub(crate) fn new(fd: SharedFd, zc_threshold: Option<usize>) -> StreamCore {
        StreamCore {
            fd,
            receiver: None,
            eof: false,
            zc_threshold: Cell::new(zc_threshold),
            dry_backoff: RING_DRY_BACKOFF,
        }
    }

    pub(crate) fn zc_threshold(&self) -> Option<usize> {
        self.zc_threshold.get()
    }

    pub(crate) fn set_zc_threshold(&self, threshold: Option<usize>) {
        self.zc_threshold.set(threshold);
    }

    pub(crate) fn fd(&self) -> &SharedFd {
        &self.fd
    }

    /// Gives the fd back if no op holds it. An armed receive is left alone (the stream comes
    /// back unchanged): dropping it would lose what it received and nobody read yet; see
    /// [`StreamCore::into_fd_with_received`].
    pub(crate) fn into_fd(self) -> Result<std::os::fd::OwnedFd, StreamCore> {
        if self.receiver.as_ref().is_some_and(|r| r.stream.is_some()) {
            return Err(self);
        }
        let StreamCore {
            fd,
            receiver,
            eof,
            zc_threshold,
            dry_backoff,
        } = self;
        fd.try_unwrap().map_err(|fd| StreamCore {
            fd,
            receiver,
            eof,
            zc_threshold,
            dry_backoff,
        })
    }

    /// Stops receiving without losing a byte and gives the fd back with what the receive had
    /// taken from the socket but nobody had read: the armed receive is cancelled and its
    /// completions are taken until the kernel's last one; then this waits until no op holds
    /// the fd (a dropped send's cancel, say, lands within a loop turn or two).
    ///
    /// # Errors
    ///
    /// A receive error that came before the cancel landed (the bytes before it are lost with
    /// the stream).
    pub(crate) async fn into_fd_with_received(
        mut self,
    ) -> io::Result<(std::os::fd::OwnedFd, Vec<u8>)> {
        let mut received = Vec::new();
        if let Some(stream) = self.receiver.as_mut().and_then(|r| r.stream.as_mut()) {
            stream.cancel();
            loop {
                match stream.next().await {
                    Ok(Received::Data(chunk)) => received.extend_from_slice(&chunk),
                    Ok(Received::Eof) => {
                        self.eof = true;
                        break;
                    }
                    Ok(Received::Ended) => break,
                    // The ring ran dry: the kernel took nothing more from the socket.
                    Err(e) if e.raw_os_error() == Some(ENOBUFS) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        // The receive is over: its op and fd reference go now.
        self.receiver = None;
        let mut core = self;
        loop {
            match core.into_fd() {
                Ok(fd) => return Ok((fd, received)),
                Err(back) => {
                    core = back;
                    percore_engine::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    pub(crate) async fn read<B: IoBufMut>(&self, buf: B) -> (io::Result<usize>, B) {
        ops::recv(&self.fd, buf, 0).await
    }

    /// One send: zero-copy at or above the threshold, a plain (copying) send below.
    pub(crate) fn write<B: IoBuf>(&self, buf: B) -> SendOp<'_, B> {
        let zero_copy = self
            .zc_threshold
            .get()
            .is_some_and(|t| buf.bytes_init() >= t);
        if zero_copy {
            // Boxed: an allocation only for writes large enough to go zero-copy, so that the
            // plain send every connection's task is sized for stays small.
            SendOp::ZeroCopy(Box::pin(ops::send_zc(&self.fd, buf)))
        } else {
            SendOp::Plain(ops::send(&self.fd, buf, 0))
        }
    }

    pub(crate) async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        ops::writev(&self.fd, bufs, ops::CURRENT_POSITION).await
    }

    pub(crate) async fn shutdown(&self, how: i32) -> io::Result<()> {
        ops::shutdown(&self.fd, how).await
    }

    /// Sends all of `buf`; gives it back emptied of what was sent (empty on success, the
    /// unsent rest on error), its allocation kept for reuse.
    pub(crate) async fn write_all(&self, mut buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        while !buf.is_empty() {
            let (res, back) = self.write(buf).await;
            buf = back;
            match res {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) if n >= buf.len() => buf.clear(),
                // A short send (rare): keep the rest at the front and go on.
                Ok(n) => drop(buf.drain(..n)),
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// A relay of what this stream receives to `to` (see [`ops::Relay`]): the receive armed
    /// now (its chunks nobody took go first) is handed over, or one is armed on the core's
    /// ring. Chunks waiting to be sent are bounded as untaken ones are.
    pub(crate) fn relay_to(&mut self, to: &SharedFd) -> io::Result<crate::Relaying<'_>> {
        let receiver = match self.receiver.take() {
            Some(receiver) => receiver,
            None => Receiver {
                ring: BufRing::core_default()?,
                stream: None,
            },
        };
        let max_waiting = untaken_chunk_limit(&receiver.ring);
        let relay = match receiver.stream {
            Some(stream) => stream.relay_to(to, max_waiting)?,
            None => ops::relay(&self.fd, &receiver.ring, to, max_waiting)?,
        };
        Ok(crate::Relaying::new(relay))
    }

    /// A relay of what this stream receives back to itself (an echo).
    pub(crate) fn relay_back(&mut self) -> io::Result<crate::Relaying<'_>> {
        let fd = self.fd.clone();
        self.relay_to(&fd)
    }

    /// The next received chunk: see [`RecvChunk`].
    #[inline]
    pub(crate) fn recv_chunk(&mut self) -> RecvChunk<'_> {
        RecvChunk {
            core: self,
            dry: None,
        }
    }

    /// One step of [`StreamCore::recv_chunk`], without an await: arms (or re-arms) the
    /// multishot receive and polls it. The usual case, a chunk waiting or none yet, costs one
    /// poll of the op and no future of its own.
    #[inline]
    fn poll_recv_chunk(&mut self, cx: &mut Context<'_>) -> Poll<RecvStep> {
        if self.eof {
            return Poll::Ready(RecvStep::Done(Ok(None)));
        }
        loop {
            let receiver = match &mut self.receiver {
                Some(r) => r,
                None => match BufRing::core_default() {
                    Ok(ring) => self.receiver.insert(Receiver { ring, stream: None }),
                    Err(e) => return Poll::Ready(RecvStep::Done(Err(e))),
                },
            };
            let stream = match &mut receiver.stream {
                Some(s) => s,
                None => match ops::recv_multishot(&self.fd, &receiver.ring) {
                    Ok(s) => {
                        s.limit_queue(untaken_chunk_limit(&receiver.ring));
                        receiver.stream.insert(s)
                    }
                    Err(e) => return Poll::Ready(RecvStep::Done(Err(e))),
                },
            };
            let Poll::Ready(received) = stream.poll_next(cx) else {
                return Poll::Pending;
            };
            match received {
                Ok(Received::Data(chunk)) => {
                    self.dry_backoff = RING_DRY_BACKOFF;
                    return Poll::Ready(RecvStep::Done(Ok(Some(chunk))));
                }
                Ok(Received::Eof) => {
                    self.eof = true;
                    receiver.stream = None;
                    return Poll::Ready(RecvStep::Done(Ok(None)));
                }
                // The kernel stopped the multishot (it may do so under pressure), or its
                // untaken chunks passed the limit and every one of them has now been taken:
                // re-arm. The old receive is over, so the new one goes on from the socket
                // where it stopped: nothing lost, nothing reordered.
                Ok(Received::Ended) => receiver.stream = None,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    receiver.stream = None;
                    return Poll::Ready(RecvStep::RingDry);
                }
                Err(e) => {
                    receiver.stream = None;
                    return Poll::Ready(RecvStep::Done(Err(e)));
                }
            }
        }
    }

    pub(crate) async fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(SHUT_WR).await
    }
}
