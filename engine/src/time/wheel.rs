//! Hierarchical timing wheel: the timer store of one core's event loop.
//!
//! # Ticks
//! Time is counted in 1 µs ticks since `origin`. A deadline is rounded UP to
//! a whole tick, a `now` passed to [`Wheel::expire`] is rounded DOWN, and a
//! timer fires when `deadline_tick <= now_tick`, so it never fires before its
//! deadline. Deadlines before `origin` are tick 0 and an `expire` with
//! `now < origin` fires nothing. Deadline ticks saturate at `u64::MAX`, which
//! means "never": `now` ticks saturate at `u64::MAX - 1` (≈ 584,000 years).
//!
//! # Levels
//! `LEVELS` = 9 levels of 64 slots (tokio's scheme): a level-k slot covers
//! 64^k ticks, level k as a whole 64^(k+1) ticks, so the wheel spans 2^54
//! ticks (≈ 571 years). A timer with tick `t > elapsed` lives at the level of
//! the most significant 6-bit digit in which `t` and `elapsed` differ, in the
//! slot given by that digit of `t`. Timers that differ from `elapsed` above
//! bit 54 wait in the overflow list, timers with `t <= elapsed` (deadline
//! already passed when inserted) in the due list.
//!
//! # Invariants
//! * Every pending timer is in exactly the list the rule above gives for the
//!   current `elapsed`. Hence every occupied slot of level k is strictly
//!   after digit k of `elapsed`, any slot of a lower level starts before any
//!   slot of a higher level, and all timers with the same tick share a list.
//! * `elapsed` never moves past the start of an occupied slot: `expire`
//!   visits occupied slots in start order, sets `elapsed` to the slot start,
//!   fires the timers whose tick equals it and re-places (cascades) the rest
//!   one or more levels down. A timer cascades at most `LEVELS` times.
//! * Each level keeps a bitmap of its non-empty slots, and each list a lower
//!   bound `min_tick` of its ticks (exact unless a timer was cancelled), which
//!   makes `next_deadline` O(levels) and usually exact.
//!
//! # Storage and ownership
//! Timers live in a slab (`Vec<Entry>`, 40 bytes each; its free list is
//! threaded through `next`). Lists are intrusive doubly linked lists of slab
//! indices, so insert and cancel are O(1) and allocation-free once the slab
//! has grown; it never shrinks. The wheel owns the wakers until `expire` moves
//! them to the caller or `cancel` drops them. A [`TimerKey`] is slab index +
//! generation; the generation is bumped (wrapping, skipping 0) whenever an
//! entry is freed, which makes every older key for it stale.
//!
//! # Firing order
//! Within one `expire`, timers fire in tick order, and timers with the same
//! tick in insertion order (FIFO): inserts and cascades both append to the
//! tail of a list. Exception: timers inserted with a deadline not after the
//! `now` of the latest `expire` (the due list) fire first, in insertion order.

use std::task::Waker;
use std::time::{Duration, Instant};

/// Bits of a tick consumed by one level.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Number of levels; the wheel spans `2^(SLOT_BITS * LEVELS)` ticks.
const LEVELS: usize = 9;
/// Ticks that differ from `elapsed` at or above this bit go to the overflow list.
const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;
/// List index of the due list (deadline already passed at insertion).
const DUE: usize = LEVELS * SLOTS;
/// List index of the overflow list (beyond the top level).
const OVERFLOW: usize = DUE + 1;
/// Total number of lists: the slots of all levels, then due and overflow.
const LISTS: usize = OVERFLOW + 1;
/// Null slab index.
const NIL: u32 = u32::MAX;
/// The tick that is never reached.
const NEVER: u64 = u64::MAX;

/// Identifies one inserted timer. Copy, 8 bytes: slab index + generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerKey {
    /// Slab index of the entry.
    index: u32,
    /// Generation of the entry when the timer was inserted; never 0.
    generation: u32,
}

