//! [`WaitQueue`]: the FIFO parking lot every primitive in this module is built on.
//!
//! # Layout
//!
//! Waiters live in a slab: a `Vec` of entries plus an intrusive free list of vacant
//! slots. Every entry carries a generation that is bumped when its slot is freed, so
//! a [`WaiterKey`] (index + generation) is validated in O(1). Entries that are still
//! waiting are linked into a doubly-linked FIFO list *by index* (`prev`/`next`), so
//! registering (push back), notifying (pop front) and cancelling (unlink from
//! anywhere) are all O(1), and nothing allocates once the slab has grown to the peak
//! number of simultaneous waiters.
//!
//! # Life cycle of an entry
//!
//! ```text
//! register ──► Waiting ──notify──► Notified ──cancel──► Vacant
//!                 │                                       ▲
//!                 └─────────────────cancel────────────────┘
//! ```
//!
//! A notified entry leaves the FIFO list (it no longer counts in [`WaitQueue::len`])
//! but keeps its slot until its owner retires it with [`WaitQueue::cancel`], which
//! reports whether the notification had arrived. That one bit is what makes
//! cancellation lossless: the owner of a notified entry that is being dropped knows
//! it was handed something and passes it on to the next waiter.
//!
//! # Re-entrancy
//!
//! The queue never runs foreign code while its `RefCell` is borrowed: wakers are
//! cloned before and woken after the borrow, and replaced or removed wakers and tags
//! are dropped after it is released. A waker whose `wake`, `clone` or `drop`
//! re-enters the queue (or the primitive owning it) cannot cause a `BorrowMutError`.

use std::cell::RefCell;
use std::fmt;
use std::mem;
use std::task::Waker;

/// "No entry" marker for list links and the free list.
const NIL: usize = usize::MAX;

/// Ticket for one waiter registered in a [`WaitQueue`].
///
/// Not `Clone`: a key is consumed by [`WaitQueue::cancel`], so it cannot be used
/// after its entry was freed.
#[derive(Debug)]
#[must_use = "a WaiterKey must be given back to `WaitQueue::cancel`, otherwise the entry leaks and may swallow a notification"]
pub struct WaiterKey {
    index: usize,
    generation: u32,
}

/// A FIFO queue of parked tasks, each identified by a [`WaiterKey`].
///
/// Every waiter can carry a *tag* of type `T` (by default `()`), set at
/// registration; [`front_tag`](Self::front_tag) reads the head's, e.g. the number
/// of permits a semaphore waiter asks for.
///
/// The owner of a key must eventually pass it to [`cancel`](Self::cancel), both when
/// it gives up and when it has acted on a notification. A key must only be used with
/// the queue that issued it.
///
/// # Examples
///
/// ```
/// # use percore_engine::sync::WaitQueue;
/// use std::task::Waker;
///
/// let queue = WaitQueue::new();
/// let first = queue.register(Waker::noop());
/// let second = queue.register(Waker::noop());
/// assert!(queue.notify_one()); // wakes `first`
/// assert!(queue.is_notified(&first) && !queue.is_notified(&second));
/// // `first` gives up after being notified: it reports that, so the caller can pass
/// // the notification on.
/// if queue.cancel(first) {
///     queue.notify_one();
/// }
/// assert!(queue.cancel(second));
/// ```
pub struct WaitQueue<T = ()> {
    slab: RefCell<Slab<T>>,
}

struct Slab<T> {
    entries: Vec<Entry<T>>,
    /// Head of the free list of vacant slots.
    free: usize,
    /// Oldest waiting entry.
    head: usize,
    /// Newest waiting entry.
    tail: usize,
    /// Number of entries in the `Waiting` state (= length of the FIFO list).
    waiting: usize,
}

struct Entry<T> {
    generation: u32,
    slot: Slot<T>,
}

enum Slot<T> {
    Vacant {
        next_free: usize,
    },
    Waiting {
        waker: Waker,
        tag: T,
        prev: usize,
        next: usize,
    },
    Notified,
}

