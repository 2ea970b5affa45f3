//! A buffered TCP stream whose every read has a limit.
//!
//! # Design
//!
//! Received bytes flow from the stream's multishot receive ([`ByteStream::recv_chunk`]) into the
//! read buffer; a read looks for what it needs there and receives more only if needed. The
//! receive is cancel-safe and the copy into the buffer happens with no await in between, so a
//! read future dropped at any point loses nothing: the bytes stay buffered for the next read.
//!
//! Every read takes a maximum. A peer that sends a line longer than the maximum gets an
//! `InvalidData` error (and the bytes stay buffered: nothing is lost, nothing grows past the
//! limit); the caller usually closes that connection, and no other connection is affected.
//!
//! Writes go to a buffer of bounded size; when it is full, `write` flushes it first
//! (back-pressure: a slow peer slows its writer, memory does not grow past twice the bound,
//! four times with a started flush in flight).
//! With an idle timeout, each flush must be taken by the peer within it: a flush sends at most
//! twice the bound (64 KiB by default), which a peer that reads takes at once.
//!
//! A reply can also be sent behind the handler's back ([`BufStream::start_flush`]): the send
//! goes out unwatched, with an op that owns the buffer and frees it at its completion
//! ([`ByteStream::send_vec`]), and its result is read by the next call that needs the stream's
//! sends done (the next flush or started flush, a shutdown, end of stream). A
//! request/response server then wakes once per exchange, for the request, instead of also for
//! its reply's completion. At most one such send is in flight: the next flush waits for it
//! (back-pressure, within the idle timeout counted from that wait).
//!
//! An idle connection holds no buffer: before a read waits for the peer, the read and write
//! buffers give their memory back if they are empty (an allocation per exchange, against
//! kilobytes kept per idle connection), and a started flush's buffer is freed by the driver
//! when the kernel has taken it.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use percore_engine::buf::ring::RingBuf;
use percore_engine::ops::SendOwned;

use crate::stream::ByteStream;
use crate::tcp::TcpStream;

/// Default bound of the write buffer.
pub const DEFAULT_WRITE_BUFFER: usize = 64 * 1024;

/// A byte stream ([`TcpStream`] by default, or a [`UnixStream`](crate::unix::UnixStream))
/// with a read buffer and a bounded write buffer.
pub struct BufStream<S = TcpStream> {
    stream: S,
    read_buf: BytesMut,
    eof: bool,
    write_buf: Vec<u8>,
    write_limit: usize,
    idle_timeout: Option<Duration>,
    /// The send [`BufStream::start_flush`] left in flight, until a call settles it.
    sending: Option<SendOwned>,
}

impl<S: fmt::Debug> fmt::Debug for BufStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufStream")
            .field("stream", &self.stream)
            .field("buffered_in", &self.read_buf.len())
            .field("buffered_out", &self.write_buf.len())
            .field("sending", &self.sending.is_some())
            .finish()
    }
}

fn too_long(what: &str, max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} longer than the limit of {max} bytes"),
    )
}

/// An owned send awaited that goes back to unwatched when the wait is dropped before the send
/// completed ([`SendOwned::unwatch`]).
struct Unwatched<'a>(&'a mut SendOwned);

impl Future for Unwatched<'_> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll(cx)
    }
}

impl Drop for Unwatched<'_> {
    fn drop(&mut self) {
        // A no-op once the send completed (its result was taken).
        self.0.unwatch();
    }
}

impl<S: ByteStream> BufStream<S> {
    /// Wraps `stream` with the default write buffer bound.
    pub fn new(stream: S) -> BufStream<S> {
        BufStream::with_write_limit(stream, DEFAULT_WRITE_BUFFER)
    }

    /// Wraps `stream`; writes are flushed once `write_limit` bytes are buffered.
    pub fn with_write_limit(stream: S, write_limit: usize) -> BufStream<S> {
        BufStream {
            stream,
            read_buf: BytesMut::new(),
            eof: false,
            write_buf: Vec::new(),
            write_limit: write_limit.max(1),
            idle_timeout: None,
            sending: None,
        }
    }

