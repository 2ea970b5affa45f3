//! Provided buffer rings (`IORING_REGISTER_PBUF_RING`).
//!
//! A [`BufRing`] is a group of equal-sized buffers the kernel picks from when a receive
//! completes, so a connection waiting for data pins no buffer of its own. The ring memory (the
//! entries the kernel reads) and the buffers are allocated here, registered on the current
//! core's ring under a buffer-group id, and unregistered and freed when the last handle goes
//! (in-flight ops hold handles, so that is after their last completion).
//!
//! A completion that carries `IORING_CQE_F_BUFFER` lends one buffer out of the ring; it comes
//! back as a [`RingBuf`] whose drop recycles it (writes the entry at the tail and publishes the
//! new tail with a release store, the one the kernel reads). [`BufRing::lent`] counts buffers
//! currently out of the ring: leak tests check it returns to zero.
//!
//! Buffers are laid out `stride()` bytes apart rather than `buf_size`: with 4 KiB buffers
//! packed back to back the first line of every buffer falls in the same L1 set and in a
//! handful of L2 sets, so short messages received into the buffers in turn (the kernel copies
//! them there, the parser reads them back) compete for those few sets although the lines the
//! ring touches would fit in L2. One cache line of padding per buffer staggers them across all
//! the sets. What matters more is how many buffers the ring hands out in turn: a ring sized to
//! the connections that use it (`Runtime::receive_buffers`) keeps them warm.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use crate::runtime::context;

/// Buffers in a core's default receive ring.
pub const CORE_RING_ENTRIES: u16 = 2048;
/// Size of each buffer in a core's default receive ring.
pub const CORE_RING_BUF_SIZE: u32 = 4096;

pub(crate) struct Inner {
    bgid: u16,
    /// The ring (`Core::ring_id`) the group is registered on: only that ring unregisters it
    /// (a ring dropped inside a nested `block_on` must not unregister the inner core's group
    /// of the same id).
    ring_id: u64,
    mask: u16,
    entries: u16,
    buf_size: u32,
    /// Bytes from one buffer's start to the next's (see `stride()`).
    stride: usize,
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    tail: Cell<u16>,
    lent: Cell<usize>,
}

/// A provided buffer ring registered on the current core; cheap to clone (shared handle).
#[derive(Clone)]
pub struct BufRing {
    inner: Rc<Inner>,
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("bgid", &self.inner.bgid)
            .field("entries", &self.inner.entries)
            .field("buf_size", &self.inner.buf_size)
            .field("lent", &self.inner.lent.get())
            .finish()
    }
}

impl BufRing {
    /// Allocates `entries` buffers of `buf_size` bytes and registers them on this core's ring.
    /// `entries` is rounded up to a power of two (at most 32768).
    ///
    /// # Errors
    ///
    /// Fails off a percore core, when the kernel lacks buffer rings, or for zero sizes.
    pub fn new(entries: u16, buf_size: u32) -> io::Result<BufRing> {
        if entries == 0 || buf_size == 0 || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring needs 1..=32768 entries of at least one byte",
            ));
        }
        let entries = entries.next_power_of_two();
        let ring_layout =
            Layout::from_size_align(entries as usize * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(|_| io::Error::other("buffer ring layout"))?;
        let stride = stride(buf_size);
        let bufs_layout = Layout::from_size_align(entries as usize * stride, 64)
            .map_err(|_| io::Error::other("buffer ring layout"))?;
        // SAFETY: both layouts have non-zero size (entries >= 1, buf_size >= 1).
        let ring = unsafe { alloc::alloc_zeroed(ring_layout) };
        let Some(ring) = NonNull::new(ring.cast::<BufRingEntry>()) else {
            alloc::handle_alloc_error(ring_layout);
        };
        // SAFETY: as above.
        let bufs = unsafe { alloc::alloc(bufs_layout) };
        let Some(bufs) = NonNull::new(bufs) else {
            // SAFETY: `ring` was allocated with `ring_layout` just above.
            unsafe { alloc::dealloc(ring.as_ptr().cast(), ring_layout) };
            alloc::handle_alloc_error(bufs_layout);
        };
        let mut inner = Inner {
            bgid: 0,
            ring_id: 0,
            mask: entries - 1,
            entries,
            buf_size,
            stride,
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            tail: Cell::new(0),
            lent: Cell::new(entries as usize),
        };
        let registered = context::with_core(|core| {
            let mut driver = core.driver.try_borrow_mut().ok()?;
            // SAFETY: the ring memory is page-aligned, `entries` entries long, and lives until
            // `Inner::drop` unregisters it.
            let bgid = unsafe { driver.register_buf_ring(ring.as_ptr() as u64, entries) };
            Some(bgid.map(|bgid| (bgid, core.ring_id)))
        })
        .flatten()
        .unwrap_or_else(|| Err(context::no_runtime()));
        match registered {
            Ok((bgid, ring_id)) => {
                inner.bgid = bgid;
                inner.ring_id = ring_id;
            }
            Err(e) => {
                inner.lent.set(0);
                // Not registered: Inner's drop only frees the memory.
                inner.bgid = u16::MAX;
                drop(inner);
                return Err(e);
            }
        }
        for bid in 0..entries {
            inner.recycle(bid);
        }
        Ok(BufRing {
            inner: Rc::new(inner),
        })
    }

    /// This core's shared receive ring: [`CORE_RING_ENTRIES`] buffers (or the runtime's
    /// `receive_buffers`) of [`CORE_RING_BUF_SIZE`] bytes, registered on first use and released
    /// when the core ends. Streams that receive through it hold a buffer only while a received
    /// chunk waits to be consumed, so an idle connection pins none.
    ///
    /// # Errors
    ///
    /// As [`BufRing::new`].
    pub fn core_default() -> io::Result<BufRing> {
        context::with_core(|core| {
            let mut slot = core.default_ring.borrow_mut();
            if let Some(ring) = slot.as_ref() {
                return Ok(ring.clone());
            }
            let ring = BufRing::new(core.config.receive_buffers, CORE_RING_BUF_SIZE)?;
            *slot = Some(ring.clone());
            Ok(ring)
        })
        .unwrap_or_else(|| Err(context::no_runtime()))
    }

    /// The buffer group id to put in receive entries.
    pub fn bgid(&self) -> u16 {
        self.inner.bgid
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> u32 {
        self.inner.buf_size
    }

    /// Number of buffers.
    pub fn entries(&self) -> u16 {
        self.inner.entries
    }

    /// Buffers currently lent out of the ring (held by [`RingBuf`]s or unprocessed completions).
    pub fn lent(&self) -> usize {
        self.inner.lent.get()
    }

    pub(crate) fn inner(&self) -> &Rc<Inner> {
        &self.inner
    }
}

