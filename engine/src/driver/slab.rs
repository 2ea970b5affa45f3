//! The slab of in-flight ops.
//!
//! Every op submitted to the ring occupies one slot from submission until the kernel posts its
//! last completion. The ring's `user_data` is the slot's [`OpKey`]: index in the low 32 bits,
//! generation in the high 32. A slot's generation changes every time it is freed, so a
//! completion (or a future) that still carries an old key can never touch the slot's next
//! occupant; a slot whose generation would wrap is retired instead (an unwatched send's future
//! keeps its key after its slot went, for as long as its owner waits). Generation 0 is never
//! handed out, which keeps `user_data` values below 2^32 free for the driver's internal
//! tokens.

use std::task::Waker;

use super::op::Orphan;
use super::owned_send::SendBytes;
use super::relay::RelayState;

/// One completion queue entry, as the op sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The kernel's result: a count, an fd, or `-errno`.
    pub result: i32,
    /// The CQE flags (`IORING_CQE_F_MORE`, `IORING_CQE_F_BUFFER`, ...).
    pub flags: u32,
}

/// Bit 31 of a `user_data`'s index half marks an op's second request: a relay's send (its
/// receive carries the plain key). Slab indices stay below it.
const SECOND_REQUEST: u32 = 1 << 31;

/// Names one slab slot at one generation. Packed into `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpKey {
    index: u32,
    generation: u32,
}

impl OpKey {
    #[inline]
    pub(crate) fn to_user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// A key that names no slot (generation 0 is never handed out), for a field set before
    /// use.
    pub(crate) const NONE: OpKey = OpKey {
        index: SECOND_REQUEST - 1,
        generation: 0,
    };

    /// The `user_data` of the second request of the op in this slot (a relay's send).
    #[inline]
    pub(crate) fn second_user_data(self) -> u64 {
        self.to_user_data() | u64::from(SECOND_REQUEST)
    }

    /// The key a `user_data` value names, or `None` for the driver's internal tokens.
    #[inline]
    pub(crate) fn from_user_data(user_data: u64) -> Option<OpKey> {
        let generation = (user_data >> 32) as u32;
        if generation == 0 {
            return None;
        }
        Some(OpKey {
            index: user_data as u32 & !SECOND_REQUEST,
            generation,
        })
    }

    /// Whether a `user_data` value is an op's second request (see
    /// [`OpKey::second_user_data`]).
    #[inline]
    pub(crate) fn is_second(user_data: u64) -> bool {
        user_data as u32 & SECOND_REQUEST != 0
    }
}

/// The completions of a multishot op not yet taken, oldest first. The oldest sits inline: a
/// stream that takes each completion as it comes (the usual case: an idle connection's
/// receive) never allocates, and an idle op's slot holds no heap memory. The rest (a burst)
/// are boxed, so that the queue takes 24 bytes of its slot.
#[derive(Debug, Default)]
pub(crate) struct CompletionQueue {
    first: Option<Completion>,
    // Boxed on purpose: a `VecDeque` inline is 32 bytes of every multishot op's slot.
    #[allow(clippy::box_collection)]
    rest: Option<Box<std::collections::VecDeque<Completion>>>,
}

impl CompletionQueue {
    #[inline]
    pub(crate) fn push_back(&mut self, done: Completion) {
        if self.first.is_none() {
            // `rest` is empty whenever `first` is (pop_front refills `first` from it).
            self.first = Some(done);
        } else {
            self.rest.get_or_insert_default().push_back(done);
        }
    }

    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<Completion> {
        let done = self.first.take()?;
        if let Some(rest) = &mut self.rest {
            self.first = rest.pop_front();
            if rest.is_empty() {
                // A burst is over: give its memory back rather than keep it per idle op.
                self.rest = None;
            }
        }
        Some(done)
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }
}

impl Iterator for CompletionQueue {
    type Item = Completion;

    fn next(&mut self) -> Option<Completion> {
        self.pop_front()
    }
}