    /// Makes every wait for the peer fail with `TimedOut` after `timeout` (`None`: wait
    /// forever): a wait for incoming bytes that brings none, and a flush the peer does not
    /// take whole within it (a flush sends at most twice the write buffer's bound, which a
    /// peer that reads takes at once; one that does not read, or reads a trickle, is cut
    /// off; a started flush is given the timeout from when a later call waits for it). A peer
    /// that trickles a line byte by byte resets the read side with each byte;
    /// combine with a read's maximum, or a deadline on the whole exchange, to bound a slow
    /// peer completely. A timeout too long for the clock (`Duration::MAX`) is the same as
    /// `None`.
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.idle_timeout = timeout;
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Bytes received and not yet read.
    pub fn buffered(&self) -> &[u8] {
        &self.read_buf
    }

    /// Waits for the next received chunk (with the idle timeout); `None` at end of stream,
    /// once a send [`BufStream::start_flush`] left in flight is settled (its error, if any, is
    /// the read's: the exchange ends with the last reply's outcome known).
    ///
    /// Before it waits, empty buffers give their memory back: a connection waiting for its
    /// peer holds no buffer (the receive ring lends one only once bytes arrive).
    async fn next_chunk(&mut self) -> io::Result<Option<RingBuf>> {
        if !self.eof {
            if let Some(chunk) = self.receive().await? {
                return Ok(Some(chunk));
            }
            self.eof = true;
        }
        // At the end (again, maybe: a reply to the last bytes, or a settle dropped before):
        // the last reply's outcome first. Nothing is held across this await: a handler's
        // future, which every idle connection holds, is sized for its largest state.
        self.settle_send().await?;
        Ok(None)
    }

