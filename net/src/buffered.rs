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
//! (back-pressure: a slow peer slows its writer, memory does not grow past twice the bound).
//! With an idle timeout, each flush must be taken by the peer within it: a flush sends at most
//! twice the bound (64 KiB by default), which a peer that reads takes at once.
//!
//! An idle connection holds no buffer: before a read waits for the peer, the read and write
//! buffers give their memory back if they are empty (an allocation per exchange, against
//! kilobytes kept per idle connection).

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use percore_engine::buf::ring::RingBuf;

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
}

impl<S: fmt::Debug> fmt::Debug for BufStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufStream")
            .field("stream", &self.stream)
            .field("buffered_in", &self.read_buf.len())
            .field("buffered_out", &self.write_buf.len())
            .finish()
    }
}

fn too_long(what: &str, max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} longer than the limit of {max} bytes"),
    )
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
        }
    }

    /// Makes every wait for the peer fail with `TimedOut` after `timeout` (`None`: wait
    /// forever): a wait for incoming bytes that brings none, and a flush the peer does not
    /// take whole within it (a flush sends at most twice the write buffer's bound, which a
    /// peer that reads takes at once; one that does not read, or reads a trickle, is cut
    /// off). A peer that trickles a line byte by byte resets the read side with each byte;
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

    /// Waits for the next received chunk (with the idle timeout); `None` at end of stream.
    ///
    /// Before it waits, empty buffers give their memory back: a connection waiting for its
    /// peer holds no buffer (the receive ring lends one only once bytes arrive).
    async fn next_chunk(&mut self) -> io::Result<Option<RingBuf>> {
        if self.eof {
            return Ok(None);
        }
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            self.read_buf = BytesMut::new();
        }
        if self.write_buf.is_empty() && self.write_buf.capacity() > 0 {
            self.write_buf = Vec::new();
        }
        let chunk = match self.idle_deadline() {
            Some((t, at)) => percore_engine::time::timeout_at(at, self.stream.recv_chunk())
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, format!("no bytes for {t:?}"))
                })??,
            None => self.stream.recv_chunk().await?,
        };
        if chunk.is_none() {
            self.eof = true;
        }
        Ok(chunk)
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

    /// Sends everything buffered.
    ///
    /// # Errors
    ///
    /// The stream's errors; what was not sent stays buffered. `TimedOut` when the idle
    /// timeout ([`BufStream::set_idle_timeout`]) passes before the peer took all of it: the
    /// buffer is then emptied, some of it may have been sent, and the stream should be
    /// closed.
    ///
    /// # Cancel safety
    ///
    /// Dropping it mid-way may leave a prefix sent and the buffer emptied: the stream is then
    /// in an unknown state and should be closed.
    pub async fn flush(&mut self) -> io::Result<()> {
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

    /// The stream back, with whatever was buffered in and out.
    pub fn into_parts(self) -> (S, BytesMut, Vec<u8>) {
        (self.stream, self.read_buf, self.write_buf)
    }
}
