//! Recycled task allocations: per-executor free lists by size class.
//!
//! # Design
//!
//! A task is one heap block (header, future, result). Spawning and joining a short task in a
//! loop would otherwise call `malloc` and `free` once each per task; the pool keeps the blocks
//! of finished tasks and hands them to the next spawn of the same size class, so the steady state
//! makes no allocator call at all.
//!
//! Every task block is allocated with its *class layout* ([`class_layout`]): the task's size
//! rounded up to a multiple of [`GRANULE`], aligned to [`ALIGN`]. A block is therefore
//! interchangeable with any other block of its class, whichever executor or thread made it: a
//! task freed while no core runs (its handle outlived the runtime) or on another core's thread
//! simply goes back to the global allocator with the same layout, or into whichever pool is
//! current. Tasks too large ([`MAX_POOLED`]) or over-aligned are not pooled (exact layout, global
//! allocator).
//!
//! Bounds: at most [`PER_CLASS`] idle blocks per class; the rest are freed. The pool frees its
//! blocks when the executor drops. `--cfg percore_no_task_pool` turns reuse off, which the
//! AddressSanitizer job does so that a use after free of a task block cannot hide in a reused
//! block.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Class step in bytes.
pub(crate) const GRANULE: usize = 64;
/// Alignment of every pooled block.
pub(crate) const ALIGN: usize = 16;
/// The largest pooled block.
pub(crate) const MAX_POOLED: usize = 1024;
/// Idle blocks kept per class.
pub(crate) const PER_CLASS: usize = 128;

const CLASSES: usize = MAX_POOLED / GRANULE;

/// The layout a task of `layout` is allocated with, and its class (`None`: not pooled).
pub(crate) const fn class_layout(layout: Layout) -> (Layout, Option<usize>) {
    if layout.align() > ALIGN || layout.size() > MAX_POOLED || layout.size() == 0 {
        return (layout, None);
    }
    let size = layout.size().div_ceil(GRANULE) * GRANULE;
    match Layout::from_size_align(size, ALIGN) {
        Ok(rounded) => (rounded, Some(size / GRANULE - 1)),
        Err(_) => (layout, None),
    }
}

/// Free lists of task blocks, one per size class. Each list is intrusive: an idle block's
/// first word holds the next idle block of its class.
pub(crate) struct TaskPool {
    classes: [FreeList; CLASSES],
}

#[derive(Clone, Copy)]
struct FreeList {
    head: Option<NonNull<u8>>,
    len: usize,
}

impl std::fmt::Debug for TaskPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskPool")
            .field("idle", &self.idle())
            .finish()
    }
}

impl TaskPool {
    pub(crate) fn new() -> TaskPool {
        TaskPool {
            classes: [FreeList { head: None, len: 0 }; CLASSES],
        }
    }

    /// Idle blocks held, all classes together.
    pub(crate) fn idle(&self) -> usize {
        self.classes.iter().map(|l| l.len).sum()
    }

    /// A block of class `class`, if one is idle.
    #[inline]
    pub(crate) fn take(&mut self, class: usize) -> Option<NonNull<u8>> {
        let list = self.classes.get_mut(class)?;
        let block = list.head?;
        // SAFETY: an idle block of this list is at least GRANULE bytes, ALIGN-aligned and
        // owned by the pool; `put` wrote the next link into its first word.
        list.head = unsafe { block.cast::<Option<NonNull<u8>>>().read() };
        list.len -= 1;
        Some(block)
    }

