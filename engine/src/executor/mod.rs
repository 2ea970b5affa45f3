//! The per-core executor: `!Send` tasks, a FIFO run queue, a budget per loop turn.
//!
//! # Design
//!
//! Tasks live in a slab of [`raw::TaskPtr`]s: a thin pointer to the task block's header, which
//! carries its own non-atomic reference count and a hand-written vtable (see [`raw`]). Wakers
//! name a slot by [`TaskRef`] (slab index + generation, see [`waker`]), so a waker costs no
//! reference count and no atomic, and a stale one finds a newer generation and does nothing.
//! The run queue ([`queue`], a power-of-two ring) holds a counted reference to each queued
//! task, so running one needs no slab lookup. A task is queued at most once at a time
//! (`scheduled` flag in its header), so a storm of wakes costs one poll; a task cancelled while
//! queued is skipped (its state is no longer `RUNNING`).
//!
//! Spawning is one task block (the [`cell`] module's `Task`), taken from the executor's
//! [`pool`] of recycled blocks, so a steady spawn/join loop makes no allocator call; waking is
//! a slab lookup and a queue push; a task that finishes while its joiner waits on this core
//! queues the joiner directly (no trip through the waker's vtable and the thread-local core);
//! joining a finished task moves its output straight out of the block (the handle knows its
//! type, the vtable its offset) and gives the block back to the pool, with no call through the
//! vtable. A task's header keeps its waker word, so each poll's waker is one load.
//! The slab, queue and pool sit in flagless cells ([`Owned`]): only the executor's own short
//! methods touch them, and those never run foreign code while they do.
//!
//! Fairness: the core loop runs at most `budget` polls before it goes back to the ring, so a
//! task that keeps waking itself cannot starve I/O; tasks woken during a batch run in the next
//! one, in wake order.
//!
//! Cancellation: cancelling a task drops its future in place and frees its slot at once. A task
//! that cancels itself (through its own handle) is flagged and freed right after its poll.

pub(crate) mod cell;
pub(crate) mod pool;
pub(crate) mod queue;
pub(crate) mod raw;
pub(crate) mod task;
pub(crate) mod waker;

#[cfg(test)]
mod tests;

use std::cell::{Cell, UnsafeCell};
use std::future::Future;
use std::ptr::NonNull;
use std::task::{Context, Waker};

use cell::Task;
use pool::TaskPool;
use queue::RunQueue;
use raw::TaskPtr;
use task::JoinHandle;
use waker::{TaskRef, MAIN_TASK, MAX_TASKS};

struct Slot {
    generation: u32,
    task: Option<TaskPtr>,
    next_free: u32,
}

const NO_FREE: u32 = u32::MAX;

/// Counters the executor keeps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorStats {
    /// Tasks spawned.
    pub tasks_spawned: u64,
    /// Task polls (the main future's included).
    pub tasks_polled: u64,
    /// Tasks alive now.
    pub tasks_alive: u64,
    /// Tasks waiting in the run queue now.
    pub run_queue_depth: u64,
}

/// What [`Executor::run_one`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran {
    /// Polled a task.
    Task,
    /// The main future is next: the caller polls it.
    Main,
    /// Nothing was queued.
    Idle,
}

pub(crate) struct Executor {
    id: u16,
    slots: Owned<Vec<Slot>>,
    free_head: Cell<u32>,
    alive: Cell<usize>,
    /// Queued tasks, each entry owning a reference; `None` is the main future's turn.
    queue: Owned<RunQueue>,
    pool: Owned<TaskPool>,
    main_woken: Cell<bool>,
    spawned: Cell<u64>,
    polled: Cell<u64>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("id", &self.id)
            .field("alive", &self.alive.get())
            .field("queued", &self.queued())
            .finish()
    }
}

impl Executor {
    pub(crate) fn new(id: u16) -> Executor {
        // The main future's first turn.
        let mut queue = RunQueue::new();
        queue.push(None);
        Executor {
            id,
            slots: Owned::new(Vec::new()),
            free_head: Cell::new(NO_FREE),
            alive: Cell::new(0),
            queue: Owned::new(queue),
            pool: Owned::new(TaskPool::new()),
            main_woken: Cell::new(true),
            spawned: Cell::new(0),
            polled: Cell::new(0),
        }
    }

    pub(crate) fn id(&self) -> u16 {
        self.id
    }

    pub(crate) fn stats(&self) -> ExecutorStats {
        ExecutorStats {
            tasks_spawned: self.spawned.get(),
            tasks_polled: self.polled.get(),
            tasks_alive: self.alive.get() as u64,
            run_queue_depth: self.queued() as u64,
        }
    }

