//! Task wakers without reference counts.
//!
//! A waker's data word is not a pointer: it packs the executor id, the task's slab index and
//! the slot's generation. Cloning copies the word and dropping does nothing, so wakers cost no
//! allocation and no atomic operation. Waking checks which thread we are on: on the owning
//! core it pushes the task onto the local run queue; anywhere else it goes through the owning
//! executor's [`Remote`](crate::cross::remote::Remote) queue, which wakes that core's ring.
//!
//! A waker that outlives its task (or its executor) names a slot whose generation no longer
//! matches; waking it does nothing, or at worst polls some other task spuriously, which every
//! future tolerates.

use std::task::{RawWaker, RawWakerVTable, Waker};

/// Task slab index reserved for the executor's main (`block_on`) future.
pub(crate) const MAIN_TASK: u32 = (1 << INDEX_BITS) - 1;

const INDEX_BITS: u32 = 24;
const EXECUTOR_BITS: u32 = 16;
const GENERATION_BITS: u32 = 24;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const EXECUTOR_MASK: u64 = (1 << EXECUTOR_BITS) - 1;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;

/// The most tasks one executor can hold at once.
pub(crate) const MAX_TASKS: u32 = MAIN_TASK;
/// The most executors a process can run at once.
pub(crate) const MAX_EXECUTORS: usize = 1 << EXECUTOR_BITS;

/// A task's slab index and generation: what a run queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRef {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl TaskRef {
    /// Generations are stored modulo 2^24 in wakers; the slab keeps them in that range.
    pub(crate) fn next_generation(generation: u32) -> u32 {
        ((generation + 1) as u64 & GENERATION_MASK) as u32
    }

    #[inline]
    pub(crate) fn pack(self) -> u64 {
        u64::from(self.index) | (u64::from(self.generation) << INDEX_BITS)
    }

    #[inline]
    pub(crate) fn unpack(word: u64) -> TaskRef {
        TaskRef {
            index: (word & INDEX_MASK) as u32,
            generation: ((word >> INDEX_BITS) & GENERATION_MASK) as u32,
        }
    }
}

/// The data word of `task`'s waker on executor `executor`.
#[inline]
pub(crate) fn encode(executor: u16, task: TaskRef) -> usize {
    (task.pack() | (u64::from(executor) << (INDEX_BITS + GENERATION_BITS))) as usize
}

/// The (executor, task) a data word names.
#[inline]
pub(crate) fn decode(word: usize) -> (u16, TaskRef) {
    let word = word as u64;
    let executor = ((word >> (INDEX_BITS + GENERATION_BITS)) & EXECUTOR_MASK) as u16;
    (executor, TaskRef::unpack(word))
}

/// The waker of `task` on executor `executor`.
#[inline]
pub(crate) fn task_waker(executor: u16, task: TaskRef) -> Waker {
    from_word(encode(executor, task))
}

/// The waker whose data word is `word` (from [`encode`]).
#[inline]
pub(crate) fn from_word(word: usize) -> Waker {
    let raw = RawWaker::new(word as *const (), &VTABLE);
    // SAFETY: the vtable's functions treat the data word as a plain integer (never
    // dereferenced), so any word is valid, clone copies it and drop is a no-op: the RawWaker
    // contract (thread safety, clone/drop pairing) holds trivially.
    unsafe { Waker::from_raw(raw) }
}

/// The (executor, task) a waker of ours names; `None` for anyone else's waker.
#[inline]
pub(crate) fn local_target(waker: &Waker) -> Option<(u16, TaskRef)> {
    std::ptr::eq(waker.vtable(), &VTABLE).then(|| decode(waker.data() as usize))
}

/// `waker.clone()`, without the call through the vtable when it is one of ours (a copy of the
/// word).
#[inline]
pub(crate) fn clone_waker(waker: &Waker) -> Waker {
    if std::ptr::eq(waker.vtable(), &VTABLE) {
        let raw = RawWaker::new(waker.data(), &VTABLE);
        // SAFETY: as in `task_waker`: our vtable treats the word as a plain integer.
        unsafe { Waker::from_raw(raw) }
    } else {
        waker.clone()
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop);

#[inline]
fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

#[inline]
fn wake(data: *const ()) {
    let (executor, task) = decode(data as usize);
    crate::runtime::context::wake_task(executor, task);
}

fn drop(_: *const ()) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        let t = TaskRef {
            index: 0x00AB_CDEF,
            generation: 0x0012_3456,
        };
        assert_eq!(decode(encode(0xBEEF, t)), (0xBEEF, t));
        assert_eq!(TaskRef::unpack(t.pack()), t);
    }

    #[test]
    fn generation_wraps_in_24_bits() {
        assert_eq!(TaskRef::next_generation((1 << 24) - 1), 0);
    }

    #[test]
    fn waker_identity_is_the_word() {
        let t = TaskRef {
            index: 3,
            generation: 9,
        };
        let a = task_waker(1, t);
        let b = a.clone();
        assert!(a.will_wake(&b));
        assert!(!a.will_wake(&task_waker(2, t)));
    }
}
