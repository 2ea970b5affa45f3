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

/// The bytes of a send the slot owns, and how many of them went already (a short send goes
/// on with the rest under the same key). The count sits beside the variant's tag, so that an
/// owned send's state fits a slot's cache line.
pub(crate) enum SendBytes {
    /// A buffer lent by a provided-buffer ring, narrowed to what is left.
    Ring { chunk: RingBuf, sent: u32 },
    /// Bytes on the heap, the first `sent` of them gone.
    Heap { bytes: Vec<u8>, sent: u32 },
}

impl SendBytes {
    /// The bytes still to send.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            SendBytes::Ring { chunk, .. } => chunk.len(),
            SendBytes::Heap { bytes, sent } => bytes.len() - *sent as usize,
        }
    }

    /// The bytes that went in earlier parts of a send that went short.
    #[inline]
    pub(crate) fn sent(&self) -> u32 {
        match self {
            SendBytes::Ring { sent, .. } | SendBytes::Heap { sent, .. } => *sent,
        }
    }

    #[inline]
    fn as_ptr(&self) -> *const u8 {
        match self {
            SendBytes::Ring { chunk, .. } => chunk.as_ptr(),
            SendBytes::Heap { bytes, sent } => bytes[*sent as usize..].as_ptr(),
        }
    }

    /// What is left after the first `went` bytes (a short send's rest).
    pub(crate) fn advance(&mut self, went: usize) {
        // A send is at most u32::MAX bytes (an entry's length), so `went` fits.
        let went = went.min(self.len());
        match self {
            SendBytes::Ring { chunk, sent } => {
                chunk.narrow(went, usize::MAX);
                *sent += went as u32;
            }
            SendBytes::Heap { sent, .. } => *sent += went as u32,
        }
    }

    #[cfg(test)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            SendBytes::Ring { chunk, .. } => chunk,
            SendBytes::Heap { bytes, sent } => &bytes[*sent as usize..],
        }
    }
}

impl From<RingBuf> for SendBytes {
    fn from(chunk: RingBuf) -> SendBytes {
        SendBytes::Ring { chunk, sent: 0 }
    }
}

impl From<Vec<u8>> for SendBytes {
    fn from(bytes: Vec<u8>) -> SendBytes {
        SendBytes::Heap { bytes, sent: 0 }
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
        SendBytes::Ring { chunk, sent } if !chunk.ring_shared() => {
            graveyard.push(Box::new(OwnedSendOrphan {
                _fd: None,
                _bytes: SendBytes::Ring { chunk, sent },
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
