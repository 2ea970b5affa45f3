//! Cache prefetch hints.
//!
//! Between two loop turns the kernel's network work (tens of KiB of socket buffers, its own
//! structures) evicts most of what the core touched last turn: every op slot, task block and
//! buffer-ring entry a turn reads is then a cache miss. A turn knows early what it will touch
//! (the completions it reaps name their slots; a woken task is queued before it is polled),
//! so it asks the CPU to start those loads at once; the misses then overlap one another and
//! the turn's other work instead of stalling one by one.

/// Asks the CPU to load the cache line holding `at` into every cache level (see [`prefetch`]).
#[inline(always)]
pub(crate) fn prefetch_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch instruction never faults and has no effect on memory, for any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Asks the CPU to load the cache lines of `len` bytes at `start` (at most 1 KiB) into every
/// cache level. A hint: it never faults, whatever the address, and changes no memory.
#[inline(always)]
pub(crate) fn prefetch(start: *const u8, len: usize) {
    let misalign = start as usize % 64;
    let first = start.wrapping_sub(misalign);
    let span = len.min(1024) + misalign;
    let mut offset = 0;
    while offset < span {
        prefetch_line(first.wrapping_add(offset));
        offset += 64;
    }
}