/// One slab slot: a pending timer, or a vacant slot on the free list.
#[derive(Debug)]
struct Entry {
    /// The waker to fire; `None` iff the slot is vacant.
    waker: Option<Waker>,
    /// Deadline tick (rounded up).
    tick: u64,
    /// Previous entry in the list, or `NIL`.
    prev: u32,
    /// Next entry in the list (or on the free list), or `NIL`.
    next: u32,
    /// Bumped on every free; keys with another generation are stale.
    generation: u32,
    /// Index of the list holding the entry, or `NIL` when vacant.
    list: u32,
}

/// Head, tail and tick lower bound of one intrusive list.
#[derive(Debug, Clone, Copy)]
struct List {
    /// First entry, or `NIL` if the list is empty.
    head: u32,
    /// Last entry, or `NIL` if the list is empty.
    tail: u32,
    /// Lower bound of the ticks in the list (`NEVER` when empty).
    min_tick: u64,
}

impl List {
    /// An empty list.
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        min_tick: NEVER,
    };
}

/// Hierarchical timing wheel with 1 µs resolution, see the module docs.
#[derive(Debug)]
pub(crate) struct Wheel {
    /// Instant of tick 0.
    origin: Instant,
    /// Current wheel time in ticks: every tick `<= elapsed` has been processed.
    elapsed: u64,
    /// The slab of timer entries.
    entries: Vec<Entry>,
    /// First vacant slab slot, or `NIL`.
    free_head: u32,
    /// Number of pending timers.
    len: usize,
    /// `LEVELS * SLOTS` slot lists, then the due and overflow lists.
    lists: Box<[List]>,
    /// Per level, bit `s` is set iff slot `s` is non-empty.
    occupied: [u64; LEVELS],
}

/// Ticks from `origin` to `deadline`, rounded up; 0 before `origin`, saturating.
fn deadline_tick(origin: Instant, deadline: Instant) -> u64 {
    match deadline.checked_duration_since(origin) {
        Some(d) => u64::try_from(d.as_nanos().div_ceil(1_000)).unwrap_or(NEVER),
        None => 0,
    }
}

/// Ticks from `origin` to `now`, rounded down and saturating below `NEVER`.
fn now_tick(since_origin: Duration) -> u64 {
    u64::try_from(since_origin.as_micros()).map_or(NEVER - 1, |t| t.min(NEVER - 1))
}

impl Wheel {
    /// Creates an empty wheel whose tick 0 is `origin`; ticks are 1 µs.
    pub(crate) fn new(origin: Instant) -> Self {
        Wheel {
            origin,
            elapsed: 0,
            entries: Vec::new(),
            free_head: NIL,
            len: 0,
            lists: vec![List::EMPTY; LISTS].into_boxed_slice(),
            occupied: [0; LEVELS],
        }
    }

    /// Inserts a timer firing at `deadline` (rounded up to the next µs); a
    /// deadline that has already passed fires on the next `expire`. O(1).
    ///
    /// # Panics
    /// Only if more than `u32::MAX - 1` timers are pending at once (which
    /// needs over 160 GiB), like `Vec`'s capacity overflow.
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> TimerKey {
        let tick = deadline_tick(self.origin, deadline);
        let index = self.alloc(tick, waker);
        self.push_back(self.list_for(tick), index);
        TimerKey {
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Replaces the stored waker if the timer is still pending (no clone when
    /// `will_wake` says it is the same). Returns false if the key is stale
    /// (the timer already fired or was cancelled).
    pub(crate) fn update_waker(&mut self, key: TimerKey, waker: &Waker) -> bool {
        let Some(index) = self.live(key) else {
            return false;
        };
        if let Some(stored) = &mut self.entries[index as usize].waker {
            if !stored.will_wake(waker) {
                *stored = waker.clone();
            }
        }
        true
    }

    /// Removes a pending timer and drops its waker. O(1). Returns false if
    /// the key is stale.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> bool {
        let Some(index) = self.live(key) else {
            return false;
        };
        self.unlink(index);
        drop(self.free(index));
        true
    }

    /// The earliest deadline among pending timers, or `None` if there is none
    /// (or it lies beyond what `Instant` can represent, so it can never fire).
    /// O(levels). Never later than the first instant at which `expire` would
    /// fire a timer, i.e. the earliest deadline rounded up to its tick; it is
    /// earlier than that only after cancellations (a stale lower bound), and
    /// it can exceed the raw `deadline` given to `insert` by less than 1 µs.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let tick = if self.lists[DUE].head != NIL {
            self.lists[DUE].min_tick
        } else if let Some((level, bits)) = (0..LEVELS)
            .map(|level| (level, self.occupied[level]))
            .find(|&(_, bits)| bits != 0)
        {
            self.lists[level * SLOTS + bits.trailing_zeros() as usize].min_tick
        } else if self.lists[OVERFLOW].head != NIL {
            self.lists[OVERFLOW].min_tick
        } else {
            return None;
        };
        self.origin.checked_add(Duration::from_micros(tick))
    }