    /// Keeps `block` (of class `class`, contents dropped) for reuse; gives it back if the class
    /// is full.
    #[inline]
    pub(crate) fn put(&mut self, class: usize, block: NonNull<u8>) -> Result<(), NonNull<u8>> {
        // Built with `--cfg percore_no_task_pool` (the AddressSanitizer job), every block goes
        // back to the allocator, so a use of a freed task is seen instead of hidden by reuse.
        if cfg!(percore_no_task_pool) {
            return Err(block);
        }
        match self.classes.get_mut(class) {
            Some(list) if list.len < PER_CLASS => {
                // SAFETY: the caller hands the block over: it is at least GRANULE bytes and
                // ALIGN-aligned (its class layout), unused, so its first word is ours.
                unsafe { block.cast::<Option<NonNull<u8>>>().write(list.head) };
                list.head = Some(block);
                list.len += 1;
                Ok(())
            }
            _ => Err(block),
        }
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        for class in 0..CLASSES {
            let Ok(layout) = Layout::from_size_align((class + 1) * GRANULE, ALIGN) else {
                continue;
            };
            while let Some(block) = self.take(class) {
                // SAFETY: every block in list `class` was allocated by the global allocator
                // with exactly this layout (`class_layout`) and is no longer in use: it was put
                // here after its task was dropped, and `take` removed it from the list.
                unsafe { alloc::dealloc(block.as_ptr(), layout) };
            }
        }
    }
}

/// Frees a task block: into the current core's pool when its class has room, else back to the
/// global allocator.
///
/// # Safety
///
/// `block` was allocated by the global allocator with `layout`, which is
/// `class_layout(..).0` of a layout whose class is `class`; its contents are dropped and
/// nobody uses it again.
#[inline]
pub(crate) unsafe fn release(block: NonNull<u8>, layout: Layout, class: Option<usize>) {
    let block = match class {
        Some(class) => {
            match crate::runtime::context::with_core(|core| core.executor.recycle(class, block)) {
                Some(Ok(())) => return,
                Some(Err(block)) => block,
                None => block,
            }
        }
        None => block,
    };
    // SAFETY: the caller's duty: allocated with `layout`, unused from now on.
    unsafe { alloc::dealloc(block.as_ptr(), layout) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_the_granule() {
        let (l, c) = class_layout(Layout::from_size_align(1, 1).unwrap());
        assert_eq!((l.size(), l.align(), c), (64, 16, Some(0)));
        let (l, c) = class_layout(Layout::from_size_align(65, 8).unwrap());
        assert_eq!((l.size(), c), (128, Some(1)));
        let (l, c) = class_layout(Layout::from_size_align(1024, 16).unwrap());
        assert_eq!((l.size(), c), (1024, Some(CLASSES - 1)));
    }

    #[test]
    fn big_or_over_aligned_tasks_are_not_pooled() {
        let big = Layout::from_size_align(1025, 8).unwrap();
        assert_eq!(class_layout(big), (big, None));
        let aligned = Layout::from_size_align(64, 64).unwrap();
        assert_eq!(class_layout(aligned), (aligned, None));
    }

    #[test]
    #[cfg_attr(percore_no_task_pool, ignore = "reuse is off in this build")]
    fn blocks_are_reused_last_in_first_out_and_bounded() {
        let (layout, Some(class)) = class_layout(Layout::from_size_align(100, 8).unwrap()) else {
            panic!("pooled");
        };
        let mut pool = TaskPool::new();
        assert!(pool.take(class).is_none());
        let mut blocks = Vec::new();
        for _ in 0..PER_CLASS + 3 {
            // SAFETY: the layout has a non-zero size.
            let p = NonNull::new(unsafe { alloc::alloc(layout) }).expect("memory");
            blocks.push(p);
        }
        let mut refused = Vec::new();
        for &b in &blocks {
            if let Err(b) = pool.put(class, b) {
                refused.push(b);
            }
        }
        assert_eq!(refused.len(), 3);
        assert_eq!(pool.idle(), PER_CLASS);
        assert_eq!(pool.take(class), Some(blocks[PER_CLASS - 1]));
        assert!(pool.take(class + 1).is_none());
        for b in refused {
            // SAFETY: allocated above with `layout`, never pooled.
            unsafe { alloc::dealloc(b.as_ptr(), layout) };
        }
        let last = blocks[PER_CLASS - 1];
        // SAFETY: taken back from the pool above, allocated with `layout`.
        unsafe { alloc::dealloc(last.as_ptr(), layout) };
        // The pool frees the rest when dropped (ASan checks it).
    }
}
