//! The run queue: a growable ring of task references, FIFO.
//!
//! # Design
//!
//! A power-of-two ring of slots with free-running `head` (next pop) and `tail` (next push)
//! counters: a push and a pop are a mask, a load and a store each, where `VecDeque` pays for
//! its wrap-around arithmetic on every call. An entry is a counted reference to a task (`Some`)
//! or the main future's turn (`None`). Only the slots of `head..tail` are initialised; a pop
//! moves its entry out and leaves the slot as it is, and dropping the ring drops exactly the
//! queued entries. When full, the ring doubles and keeps its order.

use std::mem::MaybeUninit;

use super::raw::TaskPtr;

/// Slots a fresh ring starts with (a power of two).
const INITIAL: usize = 64;

type Entry = Option<TaskPtr>;

pub(crate) struct RunQueue {
    /// `slots.len()` is a power of two, `mask` that minus one; `slots[i & mask]` for `i` in
    /// `head..tail` are the entries, initialised; the other slots are not.
    slots: Box<[MaybeUninit<Entry>]>,
    mask: usize,
    head: usize,
    tail: usize,
}

impl RunQueue {
    pub(crate) fn new() -> RunQueue {
        RunQueue {
            slots: Box::new_uninit_slice(INITIAL),
            mask: INITIAL - 1,
            head: 0,
            tail: 0,
        }
    }

    /// Entries queued.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.tail.wrapping_sub(self.head)
    }

    /// Queues `entry` last: a task reference, or `None` for the main future's turn.
    #[inline]
    pub(crate) fn push(&mut self, entry: Entry) {
        if self.len() > self.mask {
            self.grow();
        }
        let i = self.tail & self.mask;
        // SAFETY: `mask` is the length minus one, so the masked index is in bounds.
        unsafe { self.slots.get_unchecked_mut(i) }.write(entry);
        self.tail = self.tail.wrapping_add(1);
    }

    /// The first entry, if any: `Some(None)` is the main future's turn.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Entry> {
        if self.head == self.tail {
            return None;
        }
        let i = self.head & self.mask;
        self.head = self.head.wrapping_add(1);
        // SAFETY: in bounds (as in `push`); the slot was in `head..tail`, so it is initialised,
        // and it is outside now, so the entry is moved out exactly once.
        Some(unsafe { self.slots.get_unchecked(i).assume_init_read() })
    }

    #[cold]
    fn grow(&mut self) {
        let len = self.slots.len();
        let mut slots = Box::new_uninit_slice(len * 2);
        for (n, slot) in slots.iter_mut().take(self.len()).enumerate() {
            let i = self.head.wrapping_add(n) & self.mask;
            // SAFETY: `i` is one of `head..tail` (masked): initialised, and moved exactly once
            // (the old ring is replaced without dropping any entry).
            slot.write(unsafe { self.slots[i].assume_init_read() });
        }
        self.tail = self.len();
        self.head = 0;
        self.slots = slots;
        self.mask = len * 2 - 1;
    }
}

impl Drop for RunQueue {
    fn drop(&mut self) {
        while let Some(entry) = self.pop() {
            drop(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_turns_keep_their_place_across_growth() {
        let mut q = RunQueue::new();
        // Wrap the counters around the ring first.
        for _ in 0..INITIAL / 2 + 3 {
            q.push(None);
            assert!(matches!(q.pop(), Some(None)));
        }
        for _ in 0..INITIAL * 2 + 1 {
            q.push(None);
        }
        assert_eq!(q.len(), INITIAL * 2 + 1);
        for _ in 0..INITIAL * 2 + 1 {
            assert!(matches!(q.pop(), Some(None)));
        }
        assert!(q.pop().is_none());
        assert_eq!(q.len(), 0);
    }
}