    /// Fires every timer whose deadline is `<= now`: removes it (its key
    /// becomes stale) and pushes its waker onto `fired`, in the order given in
    /// the module docs. Costs O(fired + cascaded + LEVELS per occupied slot
    /// visited); empty slots are skipped through the bitmaps. A `now` earlier
    /// than a previous one is allowed and fires only what is due by it.
    pub(crate) fn expire(&mut self, now: Instant, fired: &mut Vec<Waker>) {
        let Some(since) = now.checked_duration_since(self.origin) else {
            return;
        };
        let now = now_tick(since);
        self.fire_due(now, fired);
        while let Some((list, start)) = self.next_slot() {
            if start > now {
                break;
            }
            debug_assert!(start > self.elapsed, "slot start behind the wheel");
            self.elapsed = start;
            let mut cur = self.take_list(list);
            while cur != NIL {
                let next = self.entries[cur as usize].next;
                let tick = self.entries[cur as usize].tick;
                if tick <= start {
                    fired.extend(self.free(cur));
                } else {
                    self.push_back(self.list_for(tick), cur);
                }
                cur = next;
            }
        }
        self.elapsed = self.elapsed.max(now);
    }

    /// Number of pending timers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True if no timer is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fires the due-list timers with tick `<= now`, keeping the others in order.
    fn fire_due(&mut self, now: u64, fired: &mut Vec<Waker>) {
        if self.lists[DUE].min_tick > now {
            return;
        }
        let mut cur = self.take_list(DUE);
        while cur != NIL {
            let next = self.entries[cur as usize].next;
            if self.entries[cur as usize].tick <= now {
                fired.extend(self.free(cur));
            } else {
                self.push_back(DUE, cur);
            }
            cur = next;
        }
    }

    /// The occupied list with the earliest start and that start tick: the
    /// first occupied slot of the lowest non-empty level, else the overflow
    /// list (starting at the 2^54 boundary below its smallest tick).
    fn next_slot(&self) -> Option<(usize, u64)> {
        for (level, &bits) in self.occupied.iter().enumerate() {
            if bits != 0 {
                let slot = u64::from(bits.trailing_zeros());
                let shift = level as u32 * SLOT_BITS;
                let level_start = self.elapsed & !((1u64 << (shift + SLOT_BITS)) - 1);
                return Some((level * SLOTS + slot as usize, level_start + (slot << shift)));
            }
        }
        let overflow = &self.lists[OVERFLOW];
        (overflow.head != NIL).then_some((OVERFLOW, overflow.min_tick >> WHEEL_BITS << WHEEL_BITS))
    }

    /// The list a timer with `tick` belongs in for the current `elapsed`.
    fn list_for(&self, tick: u64) -> usize {
        if tick <= self.elapsed {
            return DUE;
        }
        let masked = (self.elapsed ^ tick) | (SLOTS as u64 - 1);
        let level = ((63 - masked.leading_zeros()) / SLOT_BITS) as usize;
        if level >= LEVELS {
            return OVERFLOW;
        }
        let slot = (tick >> (level as u32 * SLOT_BITS)) as usize & (SLOTS - 1);
        level * SLOTS + slot
    }

    /// Slab index of the pending timer `key` refers to, or `None` if stale.
    fn live(&self, key: TimerKey) -> Option<u32> {
        let entry = self.entries.get(key.index as usize)?;
        (entry.generation == key.generation && entry.waker.is_some()).then_some(key.index)
    }