    #[inline]
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        // SAFETY: allocating runs no foreign code.
        let task = Task::allocate(future, unsafe { self.pool.get() });
        // Three owners: the slot, the queue entry, the handle. (Scheduled from the start.)
        task.header().scheduled.set(true);
        let handle = task.clone();
        // SAFETY: a push runs no foreign code.
        unsafe { self.queue.get() }.push(Some(task.clone()));
        let task_ref = self.insert(task);
        handle.header().word.set(waker::encode(self.id, task_ref));
        self.spawned.set(self.spawned.get() + 1);
        // SAFETY: `task` was made for `F`, whose output is the handle's `T`.
        unsafe { JoinHandle::new(handle) }
    }

    /// Keeps a task block for reuse (see [`pool`]); gives it back if its class is full.
    #[inline]
    pub(crate) fn recycle(&self, class: usize, block: NonNull<u8>) -> Result<(), NonNull<u8>> {
        // SAFETY: a put runs no foreign code.
        unsafe { self.pool.get() }.put(class, block)
    }

    /// Task blocks kept for reuse.
    #[cfg(test)]
    pub(crate) fn pooled(&self) -> usize {
        // SAFETY: a read runs no foreign code.
        unsafe { self.pool.get() }.idle()
    }

    /// Puts `task` in a free slot and counts it alive.
    #[inline(always)]
    fn insert(&self, task: TaskPtr) -> TaskRef {
        // SAFETY: slab bookkeeping only; the slot it fills is free (holds no task to drop).
        let slots = unsafe { self.slots.get() };
        self.alive.set(self.alive.get() + 1);
        let head = self.free_head.get();
        if head != NO_FREE {
            let slot = &mut slots[head as usize];
            self.free_head.set(slot.next_free);
            // A free slot holds no task: nothing to drop.
            std::mem::forget(slot.task.replace(task));
            return TaskRef {
                index: head,
                generation: slot.generation,
            };
        }
        let index = slots.len() as u32;
        assert!(index < MAX_TASKS, "more than {MAX_TASKS} tasks on one core");
        slots.push(Slot {
            generation: 0,
            task: Some(task),
            next_free: NO_FREE,
        });
        TaskRef {
            index,
            generation: 0,
        }
    }

    /// Frees the slot of a finished or cancelled task.
    #[inline]
    pub(crate) fn remove(&self, task: TaskRef) {
        let removed = {
            // SAFETY: slab bookkeeping only; the task is moved out, dropped after.
            let slots = unsafe { self.slots.get() };
            let Some(slot) = slots.get_mut(task.index as usize) else {
                return;
            };
            if slot.generation != task.generation {
                return;
            }
            let Some(removed) = slot.task.take() else {
                return;
            };
            slot.generation = TaskRef::next_generation(slot.generation);
            slot.next_free = self.free_head.get();
            self.free_head.set(task.index);
            self.alive.set(self.alive.get() - 1);
            removed
        };
        // Dropped outside the borrow: the last reference may run arbitrary destructors.
        drop(removed);
    }

    /// Frees the slot of a task the run loop has just polled or cancelled to its end. Its slot
    /// is still its own: nothing removes a task while it is being polled (a cancel during its
    /// poll only sets its flag, and the loop cancels it right after the poll), nor once it has
    /// finished (there is nothing left to cancel) while the loop wakes its joiner.
    #[inline]
    fn remove_polled(&self, task: TaskRef) {
        let removed = {
            // SAFETY: slab bookkeeping only; the task is moved out, dropped after.
            let slots = unsafe { self.slots.get() };
            let slot = &mut slots[task.index as usize];
            debug_assert!(slot.generation == task.generation && slot.task.is_some());
            slot.generation = TaskRef::next_generation(slot.generation);
            slot.next_free = self.free_head.get();
            self.free_head.set(task.index);
            self.alive.set(self.alive.get() - 1);
            slot.task.take()
        };
        // Dropped outside the borrow: the last reference may run arbitrary destructors.
        drop(removed);
    }

    /// Queues a task woken on this core (the main future takes its turn in the same queue).
    #[inline]
    pub(crate) fn schedule(&self, task: TaskRef) {
        // SAFETY: a lookup and a count increment run no foreign code.
        let slots = unsafe { self.slots.get() };
        let Some(slot) = slots.get(task.index as usize) else {
            // The main future's index is past every slot (`MAX_TASKS`).
            if task.index == MAIN_TASK && !self.main_woken.replace(true) {
                // SAFETY: a push runs no foreign code.
                unsafe { self.queue.get() }.push(None);
            }
            return;
        };
        if slot.generation != task.generation {
            return;
        }
        let Some(ptr) = &slot.task else {
            return;
        };
        let header = ptr.header();
        if header.scheduled.replace(true) {
            return;
        }
        prefetch_block(header);
        let queued = ptr.clone();
        // SAFETY: a push runs no foreign code.
        unsafe { self.queue.get() }.push(Some(queued));
    }

    /// Wakes `waker`: straight onto this queue when it is a waker of this executor's (the
    /// common case of a task finishing while its joiner waits here), else through its vtable.
    #[inline]
    pub(crate) fn wake(&self, waker: Waker) {
        match waker::local_target(&waker) {
            Some((executor, task)) if executor == self.id => {
                // Our wakers' drop does nothing: skip the call through the vtable.
                std::mem::forget(waker);
                self.schedule(task);
            }
            _ => waker.wake(),
        }
    }

    fn queued(&self) -> usize {
        // SAFETY: a read runs no foreign code.
        unsafe { self.queue.get() }.len()
    }

    pub(crate) fn count_poll(&self) {
        self.polled.set(self.polled.get() + 1);
    }

    pub(crate) fn has_runnable(&self) -> bool {
        self.queued() != 0
    }

    /// Polls the next queued task, or says that the main future's turn has come.
    #[inline]
    pub(crate) fn run_one(&self) -> Ran {
        loop {
            // SAFETY: a pop runs no foreign code.
            let Some(entry) = (unsafe { self.queue.get() }).pop() else {
                return Ran::Idle;
            };
            let Some(task) = entry else {
                self.main_woken.set(false);
                return Ran::Main;
            };
            let header = task.header();
            header.scheduled.set(false);
            if header.state.get() != raw::state::RUNNING {
                // Cancelled (or finished) while it waited in the queue: its slot is gone.
                continue;
            }
            let word = header.word.get();
            self.polled.set(self.polled.get() + 1);
            // Our wakers' drop does nothing: `ManuallyDrop` skips the call through the vtable.
            let waker = std::mem::ManuallyDrop::new(waker::from_word(word));
            let mut cx = Context::from_waker(&waker);
            // SAFETY: `RUNNING`, and not busy: only this loop polls a task, and it does not
            // run inside a poll.
            if unsafe { task.poll(&mut cx) } {
                // Finished: a joiner waiting on this core is queued straight away.
                if let Some(w) = header.join_waker.take() {
                    self.wake(w);
                }
                self.remove_polled(waker::decode(word).1);
            } else if task.cancel_requested() && task.cancel() {
                // It cancelled itself during the poll: cancelled now.
                self.remove_polled(waker::decode(word).1);
            }
            return Ran::Task;
        }
    }

    /// Cancels every task (drops every future), including tasks their destructors spawn.
    pub(crate) fn cancel_all(&self) {
        loop {
            let tasks: Vec<(TaskRef, TaskPtr)> = {
                // SAFETY: collecting clones runs no foreign code.
                let slots = unsafe { self.slots.get() };
                slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        s.task.as_ref().map(|t| {
                            (
                                TaskRef {
                                    index: i as u32,
                                    generation: s.generation,
                                },
                                t.clone(),
                            )
                        })
                    })
                    .collect()
            };
            if tasks.is_empty() {
                break;
            }
            for (task_ref, task) in tasks {
                task.cancel();
                self.remove(task_ref);
            }
        }
        // Dropped outside the borrow: a last reference may run a result's destructor.
        // SAFETY: taking the queue runs no foreign code.
        let queued = std::mem::replace(unsafe { self.queue.get() }, RunQueue::new());
        drop(queued);
    }
}