impl<T> Slab<T> {
    fn insert(&mut self, waker: Waker, tag: T) -> WaiterKey {
        let slot = Slot::Waiting {
            waker,
            tag,
            prev: self.tail,
            next: NIL,
        };
        let index = if self.free == NIL {
            self.entries.push(Entry {
                generation: 0,
                slot,
            });
            self.entries.len() - 1
        } else {
            let index = self.free;
            let entry = &mut self.entries[index];
            let Slot::Vacant { next_free } = entry.slot else {
                unreachable!("free list points at an occupied slot")
            };
            self.free = next_free;
            entry.slot = slot;
            index
        };
        match self.tail {
            NIL => self.head = index,
            tail => *self.links_mut(tail).1 = index,
        }
        self.tail = index;
        self.waiting += 1;
        WaiterKey {
            index,
            generation: self.entries[index].generation,
        }
    }

    fn links_mut(&mut self, index: usize) -> (&mut usize, &mut usize) {
        match &mut self.entries[index].slot {
            Slot::Waiting { prev, next, .. } => (prev, next),
            _ => unreachable!("linked entry is not waiting"),
        }
    }

    /// Closes the gap left by a waiting entry whose neighbours are `prev` and `next`.
    fn unlink(&mut self, prev: usize, next: usize) {
        match prev {
            NIL => self.head = next,
            prev => *self.links_mut(prev).1 = next,
        }
        match next {
            NIL => self.tail = prev,
            next => *self.links_mut(next).0 = prev,
        }
        self.waiting -= 1;
    }

    fn slot(&self, key: &WaiterKey) -> &Slot<T> {
        match self.entries.get(key.index) {
            Some(entry)
                if entry.generation == key.generation
                    && !matches!(entry.slot, Slot::Vacant { .. }) =>
            {
                &entry.slot
            }
            _ => panic!("WaiterKey used with a WaitQueue that did not issue it"),
        }
    }

    /// Moves the head to `Notified`, returning its waker and tag.
    fn pop_front(&mut self) -> Option<(Waker, T)> {
        if self.head == NIL {
            return None;
        }
        let index = self.head;
        let Slot::Waiting {
            waker,
            tag,
            prev,
            next,
        } = mem::replace(&mut self.entries[index].slot, Slot::Notified)
        else {
            unreachable!("list head is not waiting")
        };
        self.unlink(prev, next);
        Some((waker, tag))
    }

    fn remove(&mut self, key: WaiterKey) -> Slot<T> {
        self.slot(&key);
        let entry = &mut self.entries[key.index];
        entry.generation = entry.generation.wrapping_add(1);
        let slot = mem::replace(
            &mut entry.slot,
            Slot::Vacant {
                next_free: self.free,
            },
        );
        self.free = key.index;
        if let Slot::Waiting { prev, next, .. } = slot {
            self.unlink(prev, next);
        }
        slot
    }
}

impl WaitQueue {
    /// Creates an empty queue whose waiters carry no tag.
    pub const fn new() -> Self {
        Self::with_tags()
    }

    /// Appends a waiter to the back of the queue; `waker` is woken when it is
    /// notified.
    pub fn register(&self, waker: &Waker) -> WaiterKey {
        self.register_tagged(waker, ())
    }
}

impl<T> WaitQueue<T> {
    /// Creates an empty queue whose waiters carry a tag of type `T`.
    pub const fn with_tags() -> Self {
        let slab = Slab {
            entries: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            waiting: 0,
        };
        Self {
            slab: RefCell::new(slab),
        }
    }

    /// Appends a waiter carrying `tag` to the back of the queue.
    pub fn register_tagged(&self, waker: &Waker, tag: T) -> WaiterKey {
        let waker = waker.clone();
        self.slab.borrow_mut().insert(waker, tag)
    }

    /// Replaces the waker of a waiter that has not been notified yet (no-op if it
    /// would wake the same task, or if the waiter was already notified).
    ///
    /// # Panics
    ///
    /// If `key` was not issued by this queue.
    pub fn update(&self, key: &WaiterKey, waker: &Waker) {
        let stale = match self.slab.borrow().slot(key) {
            Slot::Waiting { waker: old, .. } => !old.will_wake(waker),
            _ => false,
        };
        if stale {
            let mut new = waker.clone();
            if let Slot::Waiting { waker: old, .. } =
                &mut self.slab.borrow_mut().entries[key.index].slot
            {
                mem::swap(old, &mut new);
            }
            drop(new); // the old waker, dropped outside the borrow
        }
    }