/// Where an op is in its life.
///
/// An explicit one-byte tag (`repr(u8)`): every completion matches on it, and a tag the
/// compiler hides in a niche of some variant's field takes a load, a compare and a
/// conditional move to decode before the jump (11 instructions per completion, callgrind).
/// With `repr(u8)` each variant's fields are laid out in the order written, so they are
/// written smallest first: the small ones share the tag's 8 bytes, and the state is 56 B (a
/// slot is one cache line).
#[repr(u8)]
pub(crate) enum Lifecycle {
    /// Submitted; the future waits for its (first) completion.
    Waiting { waker: Option<Waker> },
    /// A single-shot op completed; the future has not yet taken the result.
    Completed(Completion),
    /// A multishot op: completions queue up until the stream takes them.
    Multishot {
        finished: bool,
        /// When more completions than this wait untaken, the driver cancels the op (its owner
        /// stopped taking them; each may hold a provided buffer). `u32::MAX`: no limit, and
        /// also once that cancel was sent.
        limit: u32,
        queue: CompletionQueue,
        waker: Option<Waker>,
    },
    /// A send whose slot owns its bytes ([`crate::ops::send_chunk`], [`crate::ops::send_vec`]):
    /// the driver lets go of them at the completion (a ring buffer goes back to its ring, a heap
    /// buffer is freed), whether or not the future is there to take the result. A future that
    /// waits has its waker here, and the result is left here as `Completed` (the count of the
    /// whole send). One that looks later (polled unwatched) has none: the completion wakes
    /// nobody, and frees the slot if the send went whole (the future reads a key found nowhere
    /// as sent), or leaves the failure as `Completed`. A short send (despite `MSG_WAITALL`: a
    /// signal, memory pressure, a kernel before 5.18) is continued by the driver under the same
    /// key: `bytes` then hold the rest, and count what went; not during a shutdown,
    /// whose cancel ends a send part-way with that part's count.
    SendingOwned {
        to: PackedTarget,
        bytes: SendBytes,
        waker: Option<Waker>,
    },
    /// A relay ([`crate::ops::Relay`]): a multishot receive whose chunks the driver sends on
    /// itself, each straight from its ring buffer (see [`super::relay`]). Two requests in one
    /// slot: the receive's `user_data` is the key, the send's [`OpKey::second_user_data`].
    Relay(RelayState),
    /// The future was dropped while the kernel still owns the op's resources. They live here
    /// until the last completion, which is handed to the orphan (to close an fd, recycle a
    /// buffer) before the slot is freed.
    Orphaned(Box<dyn Orphan>),
}

/// The socket an owned send goes to: a raw fd or a registered file's slot. Its owner (the
/// send's future, or the orphan it leaves) keeps the socket open while the op is in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SendTarget {
    Fd(std::os::fd::RawFd),
    Fixed(u32),
}

/// A [`SendTarget`] in 4 bytes, as slots keep it (a slot is one cache line): a registered
/// file's table slot (the top bit set) or a raw fd (never negative for an open one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PackedTarget(u32);

impl PackedTarget {
    const FIXED: u32 = 1 << 31;

    #[inline]
    pub(crate) fn new(target: SendTarget) -> PackedTarget {
        match target {
            SendTarget::Fixed(slot) => PackedTarget(slot | PackedTarget::FIXED),
            SendTarget::Fd(fd) => PackedTarget(fd as u32 & !PackedTarget::FIXED),
        }
    }

    #[inline]
    pub(crate) fn get(self) -> SendTarget {
        if self.0 & PackedTarget::FIXED != 0 {
            SendTarget::Fixed(self.0 & !PackedTarget::FIXED)
        } else {
            SendTarget::Fd(self.0 as i32)
        }
    }
}

