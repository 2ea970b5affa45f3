//! Sends whose op slot owns the bytes ([`Lifecycle::SendingOwned`](super::slab::Lifecycle)):
//! a received ring buffer sent back out ([`crate::ops::send_chunk`]), or a heap buffer
//! ([`crate::ops::send_vec`]). The driver lets go of the bytes at the send's completion (a ring
//! buffer goes back to its ring, a heap buffer is freed), whether or not the future is polled
//! then, so a send can be submitted unwatched and its result read later, and the bytes are
//! not held for the future in the meantime.

use io_uring::{opcode, squeue, types};

use super::op::Orphan;
use super::slab::SendTarget;
use crate::buf::ring::RingBuf;
use crate::fd::SharedFd;

/// The bytes of a send the slot owns.
pub(crate) enum SendBytes {
    /// A buffer lent by a provided-buffer ring.
    Ring(RingBuf),
    /// Bytes on the heap.
    Heap(Vec<u8>),
}

impl SendBytes {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            SendBytes::Ring(chunk) => chunk.len(),
            SendBytes::Heap(bytes) => bytes.len(),
        }
    }

    #[inline]
    fn as_ptr(&self) -> *const u8 {
        match self {
            SendBytes::Ring(chunk) => chunk.as_ptr(),
            SendBytes::Heap(bytes) => bytes.as_ptr(),
        }
    }

    /// What is left after the first `went` bytes (a short send's rest).
    pub(crate) fn advance(&mut self, went: usize) {
        match self {
            SendBytes::Ring(chunk) => chunk.narrow(went, usize::MAX),
            // Rare (a short send despite MSG_WAITALL): a move of the rest is fine.
            SendBytes::Heap(bytes) => drop(bytes.drain(..went.min(bytes.len()))),
        }
    }

    #[cfg(test)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            SendBytes::Ring(chunk) => chunk,
            SendBytes::Heap(bytes) => bytes,
        }
    }
}

impl From<RingBuf> for SendBytes {
    fn from(chunk: RingBuf) -> SendBytes {
        SendBytes::Ring(chunk)
    }
}

impl From<Vec<u8>> for SendBytes {
    fn from(bytes: Vec<u8>) -> SendBytes {
        SendBytes::Heap(bytes)
    }
}

/// An owned send whose future is gone: the bytes and the socket live until the kernel is
/// done with the send, then go (outside the driver's borrow, from the graveyard).
pub(crate) struct OwnedSendOrphan {
    pub(crate) _fd: Option<SharedFd>,
    pub(crate) _bytes: SendBytes,
}

impl Orphan for OwnedSendOrphan {}

/// Lets go of a sent send's bytes. A ring buffer goes back to its ring in place when the
/// ring lives on elsewhere; the last handle to a ring goes to the graveyard instead, since
/// dropping the ring unregisters it, which needs the driver this runs under.
#[inline]
pub(crate) fn release(bytes: SendBytes, graveyard: &mut Vec<Box<dyn Orphan>>) {
    match bytes {
        SendBytes::Ring(chunk) if !chunk.ring_shared() => {
            graveyard.push(Box::new(OwnedSendOrphan {
                _fd: None,
                _bytes: SendBytes::Ring(chunk),
            }));
        }
        bytes => drop(bytes),
    }
}

/// The entry that sends what `bytes` hold to `to` (see [`send_entry_raw`]).
#[inline]
pub(crate) fn send_entry(to: SendTarget, bytes: &SendBytes) -> squeue::Entry {
    send_entry_raw(to, bytes.as_ptr(), bytes.len())
}

/// The entry that sends `len` bytes at `ptr` to `to` (`MSG_WAITALL`: the kernel retries short
/// sends itself; `MSG_NOSIGNAL`: a closed peer is an error, never a signal). Its caller keeps
/// the bytes where they are until the send's completion.
#[inline]
pub(crate) fn send_entry_raw(to: SendTarget, ptr: *const u8, len: usize) -> squeue::Entry {
    let len = len.min(u32::MAX as usize) as u32;
    let send = match to {
        // A registered file is named by its table slot (no fd lookup per send).
        SendTarget::Fixed(slot) => opcode::Send::new(types::Fixed(slot), ptr, len),
        SendTarget::Fd(fd) => opcode::Send::new(types::Fd(fd), ptr, len),
    };
    send.flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL).build()
}