    /// Stores a new timer in a vacant slab slot (or a new one) and returns its index.
    fn alloc(&mut self, tick: u64, waker: Waker) -> u32 {
        let index = if self.free_head != NIL {
            let index = self.free_head;
            let entry = &mut self.entries[index as usize];
            self.free_head = entry.next;
            entry.waker = Some(waker);
            entry.tick = tick;
            index
        } else {
            let index = match u32::try_from(self.entries.len()) {
                Ok(index) if index != NIL => index,
                _ => panic!("timer wheel: more than u32::MAX - 1 pending timers"),
            };
            self.entries.push(Entry {
                waker: Some(waker),
                tick,
                prev: NIL,
                next: NIL,
                generation: 1,
                list: NIL,
            });
            index
        };
        self.len += 1;
        index
    }

    /// Frees an (already unlinked) entry, staling its keys; returns its waker.
    fn free(&mut self, index: u32) -> Option<Waker> {
        let entry = &mut self.entries[index as usize];
        let waker = entry.waker.take();
        entry.generation = entry.generation.wrapping_add(1).max(1);
        entry.list = NIL;
        entry.prev = NIL;
        entry.next = self.free_head;
        self.free_head = index;
        self.len -= 1;
        waker
    }

    /// Appends entry `index` to list `list`.
    fn push_back(&mut self, list: usize, index: u32) {
        let tail = self.lists[list].tail;
        let entry = &mut self.entries[index as usize];
        entry.prev = tail;
        entry.next = NIL;
        entry.list = list as u32;
        let tick = entry.tick;
        if tail == NIL {
            self.lists[list].head = index;
            if list < DUE {
                self.occupied[list / SLOTS] |= 1 << (list % SLOTS);
            }
        } else {
            self.entries[tail as usize].next = index;
        }
        let head = &mut self.lists[list];
        head.tail = index;
        head.min_tick = head.min_tick.min(tick);
    }

    /// Unlinks entry `index` from its list in O(1).
    fn unlink(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        let (prev, next, list) = (entry.prev, entry.next, entry.list as usize);
        if prev == NIL {
            self.lists[list].head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[list].tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        if self.lists[list].head == NIL {
            self.clear_list(list);
        }
    }

    /// Detaches the whole of list `list` and returns its first entry; the
    /// entries keep their `next` links until re-placed or freed.
    fn take_list(&mut self, list: usize) -> u32 {
        let head = self.lists[list].head;
        self.clear_list(list);
        head
    }

    /// Marks list `list` empty.
    fn clear_list(&mut self, list: usize) {
        self.lists[list] = List::EMPTY;
        if list < DUE {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::task::Wake;

    /// A waker that logs its id when woken.
    struct Probe {
        id: usize,
        log: Arc<Mutex<Vec<usize>>>,
    }

    impl Wake for Probe {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.log.lock().unwrap().push(self.id);
        }
    }

    /// Makes probe wakers and turns fired wakers back into ids.
    #[derive(Default)]
    struct Harness {
        log: Arc<Mutex<Vec<usize>>>,
        fired: Vec<Waker>,
    }

    impl Harness {
        fn waker(&self, id: usize) -> Waker {
            Waker::from(Arc::new(Probe {
                id,
                log: self.log.clone(),
            }))
        }
        fn expire(&mut self, wheel: &mut Wheel, now: Instant) -> Vec<usize> {
            wheel.expire(now, &mut self.fired);
            for waker in self.fired.drain(..) {
                waker.wake();
            }
            std::mem::take(&mut *self.log.lock().unwrap())
        }
    }

    /// Deterministic xorshift64 generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn at(origin: Instant, us: u64) -> Instant {
        origin.checked_add(Duration::from_micros(us)).unwrap()
    }

    fn level_of(wheel: &Wheel, key: TimerKey) -> usize {
        wheel.entries[key.index as usize].list as usize / SLOTS
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<TimerKey>(), 8);
        assert!(std::mem::size_of::<Entry>() <= 40);
    }