/// Executor state that only the executor's own short methods touch, and that never run anyone
/// else's code (a future, a destructor of a task or a result, a waker) while they hold it: a
/// `RefCell` whose borrow flag could never be seen set, so the flag is left out.
struct Owned<T>(UnsafeCell<T>);

impl<T> Owned<T> {
    fn new(value: T) -> Owned<T> {
        Owned(UnsafeCell::new(value))
    }

    /// # Safety
    ///
    /// No other reference from this cell is alive while the result lives: the caller runs no
    /// foreign code (futures, destructors of tasks or results, wakers) until it drops it, and
    /// drops it before calling any executor method that takes the same cell.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self) -> &mut T {
        // SAFETY: the caller's duty; the executor is `!Sync`, so no other thread shares it.
        unsafe { &mut *self.0.get() }
    }
}

/// How much of a woken task's block is prefetched. A load connection's block is ~17 lines;
/// asking for its first 8 measured less user time per request than asking for 16 in 7 of 8
/// alternating rounds (0.85–1.02x; `percore load` against nginx, 64 connections; 4 lines fell
/// between). Likely why: a core tracks only ~10–12 outstanding misses, so a long run of
/// prefetches for one task stalls behind itself and delays the next task's.
const PREFETCHED_BLOCK: usize = 512;

/// Asks the CPU to start loading a woken task's block (its future's state) into the cache, so
/// the misses overlap the rest of the turn's work instead of stalling the task's poll. Only
/// the block's first [`PREFETCHED_BLOCK`] bytes are asked for.
#[inline]
fn prefetch_block(header: &raw::Header) {
    crate::prefetch::prefetch(
        (header as *const raw::Header).cast::<u8>(),
        header.vtable.layout.size().min(PREFETCHED_BLOCK),
    );
}