    /// Whether the waiter has been notified.
    ///
    /// # Panics
    ///
    /// If `key` was not issued by this queue.
    pub fn is_notified(&self, key: &WaiterKey) -> bool {
        matches!(self.slab.borrow().slot(key), Slot::Notified)
    }

    /// The polling idiom: `true` if the waiter was notified, otherwise refreshes its
    /// waker (see [`update`](Self::update)) and returns `false`.
    ///
    /// # Panics
    ///
    /// If `key` was not issued by this queue.
    pub fn poll_notified(&self, key: &WaiterKey, waker: &Waker) -> bool {
        if self.is_notified(key) {
            return true;
        }
        self.update(key, waker);
        false
    }

    /// Retires a waiter in O(1), whether it is still queued or already notified, and
    /// returns whether it had been notified. A waiter that acted on its notification
    /// retires with this too; one that gives up after being notified must pass the
    /// notification on, or it is lost.
    ///
    /// # Panics
    ///
    /// If `key` was not issued by this queue.
    pub fn cancel(&self, key: WaiterKey) -> bool {
        let slot = self.slab.borrow_mut().remove(key);
        matches!(slot, Slot::Notified)
    }

    /// Notifies the oldest waiting waiter; returns `false` if nobody was waiting.
    pub fn notify_one(&self) -> bool {
        let popped = self.slab.borrow_mut().pop_front();
        match popped {
            Some((waker, _tag)) => {
                waker.wake();
                true
            }
            None => false,
        }
    }

    /// Notifies up to `n` waiters in FIFO order; returns how many were notified.
    pub fn notify_n(&self, n: usize) -> usize {
        let mut notified = 0;
        while notified < n && self.notify_one() {
            notified += 1;
        }
        notified
    }

    /// Notifies every waiter registered at the time of the call (not ones that a
    /// waker registers while being woken); returns how many were notified.
    pub fn notify_all(&self) -> usize {
        self.notify_n(self.len())
    }

    /// Number of waiters still waiting (notified ones are no longer counted).
    pub fn len(&self) -> usize {
        self.slab.borrow().waiting
    }

    /// Whether no waiter is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tag of the oldest waiting waiter, if any.
    pub fn front_tag(&self) -> Option<T>
    where
        T: Copy,
    {
        let slab = self.slab.borrow();
        match slab.entries.get(slab.head).map(|entry| &entry.slot) {
            Some(Slot::Waiting { tag, .. }) => Some(*tag),
            _ => None,
        }
    }
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        Self::with_tags()
    }
}

impl<T> fmt::Debug for WaitQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("WaitQueue");
        match self.slab.try_borrow() {
            Ok(slab) => d
                .field("waiting", &slab.waiting)
                .field("slots", &slab.entries.len())
                .finish(),
            Err(_) => d.finish_non_exhaustive(),
        }
    }
}

/// Where a future built on a [`WaitQueue`] is in its life.
#[derive(Debug)]
pub(crate) enum Stage {
    /// Not polled yet.
    Idle,
    /// Queued under this key.
    Waiting(WaiterKey),
    /// Returned `Ready` (or was dropped).
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_util::CountingWaker;
    use std::sync::Arc;
    use std::task::Wake;

    #[test]
    fn notifies_in_fifo_order() {
        let queue = WaitQueue::new();
        let wakers: Vec<_> = (0..3).map(|_| CountingWaker::new()).collect();
        let keys: Vec<_> = wakers.iter().map(|w| queue.register(w.waker())).collect();
        assert_eq!(queue.len(), 3);
        for (i, waker) in wakers.iter().enumerate() {
            assert!(queue.notify_one());
            assert_eq!(waker.count(), 1);
            assert!(wakers[i + 1..].iter().all(|w| w.count() == 0));
        }
        assert!(!queue.notify_one());
        assert!(queue.is_empty());
        assert!(keys.into_iter().all(|key| queue.cancel(key)));
    }

