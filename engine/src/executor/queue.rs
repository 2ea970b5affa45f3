//! The run queue: a growable ring of task references, FIFO.
//!
//! # Design
//!
//! A power-of-two ring of `Option<TaskPtr>` slots with free-running `head` (next pop) and
//! `tail` (next push) counters: a push and a pop are a mask, a load and a store each, where
//! `VecDeque` pays for its wrap-around arithmetic on every call. An entry is a counted
//! reference to a task (`Some`) or the main future's turn (`None`); slots outside
//! `head..tail` hold `None`, so dropping the ring drops exactly the queued references. When
//! full, the ring doubles and keeps its order.

use super::raw::TaskPtr;

/// Slots a fresh ring starts with.
const INITIAL: usize = 64;

pub(crate) struct RunQueue {
    /// `len()` is a power of two; `slots[i & mask]` for `i` in `head..tail` are the entries.
    slots: Box<[Option<TaskPtr>]>,
    head: usize,
    tail: usize,
}

impl RunQueue {
    pub(crate) fn new() -> RunQueue {
        RunQueue {
            slots: std::iter::repeat_with(|| None).take(INITIAL).collect(),
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
    pub(crate) fn push(&mut self, entry: Option<TaskPtr>) {
        if self.len() == self.slots.len() {
            self.grow();
        }
        let i = self.tail & (self.slots.len() - 1);
        // SAFETY: the length is a power of two (never zero), so the masked index is in bounds.
        let slot = unsafe { self.slots.get_unchecked_mut(i) };
        // SAFETY: the slot is outside `head..tail`, so it holds `None`: overwriting it without
        // a drop loses nothing.
        unsafe { std::ptr::write(slot, entry) };
        self.tail = self.tail.wrapping_add(1);
    }

    /// The first entry, if any: `Some(None)` is the main future's turn.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Option<TaskPtr>> {
        if self.head == self.tail {
            return None;
        }
        let i = self.head & (self.slots.len() - 1);
        self.head = self.head.wrapping_add(1);
        // SAFETY: as in `push`.
        Some(unsafe { self.slots.get_unchecked_mut(i) }.take())
    }

    #[cold]
    fn grow(&mut self) {
        let len = self.slots.len();
        let mut slots: Box<[Option<TaskPtr>]> =
            std::iter::repeat_with(|| None).take(len * 2).collect();
        for (n, slot) in slots.iter_mut().take(len).enumerate() {
            *slot = self.slots[self.head.wrapping_add(n) & (len - 1)].take();
        }
        self.slots = slots;
        self.head = 0;
        self.tail = len;
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