/// Distance between buffers of `buf_size` bytes: the size rounded up to a cache line, plus one
/// line when that is a multiple of 4 KiB (a page-sized stride maps every buffer's start to the
/// same cache sets).
fn stride(buf_size: u32) -> usize {
    const LINE: usize = 64;
    let rounded = (buf_size as usize).div_ceil(LINE) * LINE;
    if rounded % 4096 == 0 {
        rounded + LINE
    } else {
        rounded
    }
}

impl Inner {
    /// Puts buffer `bid` back at the ring's tail, visible to the kernel.
    #[inline]
    fn recycle(&self, bid: u16) {
        let tail = self.tail.get();
        let index = (tail & self.mask) as usize;
        // SAFETY: `index` < entries, so the entry is inside the ring allocation; the kernel
        // only reads entries between its head and our published tail, and this one is past the
        // tail until the store below.
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        // SAFETY: `bid` < entries, so the buffer is inside the buffer allocation.
        let addr = unsafe { self.bufs.as_ptr().add(bid as usize * self.stride) };
        entry.set_addr(addr as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        let new_tail = tail.wrapping_add(1);
        self.tail.set(new_tail);
        // SAFETY: the tail field lives in the ring allocation (it overlays entry 0's reserved
        // field) and is only written by us; the kernel reads it, hence the atomic release store
        // that publishes the entry written above.
        let tail_ptr = unsafe { BufRingEntry::tail(self.ring.as_ptr()) }.cast_mut();
        // SAFETY: `tail_ptr` is a valid, aligned u16 in memory shared with the kernel.
        unsafe { AtomicU16::from_ptr(tail_ptr) }.store(new_tail, Ordering::Release);
        self.lent.set(self.lent.get() - 1);
    }

    /// The ring's buffer group id.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Takes out of the ring the buffer a completion with `flags` selected, without a handle
    /// of its own (for an owner that keeps the ring and gives it back with
    /// [`Inner::give_back_lent`]): its id, or `None` if the completion selected none.
    #[inline]
    pub(crate) fn lend(&self, flags: u32) -> Option<u16> {
        let bid = io_uring::cqueue::buffer_select(flags)?;
        if bid >= self.entries {
            return None;
        }
        self.lent.set(self.lent.get() + 1);
        Some(bid)
    }

    /// Gives back a buffer [`Inner::lend`] took out.
    #[inline]
    pub(crate) fn give_back_lent(&self, bid: u16) {
        self.recycle(bid);
    }

    /// Where buffer `bid`'s bytes start, and how many it holds at most.
    #[inline]
    pub(crate) fn buffer(&self, bid: u16) -> (*const u8, u32) {
        let at = self.bufs.as_ptr().wrapping_add(bid as usize * self.stride);
        (at.cast_const(), self.buf_size)
    }

    /// The buffer a completion with `flags` selected, holding `len` bytes.
    #[inline]
    pub(crate) fn take(self: &Rc<Self>, flags: u32, len: usize) -> Option<RingBuf> {
        let bid = io_uring::cqueue::buffer_select(flags)?;
        if bid >= self.entries {
            return None;
        }
        self.lent.set(self.lent.get() + 1);
        Some(RingBuf {
            ring: self.clone(),
            bid,
            start: 0,
            len: len.min(self.buf_size as usize) as u32,
        })
    }

    /// Returns the buffer a completion selected straight to the ring (nobody wants its bytes).
    #[inline]
    pub(crate) fn give_back(&self, flags: u32) {
        if let Some(bid) = io_uring::cqueue::buffer_select(flags) {
            if bid < self.entries {
                self.lent.set(self.lent.get() + 1);
                self.recycle(bid);
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.bgid != u16::MAX {
            let (bgid, ring_id) = (self.bgid, self.ring_id);
            // If the core is gone its ring is closed, which unregisters the group too. On
            // another core's ring (a nested `block_on`) the group stays registered until its
            // ring closes: no op can select it any more (each holds this `Inner`), so the
            // kernel never reads the memory freed below.
            context::with_core(|core| {
                if core.ring_id == ring_id {
                    if let Ok(mut driver) = core.driver.try_borrow_mut() {
                        driver.unregister_buf_ring(bgid);
                    }
                }
            });
        }
        // SAFETY: both allocations were made in `BufRing::new` with these layouts; the kernel no
        // longer reads them (unregistered, or the ring is gone), and no RingBuf is alive (each
        // holds an Rc to this Inner).
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            alloc::dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}

/// A buffer lent by a [`BufRing`] with received bytes; dropping it gives it back to the ring.
pub struct RingBuf {
    ring: Rc<Inner>,
    bid: u16,
    /// Where the bytes it shows start in the buffer (after a `recvmsg` header, say). Buffers
    /// are at most `u32::MAX` bytes (a ring entry's length is 32 bits), so 32 bits each: a
    /// `RingBuf` is 24 bytes, which keeps an owned send's state in one op slot line.
    start: u32,
    len: u32,
}

impl RingBuf {
    /// The buffer id within its ring.
    pub fn bid(&self) -> u16 {
        self.bid
    }

    /// Whether another handle to its ring lives (so dropping this buffer does not drop the
    /// ring, which would need the driver).
    #[inline]
    pub(crate) fn ring_shared(&self) -> bool {
        Rc::strong_count(&self.ring) > 1
    }

    /// Narrows the bytes shown to `len` bytes from `start` (relative to what it shows now);
    /// both are clamped to what it holds.
    pub(crate) fn narrow(&mut self, start: usize, len: usize) {
        let held = self.len as usize;
        let start = start.min(held);
        // Both fit: they are at most `held`, a u32.
        self.start += start as u32;
        self.len = len.min(held - start) as u32;
    }
}

impl fmt::Debug for RingBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingBuf")
            .field("bid", &self.bid)
            .field("len", &self.len)
            .finish()
    }
}

impl Deref for RingBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        let start = self.bid as usize * self.ring.stride + self.start as usize;
        // SAFETY: `start + len` stays within the buffer (take clamps len to the buffer size,
        // narrow keeps start + len within the previous range), the buffer is inside the
        // allocation, the kernel wrote those bytes and will not touch them again until the
        // buffer is recycled (which needs this RingBuf dropped).
        unsafe { std::slice::from_raw_parts(self.ring.bufs.as_ptr().add(start), self.len as usize) }
    }
}