impl Lifecycle {
    /// Whether the kernel may still post completions for the op (or read or write its
    /// memory): not for a completed single-shot op, nor a multishot one whose last
    /// completion came, that waits for its future to take what it left.
    fn kernel_owned(&self) -> bool {
        match self {
            Lifecycle::Completed(_) => false,
            Lifecycle::Multishot { finished, .. } => !finished,
            Lifecycle::Relay(relay) => relay.kernel_owned(),
            Lifecycle::Waiting { .. } | Lifecycle::SendingOwned { .. } | Lifecycle::Orphaned(_) => {
                true
            }
        }
    }
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lifecycle::Waiting { .. } => f.write_str("Waiting"),
            Lifecycle::Completed(c) => write!(f, "Completed({c:?})"),
            Lifecycle::Multishot {
                queue, finished, ..
            } => write!(f, "Multishot(queued={}, finished={finished})", queue.len()),
            Lifecycle::SendingOwned { bytes, .. } => write!(f, "SendingOwned({})", bytes.len()),
            Lifecycle::Relay(relay) => write!(f, "Relay({relay:?})"),
            Lifecycle::Orphaned(_) => f.write_str("Orphaned"),
        }
    }
}

/// One cache line, aligned (`repr(C, align(64))`): a completion's lookup (the generation
/// check, the state's tag, the state) misses once at most, where an 80-byte slot straddled
/// two lines. Every op's state is at most 56 bytes for it (the compile-time check below).
#[derive(Debug)]
#[repr(C, align(64))]
struct Slot {
    generation: u32,
    next_free: u32,
    state: Option<Lifecycle>,
}

const _: () = assert!(
    std::mem::size_of::<Slot>() == 64,
    "an op slot is one cache line"
);

const NO_FREE: u32 = u32::MAX;

/// Slots for in-flight ops, reused through a free list.
#[derive(Debug)]
pub(crate) struct OpSlab {
    slots: Vec<Slot>,
    free_head: u32,
    live: usize,
}

impl OpSlab {
    pub(crate) fn new() -> Self {
        OpSlab {
            slots: Vec::new(),
            free_head: NO_FREE,
            live: 0,
        }
    }