    #[test]
    fn cancel_unlinks_from_anywhere() {
        let queue = WaitQueue::new();
        let wakers: Vec<_> = (0..5).map(|_| CountingWaker::new()).collect();
        let mut keys: Vec<_> = wakers
            .iter()
            .map(|w| Some(queue.register(w.waker())))
            .collect();
        for i in [2, 0, 4] {
            assert!(!queue.cancel(keys[i].take().unwrap()), "not notified yet");
        }
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.notify_all(), 2);
        let counts: Vec<_> = wakers.iter().map(CountingWaker::count).collect();
        assert_eq!(counts, [0, 1, 0, 1, 0]);
        assert!(keys.into_iter().flatten().all(|key| queue.cancel(key)));
    }

    #[test]
    fn slots_are_reused_and_queue_stays_fifo() {
        let queue = WaitQueue::new();
        let a = CountingWaker::new();
        let b = CountingWaker::new();
        let key_a = queue.register(a.waker());
        let key_b = queue.register(b.waker());
        assert!(!queue.cancel(key_a));
        let key_c = queue.register(a.waker()); // reuses the first slot, queued after b
        assert_eq!(queue.slab.borrow().entries.len(), 2);
        assert_eq!(key_c.generation, 1);
        assert!(queue.notify_one());
        assert_eq!((a.count(), b.count()), (0, 1));
        assert!(queue.notify_one());
        assert_eq!(a.count(), 1);
        assert!(queue.cancel(key_b) && queue.cancel(key_c));
    }

    #[test]
    fn notify_n_and_all_count_only_waiting() {
        let queue = WaitQueue::new();
        let keys: Vec<_> = (0..4).map(|_| queue.register(Waker::noop())).collect();
        assert_eq!(queue.notify_n(3), 3);
        assert_eq!(queue.notify_n(3), 1);
        assert_eq!(queue.notify_all(), 0);
        let notified: Vec<_> = keys.iter().map(|key| queue.is_notified(key)).collect();
        assert_eq!(notified, [true; 4]);
        assert!(keys.into_iter().all(|key| queue.cancel(key)));
    }

    #[test]
    fn update_replaces_the_waker_until_notified() {
        let queue = WaitQueue::new();
        let old = CountingWaker::new();
        let new = CountingWaker::new();
        let key = queue.register(old.waker());
        assert!(!queue.poll_notified(&key, new.waker()));
        queue.notify_one();
        assert_eq!((old.count(), new.count()), (0, 1));
        queue.update(&key, old.waker()); // no-op once notified
        assert!(queue.poll_notified(&key, old.waker()));
        assert!(queue.cancel(key));
    }

    #[test]
    fn front_tag_follows_the_head() {
        let queue = WaitQueue::<usize>::with_tags();
        assert_eq!(queue.front_tag(), None);
        let a = queue.register_tagged(Waker::noop(), 5);
        let b = queue.register_tagged(Waker::noop(), 7);
        assert_eq!(queue.front_tag(), Some(5));
        assert!(!queue.cancel(a));
        assert_eq!(queue.front_tag(), Some(7));
        queue.notify_one();
        assert_eq!(queue.front_tag(), None);
        assert!(queue.cancel(b));
    }

    #[test]
    #[should_panic(expected = "did not issue it")]
    fn foreign_key_panics() {
        let one = WaitQueue::new();
        let other = WaitQueue::new();
        let key = one.register(Waker::noop());
        let _ = other.is_notified(&key);
    }

    thread_local! {
        static QUEUE: WaitQueue = const { WaitQueue::new() };
    }

    /// A waker that re-enters the queue from `wake`: registers and notifies again.
    struct Reentrant;

    impl Wake for Reentrant {
        fn wake(self: Arc<Self>) {
            QUEUE.with(|queue| {
                let key = queue.register(Waker::noop());
                assert!(queue.notify_one());
                assert!(queue.cancel(key));
            });
        }
    }

    #[test]
    fn wakers_may_reenter_the_queue() {
        let waker = Waker::from(Arc::new(Reentrant));
        QUEUE.with(|queue| {
            let key = queue.register(&waker);
            queue.update(&key, Waker::noop()); // drops `waker`'s clone outside the borrow
            queue.update(&key, &waker);
            assert_eq!(queue.notify_all(), 1);
            assert!(queue.cancel(key));
            assert!(queue.is_empty());
        });
    }
}
