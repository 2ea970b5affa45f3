//! Owned buffers for kernel-async I/O.
//!
//! An op that the kernel completes later cannot borrow a `&mut [u8]`: the future may be dropped
//! while the kernel still writes. So ops take buffers by value and give them back with the
//! result, `(io::Result<T>, B)`. [`IoBuf`] is a buffer the kernel may read from (writes, sends),
//! [`IoBufMut`] one it may write into (reads, receives). Both are implemented for `Vec<u8>`,
//! `Box<[u8]>`, `BytesMut`; `IoBuf` also for `Bytes`, `&'static [u8]`/`&'static str` and
//! [`ring::RingBuf`] (so received bytes can be sent on straight from the buffer ring).
//!
//! A read fills the buffer's spare capacity after its initialised part (`Vec::len`): read into
//! `Vec::with_capacity(n)` and the vector's length grows by the bytes read.
//!
//! [`ring`] holds provided buffer rings (kernel-selected buffers for multishot receives).

pub mod ring;

use bytes::{Bytes, BytesMut};

/// A buffer whose bytes the kernel may read until the op completes.
///
/// # Safety
///
/// `stable_ptr` must point at `bytes_init` initialised bytes that stay valid and do not move
/// while the value is alive, even when the value itself is moved (heap storage), and must not
/// change through shared access.
pub unsafe trait IoBuf: Unpin + 'static {
    /// Start of the bytes.
    fn stable_ptr(&self) -> *const u8;
    /// Number of initialised bytes (what a write sends).
    fn bytes_init(&self) -> usize;
    /// Total capacity.
    fn bytes_total(&self) -> usize;
}

/// A buffer the kernel may write into, after its initialised part, until the op completes.
///
/// # Safety
///
/// As for [`IoBuf`], and `stable_mut_ptr` must point at `bytes_total` bytes of writable memory.
/// `set_init` must only mark bytes that have been initialised.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the writable memory.
    fn stable_mut_ptr(&mut self) -> *mut u8;
    /// Marks the first `pos` bytes as initialised (never shrinks).
    ///
    /// # Safety
    ///
    /// The first `pos` bytes must be initialised.
    unsafe fn set_init(&mut self, pos: usize);
}

// SAFETY: a Vec's heap buffer does not move when the Vec moves; its first `len` bytes are
// initialised.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: the pointer covers the Vec's whole capacity, which is writable heap memory.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len() {
            // SAFETY: the caller guarantees the first `pos` bytes are initialised, and `pos` is
            // within the capacity the kernel was given.
            unsafe { self.set_len(pos) };
        }
    }
}

// SAFETY: a boxed slice's heap memory does not move with the box; all of it is initialised.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: all of a boxed slice is writable and initialised.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

// SAFETY: BytesMut's storage is heap memory that does not move with the handle; `len` bytes
// are initialised.
unsafe impl IoBuf for BytesMut {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: the pointer covers BytesMut's capacity, which is writable memory it owns uniquely.
unsafe impl IoBufMut for BytesMut {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len() {
            // SAFETY: the caller guarantees the first `pos` bytes are initialised.
            unsafe { self.set_len(pos) };
        }
    }
}

// SAFETY: Bytes points at immutable heap (or static) memory that does not move with it.
unsafe impl IoBuf for Bytes {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: static memory never moves and is never freed.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: static memory never moves and is never freed.
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}