    /// Number of occupied slots: ops the kernel has not finished with, and finished ones
    /// whose future has not taken what they left (a completion, queued multishot results).
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    #[inline]
    pub(crate) fn insert(&mut self, state: Lifecycle) -> OpKey {
        self.live += 1;
        if self.free_head != NO_FREE {
            let index = self.free_head;
            let slot = &mut self.slots[index as usize];
            self.free_head = slot.next_free;
            slot.state = Some(state);
            return OpKey {
                index,
                generation: slot.generation,
            };
        }
        let index = u32::try_from(self.slots.len()).expect("more than 2^32 ops in flight");
        // The top bit of the index half of `user_data` marks second requests.
        assert!(index < SECOND_REQUEST, "more than 2^31 ops in flight");
        self.slots.push(Slot {
            generation: 1,
            state: Some(state),
            next_free: NO_FREE,
        });
        OpKey {
            index,
            generation: 1,
        }
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: OpKey) -> Option<&mut Lifecycle> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.state.as_mut()
    }

    /// Starts loading the slot `key` names into the cache (see [`crate::prefetch`]): a
    /// completion about to be handed to it then finds it there.
    #[inline]
    pub(crate) fn prefetch(&self, key: OpKey) {
        if let Some(slot) = self.slots.get(key.index as usize) {
            crate::prefetch::prefetch_line((slot as *const Slot).cast::<u8>());
        }
    }

    /// Frees the slot and returns what it held; later lookups with `key` find nothing.
    #[inline]
    pub(crate) fn remove(&mut self, key: OpKey) -> Option<Lifecycle> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation || slot.state.is_none() {
            return None;
        }
        let state = slot.state.take();
        self.live -= 1;
        if slot.generation == u32::MAX {
            // Retired, never reused: a generation that wrapped would let a key kept from
            // 2^32 uses ago (an unwatched send's, whose slot went at its completion) name
            // whatever holds the slot now. One slot lost per 2^32 uses of it.
            slot.generation = 0;
            return state;
        }
        slot.generation += 1;
        slot.next_free = self.free_head;
        self.free_head = key.index;
        state
    }

    /// Frees the slot of a single-shot op whose completion was just taken: what it held is a
    /// plain `Completed` value (nothing to drop), so no destructor runs here.
    #[inline]
    pub(crate) fn remove_completed(&mut self, key: OpKey) {
        match self.remove(key) {
            Some(Lifecycle::Completed(_)) | None => {}
            Some(other) => {
                debug_assert!(false, "remove_completed on a slot in state {other:?}");
                drop(other);
            }
        }
    }

    /// The `user_data` of every request the kernel still owns (see
    /// [`Lifecycle::kernel_owned`]; a relay's two requests are both named, whether or not each
    /// is in flight): what a shutdown cancels one by one.
    pub(crate) fn kernel_owned(&self) -> Vec<u64> {
        let mut owned = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(state) = slot.state.as_ref().filter(|state| state.kernel_owned()) else {
                continue;
            };
            let key = OpKey {
                index: index as u32,
                generation: slot.generation,
            };
            owned.push(key.to_user_data());
            if matches!(state, Lifecycle::Relay(_)) {
                owned.push(key.second_user_data());
            }
        }
        owned
    }

    /// Whether the kernel still owns any op: what a shutdown waits for. Slots the kernel is
    /// done with may stay (their futures outlive the core); they hold nothing it can touch.
    pub(crate) fn any_kernel_owned(&self) -> bool {
        self.slots
            .iter()
            .any(|slot| slot.state.as_ref().is_some_and(Lifecycle::kernel_owned))
    }

    /// Takes every occupied slot's state (used at shutdown, after the kernel is done).
    pub(crate) fn drain(&mut self) -> Vec<Lifecycle> {
        let mut out = Vec::with_capacity(self.live);
        for slot in &mut self.slots {
            if let Some(state) = slot.state.take() {
                out.push(state);
            }
        }
        self.slots.clear();
        self.free_head = NO_FREE;
        self.live = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> Lifecycle {
        Lifecycle::Waiting { waker: None }
    }

    #[test]
    fn user_data_round_trip_and_internal_tokens() {
        let mut slab = OpSlab::new();
        let key = slab.insert(waiting());
        assert_eq!(OpKey::from_user_data(key.to_user_data()), Some(key));
        assert_eq!(OpKey::from_user_data(7), None, "generation 0 is internal");
    }

    #[test]
    fn stale_key_never_reaches_next_occupant() {
        let mut slab = OpSlab::new();
        let a = slab.insert(waiting());
        assert!(slab.remove(a).is_some());
        let b = slab.insert(Lifecycle::Completed(Completion {
            result: 5,
            flags: 0,
        }));
        assert_ne!(a, b);
        assert!(slab.get_mut(a).is_none());
        assert!(slab.remove(a).is_none());
        assert!(matches!(slab.get_mut(b), Some(Lifecycle::Completed(_))));
        assert_eq!(slab.live(), 1);
    }

    #[test]
    fn slots_are_reused_lifo_and_counted() {
        let mut slab = OpSlab::new();
        let keys: Vec<_> = (0..100).map(|_| slab.insert(waiting())).collect();
        assert_eq!(slab.live(), 100);
        for k in &keys {
            slab.remove(*k);
        }
        assert_eq!(slab.live(), 0);
        let again: Vec<_> = (0..100).map(|_| slab.insert(waiting())).collect();
        assert_eq!(slab.slots.len(), 100, "no growth when slots are free");
        for (old, new) in keys.iter().zip(&again) {
            assert!(slab.get_mut(*old).is_none() || old == new);
        }
        assert_eq!(slab.drain().len(), 100);
        assert_eq!(slab.live(), 0);
    }

    /// A slot whose generation would wrap is retired: no key, however old, ever names it
    /// again, and new ops go elsewhere.
    #[test]
    fn a_slot_is_retired_before_its_generation_wraps() {
        let mut slab = OpSlab::new();
        let k = slab.insert(waiting());
        slab.slots[k.index as usize].generation = u32::MAX;
        let k = OpKey {
            index: k.index,
            generation: u32::MAX,
        };
        assert!(slab.remove(k).is_some());
        assert_eq!(slab.live(), 0);
        let k2 = slab.insert(waiting());
        assert_ne!(k2.index, k.index, "the retired slot is not reused");
        assert_eq!(k2.generation, 1);
        for generation in [1, u32::MAX] {
            let old = OpKey {
                index: k.index,
                generation,
            };
            assert!(slab.get_mut(old).is_none() && slab.remove(old).is_none());
        }
    }
}