    #[test]
    fn fires_in_deadline_order() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut h = Harness::default();
        let ticks = [500u64, 3, 70_000, 64, 1, 4096, 63, 9_999_999, 65];
        for (id, &t) in ticks.iter().enumerate() {
            wheel.insert(at(origin, t), h.waker(id));
        }
        assert_eq!(wheel.len(), ticks.len());
        assert_eq!(wheel.next_deadline(), Some(at(origin, 1)));
        assert!(h.expire(&mut wheel, at(origin, 0)).is_empty());
        assert_eq!(h.expire(&mut wheel, at(origin, 64)), vec![4, 1, 6, 3]);
        assert_eq!(wheel.next_deadline(), Some(at(origin, 65)));
        assert_eq!(
            h.expire(&mut wheel, at(origin, u64::MAX >> 8)),
            vec![8, 0, 5, 2, 7]
        );
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn never_early_sub_microsecond() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut h = Harness::default();
        let deadline = origin + Duration::from_nanos(10_500);
        wheel.insert(deadline, h.waker(1));
        assert_eq!(wheel.next_deadline(), Some(at(origin, 11)));
        assert!(h.expire(&mut wheel, deadline).is_empty());
        assert!(h
            .expire(&mut wheel, origin + Duration::from_nanos(10_999))
            .is_empty());
        assert_eq!(h.expire(&mut wheel, at(origin, 11)), vec![1]);
        // Before origin: tick 0, but `now < origin` fires nothing.
        let early = origin.checked_sub(Duration::from_secs(1)).unwrap_or(origin);
        wheel.insert(early, h.waker(2));
        let mut fresh = Wheel::new(origin);
        fresh.insert(early, h.waker(3));
        assert_eq!(fresh.next_deadline(), Some(origin));
        if let Some(before) = early.checked_sub(Duration::from_secs(1)) {
            assert!(h.expire(&mut fresh, before).is_empty());
        }
        assert_eq!(h.expire(&mut fresh, origin), vec![3]);
        assert_eq!(h.expire(&mut wheel, at(origin, 11)), vec![2]);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut h = Harness::default();
        assert!(h.expire(&mut wheel, at(origin, 1_000)).is_empty());
        wheel.insert(at(origin, 2_000), h.waker(0));
        wheel.insert(at(origin, 900), h.waker(1));
        wheel.insert(at(origin, 1_000), h.waker(2));
        wheel.insert(at(origin, 100), h.waker(3));
        assert_eq!(wheel.next_deadline(), Some(at(origin, 100)));
        // Time going backwards fires only what is due by then.
        assert_eq!(h.expire(&mut wheel, at(origin, 500)), vec![3]);
        assert_eq!(wheel.next_deadline(), Some(at(origin, 900)));
        assert_eq!(h.expire(&mut wheel, at(origin, 1_000)), vec![1, 2]);
        assert_eq!(wheel.next_deadline(), Some(at(origin, 2_000)));
        assert_eq!(h.expire(&mut wheel, at(origin, 5_000)), vec![0]);
    }

    #[test]
    fn cancel_pending_fired_and_stale() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut h = Harness::default();
        let a = wheel.insert(at(origin, 10), h.waker(0));
        let b = wheel.insert(at(origin, 10), h.waker(1));
        let c = wheel.insert(at(origin, 10), h.waker(2));
        let d = wheel.insert(at(origin, 100_000), h.waker(3));
        assert!(wheel.cancel(b));
        assert!(!wheel.cancel(b), "double cancel");
        assert_eq!(wheel.len(), 3);
        assert!(wheel.cancel(d));
        assert_eq!(h.expire(&mut wheel, at(origin, 10)), vec![0, 2]);
        assert!(!wheel.cancel(a), "fired");
        assert!(!wheel.cancel(c), "fired");
        // A reused slot does not revive old keys.
        let e = wheel.insert(at(origin, 20), h.waker(4));
        assert!(!wheel.cancel(a) && !wheel.cancel(b) && !wheel.cancel(c) && !wheel.cancel(d));
        assert!(wheel.cancel(e));
        // Keys with bad indices and the zero generation are stale.
        assert!(!wheel.cancel(TimerKey {
            index: 99,
            generation: 1
        }));
        assert!(!wheel.cancel(TimerKey {
            index: 0,
            generation: 0
        }));
        assert!(!wheel.cancel(TimerKey {
            index: NIL,
            generation: 1
        }));
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
        assert!(h.expire(&mut wheel, at(origin, 1 << 40)).is_empty());
    }

    #[test]
    fn update_waker_live_and_stale() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut h = Harness::default();
        let a = wheel.insert(at(origin, 5), h.waker(0));
        let b = wheel.insert(at(origin, 5), h.waker(1));
        assert!(wheel.update_waker(a, &h.waker(10)));
        let same = h.waker(11);
        assert!(wheel.update_waker(b, &same));
        assert!(wheel.update_waker(b, &same.clone()), "will_wake path");
        assert!(wheel.cancel(b));
        assert!(!wheel.update_waker(b, &h.waker(12)), "cancelled");
        assert_eq!(h.expire(&mut wheel, at(origin, 5)), vec![10]);
        assert!(!wheel.update_waker(a, &h.waker(13)), "fired");
        assert!(!wheel.update_waker(
            TimerKey {
                index: 7,
                generation: 1
            },
            &same
        ));
    }

    #[test]
    fn generation_wraps_and_skips_zero() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let h = Harness::default();
        let a = wheel.insert(at(origin, 5), h.waker(0));
        assert!(wheel.cancel(a));
        wheel.entries[a.index as usize].generation = u32::MAX;
        let b = wheel.insert(at(origin, 5), h.waker(1));
        assert_eq!((b.index, b.generation), (a.index, u32::MAX));
        assert!(wheel.cancel(b));
        let c = wheel.insert(at(origin, 5), h.waker(2));
        assert_eq!((c.index, c.generation), (a.index, 1));
        assert!(!wheel.cancel(b));
        assert!(!wheel.update_waker(
            TimerKey {
                index: a.index,
                generation: 0
            },
            &h.waker(3)
        ));
        assert!(wheel.cancel(c));
    }

    #[test]
    fn same_deadline_is_fifo_across_cascades() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut h = Harness::default();
        let deadline = at(origin, 5_000_000);
        let mut id = 0;
        let mut expected = Vec::new();
        // Insert batches while time approaches the deadline, so earlier
        // batches sit at higher levels and cascade before later ones arrive.
        for now in [0u64, 100_000, 4_000_000, 4_999_000, 4_999_990, 4_999_999] {
            assert!(h.expire(&mut wheel, at(origin, now)).is_empty());
            for _ in 0..3 {
                wheel.insert(deadline, h.waker(id));
                expected.push(id);
                id += 1;
            }
        }
        wheel.insert(at(origin, 4_999_999), h.waker(100));
        expected.insert(0, 100);
        assert_eq!(h.expire(&mut wheel, at(origin, 6_000_000)), expected);
    }

    #[test]
    fn cascades_through_every_level_and_overflow() {
        let origin = Instant::now();
        let mut h = Harness::default();
        // One timer per level, not slot aligned, and four in the overflow list.
        let mut ticks: Vec<u64> = (0..LEVELS as u32)
            .map(|k| 3 * (1u64 << (6 * k)) + 7)
            .collect();
        ticks.extend([(1 << 54) + 12_345, 5 << 54, (5 << 54) + 1, (1 << 60) + 3]);
        let huge_ok = origin
            .checked_add(Duration::from_micros(u64::MAX))
            .is_some();
        if huge_ok {
            ticks.push(NEVER - 1);
        }
        for jump in [false, true] {
            let mut wheel = Wheel::new(origin);
            let keys: Vec<TimerKey> = (0..ticks.len())
                .map(|id| wheel.insert(at(origin, ticks[id]), h.waker(id)))
                .collect();
            for (k, &key) in keys.iter().enumerate() {
                assert_eq!(level_of(&wheel, key), k.min(LEVELS), "tick {}", ticks[k]);
            }
            // Saturated: never fires but is reported.
            let never = huge_ok.then(|| {
                let far = origin + Duration::from_micros(u64::MAX) + Duration::from_secs(1);
                wheel.insert(far, h.waker(999))
            });
            if jump {
                let end = at(origin, *ticks.last().unwrap());
                assert_eq!(
                    h.expire(&mut wheel, end),
                    (0..ticks.len()).collect::<Vec<_>>()
                );
            } else {
                for (id, &t) in ticks.iter().enumerate() {
                    assert_eq!(wheel.next_deadline(), Some(at(origin, t)));
                    let just_before = at(origin, t) - Duration::from_nanos(1);
                    assert!(h.expire(&mut wheel, just_before).is_empty(), "tick {t}");
                    assert_eq!(h.expire(&mut wheel, at(origin, t)), vec![id], "tick {t}");
                }
            }
            if let Some(never) = never {
                assert_eq!(wheel.len(), 1);
                assert_eq!(wheel.next_deadline(), Some(at(origin, NEVER)));
                let far = origin + Duration::from_micros(u64::MAX) + Duration::from_secs(9);
                assert!(h.expire(&mut wheel, far).is_empty());
                assert!(wheel.cancel(never));
            }
            assert!(wheel.is_empty());
        }
    }

    #[test]
    fn next_deadline_is_lower_bound_after_cancel() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut h = Harness::default();
        let a = wheel.insert(at(origin, 1_000_000), h.waker(0));
        wheel.insert(at(origin, 1_000_100), h.waker(1));
        assert!(wheel.cancel(a));
        // Stale bound is allowed to be early, never late.
        let nd = wheel.next_deadline().unwrap();
        assert!(nd <= at(origin, 1_000_100));
        assert!(h.expire(&mut wheel, nd).is_empty());
        assert_eq!(wheel.next_deadline(), Some(at(origin, 1_000_100)));
        assert_eq!(h.expire(&mut wheel, at(origin, 1_000_100)), vec![1]);
    }

    /// A pending timer of the brute-force model.
    struct Model {
        waker_id: usize,
        key: TimerKey,
        raw: Instant,
        tick: u64,
        seq: usize,
        due_at_insert: bool,
    }

    fn randomized(seed: u64, ops: usize) {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut h = Harness::default();
        let mut rng = Rng(seed);
        let mut pending: Vec<Model> = Vec::new();
        let mut dead: Vec<TimerKey> = Vec::new();
        let mut now = origin;
        let mut elapsed = 0u64; // the model's view of the wheel's `elapsed`
        let mut next_id = 0;
        let mut placed = [0usize; LEVELS + 2]; // per level, then due, then overflow
        for seq in 0..ops {
            let op = rng.below(100);
            if op < 45 {
                let scale = rng.below(58);
                let offset = Duration::from_nanos(rng.below(1_000))
                    + Duration::from_micros(rng.below(1 << scale));
                let raw = if rng.below(10) == 0 {
                    now.checked_sub(offset).unwrap_or(origin)
                } else {
                    now + offset
                };
                let waker_id = next_id;
                next_id += 1;
                let key = wheel.insert(raw, h.waker(waker_id));
                let list = wheel.entries[key.index as usize].list as usize;
                placed[if list < DUE {
                    list / SLOTS
                } else {
                    list - DUE + LEVELS
                }] += 1;
                let tick = deadline_tick(origin, raw);
                let due_at_insert = tick <= elapsed;
                pending.push(Model {
                    waker_id,
                    key,
                    raw,
                    tick,
                    seq,
                    due_at_insert,
                });
            } else if op < 60 {
                if !pending.is_empty() && rng.below(4) != 0 {
                    let m = pending.swap_remove(rng.below(pending.len() as u64) as usize);
                    assert!(wheel.cancel(m.key));
                    dead.push(m.key);
                } else if !dead.is_empty() {
                    assert!(!wheel.cancel(dead[rng.below(dead.len() as u64) as usize]));
                }
            } else if op < 70 {
                let waker_id = next_id;
                next_id += 1;
                let waker = h.waker(waker_id);
                if !pending.is_empty() && rng.below(4) != 0 {
                    let i = rng.below(pending.len() as u64) as usize;
                    assert!(wheel.update_waker(pending[i].key, &waker));
                    pending[i].waker_id = waker_id;
                } else if !dead.is_empty() {
                    let key = dead[rng.below(dead.len() as u64) as usize];
                    assert!(!wheel.update_waker(key, &waker));
                }
            } else {
                let scale = if rng.below(100) == 0 {
                    56
                } else {
                    rng.below(40)
                };
                let step = Duration::from_micros(rng.below(1 << scale))
                    + Duration::from_nanos(rng.below(1_000));
                now += step;
                // Sometimes pass a stale `now` (time going backwards).
                let when = if rng.below(10) == 0 {
                    now.checked_sub(step + step / 2).unwrap_or(origin)
                } else {
                    now
                };
                let fired = h.expire(&mut wheel, when);
                let now_tick = when
                    .checked_duration_since(origin)
                    .map(|d| d.as_micros() as u64);
                let (mut due, mut rest): (Vec<Model>, Vec<Model>) = (Vec::new(), Vec::new());
                let mut i = 0;
                while i < pending.len() {
                    if now_tick.is_some_and(|n| pending[i].tick <= n) {
                        let m = pending.swap_remove(i);
                        assert!(m.raw <= when, "fired early");
                        if m.due_at_insert {
                            due.push(m);
                        } else {
                            rest.push(m);
                        }
                    } else {
                        i += 1;
                    }
                }
                due.sort_by_key(|m| m.seq);
                rest.sort_by_key(|m| (m.tick, m.seq));
                let expected: Vec<usize> = due.iter().chain(&rest).map(|m| m.waker_id).collect();
                assert_eq!(fired, expected, "seed {seed} op {seq}");
                dead.extend(due.iter().chain(&rest).map(|m| m.key));
                elapsed = elapsed.max(now_tick.unwrap_or(0));
                // Everything due by `when` fired, so no busy loop.
                if let Some(next) = wheel.next_deadline() {
                    assert!(now_tick.is_none() || next > when);
                }
            }
            assert_eq!(wheel.len(), pending.len());
            match pending.iter().map(|m| m.tick).min() {
                None => assert_eq!(wheel.next_deadline(), None),
                Some(min) => assert!(wheel.next_deadline().unwrap() <= at(origin, min)),
            }
        }
        assert!(placed.iter().all(|&n| n > 0), "coverage {placed:?}");
    }

    #[test]
    fn randomized_against_model() {
        for seed in [1, 0x9e37_79b9_7f4a_7c15, 12_345, 0xdead_beef] {
            randomized(seed, 20_000);
        }
    }

    #[test]
    fn million_timers() {
        const N: usize = 1_000_000;
        const SPAN_US: u64 = 10_000_000;
        let started = Instant::now();
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut h = Harness::default();
        let mut rng = Rng(42);
        let deadlines: Vec<Instant> = (0..N)
            .map(|_| origin + Duration::from_nanos(rng.below(SPAN_US * 1_000)))
            .collect();
        let keys: Vec<TimerKey> = (0..N)
            .map(|id| wheel.insert(deadlines[id], h.waker(id)))
            .collect();
        assert_eq!(wheel.len(), N);
        let cancelled: Vec<bool> = (0..N).map(|_| rng.below(2) == 0).collect();
        for id in (0..N).filter(|&id| cancelled[id]) {
            assert!(wheel.cancel(keys[id]));
        }
        let live = cancelled.iter().filter(|&&c| !c).count();
        assert_eq!(wheel.len(), live);
        let mut fired = vec![false; N];
        let mut count = 0;
        let mut last_tick = 0;
        let mut now = origin;
        let end = at(origin, SPAN_US + 1);
        while now < end {
            now += Duration::from_nanos(997_003);
            for id in h.expire(&mut wheel, now) {
                assert!(!cancelled[id] && !fired[id], "timer {id}");
                assert!(deadlines[id] <= now, "timer {id} early");
                let tick = deadline_tick(origin, deadlines[id]);
                assert!(tick >= last_tick, "timer {id} out of order");
                last_tick = tick;
                fired[id] = true;
                count += 1;
            }
            if let Some(next) = wheel.next_deadline() {
                assert!(next > now);
            }
        }
        assert_eq!(count, live);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
        assert!(keys.iter().take(1000).all(|&k| !wheel.cancel(k)));
        eprintln!("million_timers: {:?}", started.elapsed());
    }
}