    /// [`BufStream::next_chunk`]'s wait for the peer, its empty buffers given back first.
    async fn receive(&mut self) -> io::Result<Option<RingBuf>> {
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            self.read_buf = BytesMut::new();
        }
        if self.write_buf.is_empty() && self.write_buf.capacity() > 0 {
            self.write_buf = Vec::new();
        }
        match self.idle_deadline() {
            Some((t, at)) => percore_engine::time::timeout_at(at, self.stream.recv_chunk())
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, format!("no bytes for {t:?}"))
                })?,
            None => self.stream.recv_chunk().await,
        }
    }

    /// The idle timeout and the deadline it sets from now, if any. A timeout past what the
    /// clock can express (`Duration::MAX`, say) is no deadline: `Instant + Duration` would
    /// panic on it.
    fn idle_deadline(&self) -> Option<(Duration, Instant)> {
        self.idle_timeout
            .and_then(|t| Some((t, Instant::now().checked_add(t)?)))
    }

    /// Receives one more chunk into the read buffer; false at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        match self.next_chunk().await? {
            Some(chunk) => {
                // No await between taking the chunk and buffering it: nothing can be lost.
                self.read_buf.extend_from_slice(&chunk);
                if self.read_buf.capacity() > 4 * self.read_buf.len().max(4096) {
                    // A burst grew the buffer: do not keep that memory per idle connection.
                    self.read_buf = BytesMut::from(&self.read_buf[..]);
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Reads up to and including `delim`, at most `max` bytes in all. At end of stream,
    /// returns what is left (without the delimiter) or `None` if nothing is.
    ///
    /// # Errors
    ///
    /// `InvalidData` if `max` bytes arrive without the delimiter (the bytes stay buffered);
    /// the stream's errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: received bytes stay buffered for the next read.
    pub async fn read_until(&mut self, delim: u8, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut searched = 0;
        loop {
            let window = &self.read_buf[searched..self.read_buf.len().min(max)];
            if let Some(i) = window.iter().position(|&b| b == delim) {
                let end = searched + i + 1;
                return Ok(Some(self.read_buf.split_to(end).to_vec()));
            }
            searched = self.read_buf.len().min(max);
            if self.read_buf.len() >= max {
                return Err(too_long("line", max));
            }
            if !self.fill().await? {
                if self.read_buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.read_buf.split().to_vec()));
            }
        }
    }

    /// Reads a line ending in `\n` (included), at most `max` bytes; see
    /// [`BufStream::read_until`].
    ///
    /// # Errors
    ///
    /// As [`BufStream::read_until`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn read_line(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        self.read_until(b'\n', max).await
    }

    /// Reads exactly `n` bytes.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` if the stream ends first (the bytes stay buffered); the stream's errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.read_buf.len() < n {
            if !self.fill().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {} of {n} bytes", self.read_buf.len()),
                ));
            }
        }
        Ok(self.read_buf.split_to(n).to_vec())
    }

    /// Reads whatever is available, at most `max` bytes, waiting only if nothing is buffered;
    /// `None` at end of stream.
    ///
    /// # Errors
    ///
    /// The stream's errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn read_some(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        let max = max.max(1);
        if self.read_buf.is_empty() {
            let Some(chunk) = self.next_chunk().await? else {
                return Ok(None);
            };
            // Straight from the ring buffer (one copy); no await from here on, so a rest
            // past `max` is buffered before anything else can happen.
            let n = chunk.len().min(max);
            self.read_buf.extend_from_slice(&chunk[n..]);
            return Ok(Some(chunk[..n].to_vec()));
        }
        let n = self.read_buf.len().min(max);
        Ok(Some(self.read_buf.split_to(n).to_vec()))
    }

    /// Discards `n` buffered bytes (at most what is buffered).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.read_buf.len());
        self.read_buf.advance(n);
    }

    /// Buffers `data` for sending, flushing first whenever the buffer would pass its bound.
    ///
    /// # Errors
    ///
    /// The errors of the flushes it makes.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe once it flushes: a dropped flush may have sent a prefix of the buffer
    /// (see [`BufStream::flush`]); close the stream then.
    pub async fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = self.write_limit - self.write_buf.len();
            if room == 0 {
                self.flush().await?;
                continue;
            }
            let take = room.min(data.len());
            self.write_buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Buffers `data` for sending, like [`BufStream::write`], but takes the bytes by value:
    /// when nothing is buffered, `data` becomes the write buffer (no copy, no allocation: an
    /// echo hands back what [`BufStream::read_some`] gave it); else it is appended, and a
    /// buffer past its bound is flushed. `data` longer than the bound goes through
    /// [`BufStream::write`], in bounded pieces.
    ///
    /// # Errors
    ///
    /// As [`BufStream::write`].
    ///
    /// # Cancel safety
    ///
    /// As [`BufStream::write`].
    pub async fn write_vec(&mut self, data: Vec<u8>) -> io::Result<()> {
        // This future stays the size of a flush (a handler's future, which every idle
        // connection holds, is sized for its largest state): `data` is not held across the
        // flush, and the rare oversized write is boxed.
        if data.len() > self.write_limit {
            return Box::pin(self.write(&data)).await;
        }
        if self.write_buf.is_empty() {
            self.write_buf = data;
        } else {
            self.write_buf.extend_from_slice(&data);
        }
        if self.write_buf.len() > self.write_limit {
            self.flush().await?;
        }
        Ok(())
    }

    /// Starts sending everything buffered and returns without waiting for the kernel to take
    /// it: the send goes out unwatched (its completion wakes nobody) and frees its buffer when
    /// done; its result is read by the next call that needs the stream's sends done (the next
    /// `flush`, `start_flush` or `shutdown_write`, or a read that meets the end of the
    /// stream). A send started before and still in flight is waited for first (within the
    /// idle timeout, counted from that wait): one send in flight at most. Always a plain
    /// (copying) send, whatever the stream's zero-copy threshold. Do not send on the stream
    /// underneath ([`BufStream::get_ref`]) while a started send is in flight: the two could
    /// interleave.
    ///
    /// A request/response server replies with it and goes back to reading: it wakes once per
    /// exchange, when the next request comes, instead of also when the reply is sent.
    ///
    /// # Errors
    ///
    /// The error of the send started before, if it failed (its bytes are gone, some may have
    /// been sent: close the stream), or `TimedOut` if the peer did not take it within the idle
    /// timeout (it is then cancelled).
    ///
    /// # Cancel safety
    ///
    /// Dropped while it waits for the send before, that send stays in flight, settled by the
    /// next call. Dropping the stream with a send in flight cancels whatever of it the kernel
    /// has not taken yet: call `flush` (or `shutdown_write`) first to know it went.
    pub async fn start_flush(&mut self) -> io::Result<()> {
        self.settle_send().await?;
        if self.write_buf.is_empty() {
            return Ok(());
        }
        if self.write_buf.len() > i32::MAX as usize {
            // More than one owned send can count: sent in pieces, awaited.
            return Box::pin(self.flush()).await;
        }
        let bytes = std::mem::take(&mut self.write_buf);
        self.sending = self.stream.send_vec(bytes).start_unwatched()?;
        Ok(())
    }

    /// Waits (within the idle timeout) for the send [`BufStream::start_flush`] left in
    /// flight, and reads its result. Cancel-safe: the send stays in flight until it is done
    /// or timed out.
    async fn settle_send(&mut self) -> io::Result<()> {
        let deadline = match &mut self.sending {
            None => return Ok(()),
            // Already done (the usual case: it was submitted a loop turn or more ago): no
            // timer, no clock.
            Some(send) => match send.poll_unwatched() {
                Poll::Ready(done) => {
                    self.sending = None;
                    return done;
                }
                Poll::Pending => self.idle_deadline(),
            },
        };
        let Some(send) = &mut self.sending else {
            return Ok(());
        };
        let done = {
            // Dropped mid-wait, the send goes back to unwatched: its completion must not
            // wake this task for nothing later.
            let mut send = Unwatched(send);
            match deadline {
                None => (&mut send).await,
                Some((t, at)) => percore_engine::time::timeout_at(at, &mut send)
                    .await
                    .unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the peer did not take the reply within {t:?}"),
                        ))
                    }),
            }
        };
        // Taken (or timed out: dropping it cancels what the kernel has not taken yet).
        self.sending = None;
        done
    }

    /// Sends everything buffered, after a send [`BufStream::start_flush`] left in flight.
    ///
    /// # Errors
    ///
    /// The stream's errors; what was not sent stays buffered. `TimedOut` when the idle
    /// timeout ([`BufStream::set_idle_timeout`]) passes before the peer took all of it: the
    /// buffer is then emptied, some of it may have been sent, and the stream should be
    /// closed. The error of a started send, as [`BufStream::start_flush`] gives it.
    ///
    /// # Cancel safety
    ///
    /// Dropping it mid-way may leave a prefix sent and the buffer emptied: the stream is then
    /// in an unknown state and should be closed.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.settle_send().await?;
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.write_buf);
        let (res, buf) = match self.idle_deadline() {
            // Timed out, the send is cancelled and its buffer goes with it (some of it may be
            // sent): the stream is then in an unknown state, as after a dropped flush.
            Some((t, at)) => percore_engine::time::timeout_at(at, self.stream.write_all(buf))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the peer did not take the reply within {t:?}"),
                    )
                })?,
            None => self.stream.write_all(buf).await,
        };
        match res {
            Ok(()) => {
                let mut buf = buf;
                buf.clear();
                // Keep the allocation for the next writes, unless a burst made it large.
                if buf.capacity() <= self.write_limit {
                    self.write_buf = buf;
                }
                Ok(())
            }
            Err(e) => {
                self.write_buf = buf;
                Err(e)
            }
        }
    }

    /// Flushes, then half-closes the sending side (the peer reads end of stream).
    ///
    /// # Errors
    ///
    /// As [`BufStream::flush`], and the kernel's error for the shutdown.
    ///
    /// # Cancel safety
    ///
    /// As [`BufStream::flush`].
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.stream.shutdown_write().await
    }

    /// The stream back, with whatever was buffered in and out. A send
    /// [`BufStream::start_flush`] left in flight is dropped (cancelled if the kernel has not
    /// taken all of it, its result lost): call [`BufStream::flush`] first.
    pub fn into_parts(self) -> (S, BytesMut, Vec<u8>) {
        (self.stream, self.read_buf, self.write_buf)
    }
}