// SAFETY: the bytes live in the ring's buffer allocation, which never moves and is freed only
// when the last handle to the ring goes (this RingBuf holds one); the kernel does not write
// into a lent buffer until it is recycled, which needs this RingBuf dropped. So the pointer is
// stable, valid and unchanging for the RingBuf's whole life, wherever the RingBuf moves.
unsafe impl crate::buf::IoBuf for RingBuf {
    #[inline]
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    #[inline]
    fn bytes_init(&self) -> usize {
        self.len as usize
    }

    fn bytes_total(&self) -> usize {
        self.len as usize
    }
}

impl Drop for RingBuf {
    #[inline]
    fn drop(&mut self) {
        self.ring.recycle(self.bid);
    }
}

#[cfg(test)]
mod tests {
    use super::stride;

    #[test]
    fn strides_hold_the_buffer_and_stagger_page_sized_ones() {
        for size in [1u32, 63, 64, 100, 2048, 4095, 4096, 4097, 8192, 65536] {
            let s = stride(size);
            assert!(s >= size as usize, "{size}: {s}");
            assert_eq!(s % 64, 0, "{size}: {s} keeps buffers line-aligned");
            assert_ne!(s % 4096, 0, "{size}: {s} is page-sized");
        }
        assert_eq!(stride(4096), 4160);
        assert_eq!(stride(100), 128);
    }
}
