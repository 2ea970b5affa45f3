//! The ring driver: one io_uring per core, the slab of in-flight ops, and the loop turn.
//!
//! # Design
//!
//! Ownership. An op's resources (fd reference, buffers, socket addresses) are owned by its
//! future ([`op::Op`]) while the future lives, and by the op's slab slot once the future is
//! dropped ([`slab::Lifecycle::Orphaned`]). Either way they stay at the same heap address until
//! the kernel posts the op's last completion: op data only ever points at heap memory (a
//! `Vec`'s buffer, a `Box`), never at the future itself, so moving the future moves nothing the
//! kernel can see. One kind of op keeps its data in the slot from the start: an owned send
//! ([`slab::Lifecycle::SendingOwned`], [`owned_send`]) owns the bytes it sends, a ring buffer or
//! a heap buffer, so that the completion lets go of them at once (the ring buffer back to its
//! ring), whether or not the future is polled then: a connection that sends its reply and
//! waits for the next request is woken once per exchange, by the request, and holds no buffer
//! while it waits.
//!
//! Submission. [`Driver::push`] puts an entry into the submission queue; when the queue is full
//! the entry waits in a user-space backlog (never dropped, never a spin) which the next
//! [`Driver::enter`] flushes as the kernel consumes entries. One `io_uring_enter` per loop turn
//! submits the batch and, when the executor has nothing to run, waits for at least one
//! completion with the nearest timer as timeout (`IORING_ENTER_EXT_ARG`).
//!
//! Completion. [`Driver::reap`] drains the completion queue. `user_data` is an [`slab::OpKey`]
//! (bit 31 set: the second request of the op in that slot, a relay's send); a key whose
//! generation does not match its slot is stale and ignored. Values with generation
//! 0 are the driver's own tokens ([`TOKEN_IGNORE`], [`TOKEN_WAKE`]). With
//! `IORING_FEAT_NODROP` the kernel keeps completions that overflow the queue and hands them
//! back on the next enter with `GETEVENTS`, which every enter here carries; overflows are
//! counted. An op future keeps its key with its driver's id (unique in the process): polled
//! or dropped where another driver is current (a later core on the same thread, or a nested
//! `block_on`'s), it never reads or orphans the slot the same key names there; with its own
//! driver gone it reads as cancelled; with it suspended further up the stack it keeps its
//! data (an op waits; an owned send reads an error and keeps its socket open).
//!
//! Cancellation. Dropping an op future that the kernel still owns moves its data into the slot
//! (`Orphaned`) and submits `ASYNC_CANCEL` for its key. The orphan sees every later completion
//! (so an accepted fd gets closed and a provided buffer recycled) and is freed with the last one.
//! A multishot op may carry a limit on its untaken completions: when its owner stops taking
//! them (each may hold a provided buffer) and the queue passes the limit, [`Driver::reap`]
//! cancels the op; what is queued stays for the owner, and the op ends with the cancel's
//! completion. A relay ([`relay`]) whose future is dropped stays a relay in its slot, keeping
//! its sockets, with both requests cancelled; it is freed once the kernel owns neither.
//!
//! Shutdown. [`Driver::shutdown`] cancels everything in flight and drives the ring until the
//! kernel owns no op (a slot left holds what a finished op left for a future that outlives the
//! core: nothing the kernel touches); if the kernel does not finish within a bound, every op's
//! memory (the slab) is leaked rather than freed under the kernel's feet.

pub(crate) mod fixed;
pub(crate) mod op;
pub(crate) mod owned_send;
pub(crate) mod relay;
pub(crate) mod ring;
mod ring_fd;
pub(crate) mod slab;

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::task::Waker;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use owned_send::{OwnedSendOrphan, SendBytes};
use relay::{RelayPoll, RelayState, Requests};
pub use ring::RingFeatures;
use ring_fd::RegisteredRing;
use slab::{Completion, Lifecycle, OpKey, OpSlab, PackedTarget, SendTarget};

use crate::fd::SharedFd;

/// `user_data` of completions nobody waits for (async cancels, fire-and-forget messages).
pub(crate) const TOKEN_IGNORE: u64 = 0;
/// `user_data` of a cross-thread wake-up (the eventfd read or a `MSG_RING` from another core).
pub(crate) const TOKEN_WAKE: u64 = 1;

/// Counters the driver keeps; plain integers, this core only.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DriverStats {
    /// Entries handed to the kernel.
    pub ops_submitted: u64,
    /// Completions reaped.
    pub ops_completed: u64,
    /// `io_uring_enter` calls.
    pub ring_enters: u64,
    /// Non-waiting turns that skipped `io_uring_enter` (nothing to submit, nothing flagged).
    pub enters_skipped: u64,
    /// Times the completion queue was found overflowed (completions kept by the kernel).
    pub cq_overflows: u64,
    /// Entries that found the submission queue full and waited in the backlog.
    pub sq_full: u64,
    /// Async cancels submitted: for dropped op futures, and by relays (a pause, an end).
    pub cancels: u64,
    /// Provided buffer rings registered now.
    pub buf_rings: u64,
    /// Files in the registered file table now.
    pub fixed_files: u64,
    /// Zero-copy sends (`SEND_ZC`) submitted.
    pub zero_copy_sends: u64,
}

/// What the caller of [`Driver::reap`] must act on besides waking op futures.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Reaped {
    pub(crate) completions: usize,
    /// A `MSG_RING` wake token arrived: drain the cross-thread queue.
    pub(crate) woken: bool,
}

/// One core's io_uring and its in-flight ops.
pub(crate) struct Driver {
    /// Unique in the process: an op future that keeps its key where the driver cannot see it
    /// (an owned send) checks it, so that a future that outlived its core never reads or
    /// orphans a later core's slot under the same key.
    id: u64,
    /// The ring's fd in this thread's registered-ring table, if the kernel gave it a slot.
    /// Declared before `ring`: it is given back before the ring's fd is closed.
    registered: Option<RegisteredRing>,
    ring: IoUring,
    slab: OpSlab,
    backlog: VecDeque<squeue::Entry>,
    features: RingFeatures,
    next_bgid: u16,
    /// Buffer group ids given back by unregistered rings, reused before `next_bgid` grows (a
    /// core that makes rings all its life never runs out of the 65,535).
    free_bgids: Vec<u16>,
    /// Orphans whose last completion arrived: dropped by the core after the driver's borrow
    /// ends, because their destructors may need the driver (a buffer ring unregisters itself).
    graveyard: Vec<Box<dyn op::Orphan>>,
    /// The registered file table's slots.
    fixed: fixed::FixedFiles,
    /// Set by a shutdown: a send its cancel ended part-way is not continued.
    shutting_down: bool,
    pub(crate) stats: DriverStats,
}

thread_local! {
    /// The ids of the drivers alive on this thread (more than one under a nested `block_on`).
    static LIVE_DRIVERS: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether the driver `id` is alive on this thread (maybe not the current one: an outer
/// core under a nested `block_on`).
pub(crate) fn driver_alive(id: u64) -> bool {
    LIVE_DRIVERS.with(|live| live.borrow().contains(&id))
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("features", &self.features)
            .field("in_flight", &self.slab.live())
            .field("backlog", &self.backlog.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Drop for Driver {
    /// The last line of defence: if ops are still in flight (a shutdown that did not run or
    /// did not finish), their memory is leaked, never freed while the kernel may write to it.
    fn drop(&mut self) {
        let id = self.id;
        // Off a dying thread the registry may be gone already: nothing to unlist then.
        let _ = LIVE_DRIVERS.try_with(|live| live.borrow_mut().retain(|&l| l != id));
        if self.slab.live() > 0 {
            std::mem::forget(std::mem::replace(&mut self.slab, OpSlab::new()));
        }
    }
}

impl Driver {
    pub(crate) fn new(config: ring::RingConfig) -> io::Result<Driver> {
        let (ring, mut features) = ring::build(config)?;
        features.max_io_workers = ring::cap_io_workers(&ring, config.max_io_workers);
        let registered = {
            use std::os::fd::AsRawFd;
            // Without a slot (an old kernel, or 16 rings on this thread) enters name the fd.
            RegisteredRing::register(ring.as_raw_fd()).ok()
        };
        features.registered_ring_fd = registered.is_some();
        if !features.ext_arg {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG (kernel older than 5.11) is not supported",
            ));
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LIVE_DRIVERS.with(|live| live.borrow_mut().push(id));
        Ok(Driver {
            id,
            registered,
            ring,
            slab: OpSlab::new(),
            backlog: VecDeque::new(),
            features,
            next_bgid: 0,
            free_bgids: Vec::new(),
            graveyard: Vec::new(),
            fixed: fixed::FixedFiles::default(),
            shutting_down: false,
            stats: DriverStats::default(),
        })
    }

    pub(crate) fn features(&self) -> &RingFeatures {
        &self.features
    }

    /// This driver's id, unique in the process.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The ring's own fd (the target of `MSG_RING` from other cores).
    pub(crate) fn ring_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.ring.as_raw_fd()
    }

    /// Op slots in use: ops the kernel has not finished with (orphans included), and
    /// completed ones whose future has not taken the result yet (a watched send, or an
    /// unwatched one that failed).
    pub(crate) fn in_flight(&self) -> usize {
        self.slab.live()
    }

    /// Queues one entry for submission.
    ///
    /// # Safety
    ///
    /// Every buffer, address or other memory the entry points at must stay valid and unmoved
    /// until the kernel posts the entry's last completion. Ops meet this by keeping such memory
    /// in their data, which lives in the future or, once it is dropped, in the slab slot named
    /// by the entry's `user_data`, until that last completion.
    #[inline]
    pub(crate) unsafe fn push(&mut self, entry: squeue::Entry) {
        if !self.backlog.is_empty() {
            self.stats.sq_full += 1;
            self.backlog.push_back(entry);
            return;
        }
        let mut sq = self.ring.submission();
        // SAFETY: the caller guarantees the entry's memory outlives its last completion.
        if unsafe { sq.push(&entry) }.is_err() {
            drop(sq);
            self.stats.sq_full += 1;
            self.backlog.push_back(entry);
        }
    }

    /// Registers a single-shot op and queues its entry; returns the key its future polls.
    ///
    /// # Safety
    ///
    /// As for [`Driver::push`]: the entry's memory is owned by the op's data, which the caller
    /// keeps alive (in the future, then in the slot through [`Driver::orphan`]).
    ///
    /// `waker`, if given, is woken by the first completion: a future that submits during its
    /// poll registers its waker here rather than looking the slot up a second time.
    #[inline]
    pub(crate) unsafe fn submit(
        &mut self,
        entry: squeue::Entry,
        multishot: bool,
        waker: Option<Waker>,
    ) -> OpKey {
        let state = if multishot {
            Lifecycle::Multishot {
                queue: slab::CompletionQueue::default(),
                waker,
                finished: false,
                limit: u32::MAX,
            }
        } else {
            Lifecycle::Waiting { waker }
        };
        let key = self.slab.insert(state);
        // SAFETY: forwarded from the caller.
        unsafe { self.push(entry.user_data(key.to_user_data())) };
        key
    }

    /// Registers a send of `bytes` to `to` (the slot owns them until the send is done, then
    /// lets go of them: see [`owned_send::release`]) and queues its entry; `waker`, if given,
    /// is woken by the completion.
    ///
    /// # Safety
    ///
    /// `to` must stay open (its number not reused) until the op's last completion: the caller
    /// keeps the socket, and hands it to the orphan it leaves if it goes first.
    #[inline]
    pub(crate) unsafe fn submit_owned_send(
        &mut self,
        to: SendTarget,
        bytes: SendBytes,
        waker: Option<Waker>,
    ) -> OpKey {
        let entry = owned_send::send_entry(to, &bytes);
        let key = self.slab.insert(Lifecycle::SendingOwned {
            to: PackedTarget::new(to),
            bytes,
            waker,
        });
        // SAFETY: the entry points at the bytes' memory (a ring buffer's, or a `Vec`'s heap
        // buffer), which stays put while they live; the slot owns them until the last
        // completion (or hands them to an orphan that does). The caller keeps the socket open.
        unsafe { self.push(entry.user_data(key.to_user_data())) };
        key
    }

    /// The future of an owned send (`key`) was dropped. A completed send's slot is freed; one
    /// in flight is cancelled, and its bytes and `fd` are kept until the kernel is done (the
    /// socket must not close, nor its number be reused, under a send still queued). Returns
    /// `fd` when it is not kept, for the caller to drop outside the driver's borrow.
    pub(crate) fn orphan_owned_send(&mut self, key: OpKey, fd: SharedFd) -> Option<SharedFd> {
        let Some(state) = self.slab.get_mut(key) else {
            return Some(fd);
        };
        match state {
            Lifecycle::SendingOwned { .. } => {
                if let Lifecycle::SendingOwned { bytes, .. } =
                    std::mem::replace(state, Lifecycle::Completed(UNSEEN))
                {
                    *state = Lifecycle::Orphaned(Box::new(OwnedSendOrphan {
                        _fd: Some(fd),
                        _bytes: bytes,
                    }));
                }
                self.cancel(key);
                None
            }
            Lifecycle::Completed(_) => {
                self.slab.remove_completed(key);
                Some(fd)
            }
            // No other state is ever this key's.
            _ => Some(fd),
        }
    }

    /// Queues an op no future waits for: `orphan` owns its memory and sees its completions.
    ///
    /// # Safety
    ///
    /// The entry may only point at heap memory owned by `orphan`.
    pub(crate) unsafe fn submit_orphan(
        &mut self,
        entry: squeue::Entry,
        orphan: Box<dyn op::Orphan>,
    ) {
        let key = self.slab.insert(Lifecycle::Orphaned(orphan));
        // SAFETY: the orphan owns the entry's memory and lives in the slot until the last
        // completion.
        unsafe { self.push(entry.user_data(key.to_user_data())) };
    }

    /// Queues an entry whose completion nobody awaits (its `user_data` is [`TOKEN_IGNORE`]).
    ///
    /// # Safety
    ///
    /// The entry must not point at any memory (cancel, msg-ring and close entries qualify).
    pub(crate) unsafe fn push_detached(&mut self, entry: squeue::Entry) {
        // SAFETY: the entry points at no memory.
        unsafe { self.push(entry.user_data(TOKEN_IGNORE)) };
    }

    /// Sets the limit on a multishot op's untaken completions (see the design note): past
    /// `max`, the op is cancelled. At once if it is past it already.
    pub(crate) fn limit_queue(&mut self, key: OpKey, max: u32) {
        let Some(Lifecycle::Multishot {
            queue,
            finished,
            limit,
            ..
        }) = self.slab.get_mut(key)
        else {
            return;
        };
        if *finished {
            return;
        }
        if queue.len() > max as usize {
            *limit = u32::MAX;
            self.cancel_multishot(key);
        } else {
            *limit = max;
        }
    }

    fn cancel_multishot(&mut self, key: OpKey) {
        let entry = opcode::AsyncCancel::new(key.to_user_data()).build();
        // SAFETY: an async cancel names its target by user_data and points at no memory.
        unsafe { self.push_detached(entry) };
    }

    #[inline]
    pub(crate) fn slot(&mut self, key: OpKey) -> Option<&mut Lifecycle> {
        self.slab.get_mut(key)
    }

    #[inline]
    pub(crate) fn free(&mut self, key: OpKey) -> Option<Lifecycle> {
        self.slab.remove(key)
    }

    /// A single-shot op's future polls its slot: the completion (and the slot is freed), or
    /// `None` after registering `waker`. A slot that is gone (the driver was shut down and
    /// drained) reads as `-ECANCELED`.
    #[inline]
    pub(crate) fn poll_op(&mut self, key: OpKey, waker: &Waker) -> Option<Completion> {
        match self.slab.get_mut(key) {
            Some(Lifecycle::Completed(done)) => {
                let done = *done;
                self.slab.remove_completed(key);
                Some(done)
            }
            Some(Lifecycle::Waiting { waker: slot }) => {
                match slot {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *slot = Some(waker.clone()),
                }
                None
            }
            _ => Some(Completion {
                result: -libc::ECANCELED,
                flags: 0,
            }),
        }
    }

    /// Polls an owned send ([`owned_send`]) of this driver's: its completion, or none yet
    /// (`waker` kept to be woken by it; `None`: unwatched, nobody is).
    /// [`OwnedSendPoll::Sent`] when the slot is gone: the send completed whole while nobody
    /// watched, and the driver freed the slot then (see [`complete`]).
    #[inline]
    pub(crate) fn poll_owned_send(&mut self, key: OpKey, waker: Option<&Waker>) -> OwnedSendPoll {
        match self.slab.get_mut(key) {
            Some(Lifecycle::Completed(done)) => {
                let done = *done;
                self.slab.remove_completed(key);
                OwnedSendPoll::Done(done)
            }
            Some(Lifecycle::SendingOwned { waker: slot, .. }) => {
                match (slot.as_ref(), waker) {
                    (Some(kept), Some(w)) if kept.will_wake(w) => {}
                    _ => *slot = waker.cloned(),
                }
                OwnedSendPoll::Pending
            }
            None => OwnedSendPoll::Sent,
            // No other state is ever this key's.
            Some(_) => OwnedSendPoll::Done(Completion {
                result: -libc::ECANCELED,
                flags: 0,
            }),
        }
    }

    /// Forgets the waker an owned send of this driver's kept (see
    /// [`Driver::poll_owned_send`]): its completion wakes nobody again, and a whole send frees
    /// its slot. A result already there stays for the next poll.
    pub(crate) fn unwatch_owned_send(&mut self, key: OpKey) {
        if let Some(Lifecycle::SendingOwned { waker, .. }) = self.slab.get_mut(key) {
            *waker = None;
        }
    }

    /// The future of `key` was dropped: keep `orphan` until the kernel is done with it.
    pub(crate) fn orphan(&mut self, key: OpKey, mut orphan: Box<dyn op::Orphan>) {
        let Some(state) = self.slab.get_mut(key) else {
            return;
        };
        match state {
            Lifecycle::Completed(done) => {
                let done = *done;
                self.slab.remove(key);
                orphan.on_completion(done);
                self.graveyard.push(orphan);
            }
            Lifecycle::Multishot {
                queue, finished, ..
            } => {
                let queue = std::mem::take(queue);
                let finished = *finished;
                for done in queue {
                    orphan.on_completion(done);
                }
                if finished {
                    self.slab.remove(key);
                    self.graveyard.push(orphan);
                } else {
                    *state = Lifecycle::Orphaned(orphan);
                    self.cancel(key);
                }
            }
            Lifecycle::Waiting { .. } => {
                *state = Lifecycle::Orphaned(orphan);
                self.cancel(key);
            }
            Lifecycle::SendingOwned { .. } => {
                // Not a path an owned send takes (its future calls `orphan_owned_send`), but
                // sound: the kernel reads only the bytes, which the slot's orphan keeps; the
                // data handed in goes from the graveyard.
                if let Lifecycle::SendingOwned { bytes, .. } =
                    std::mem::replace(state, Lifecycle::Completed(UNSEEN))
                {
                    *state = Lifecycle::Orphaned(Box::new(OwnedSendOrphan {
                        _fd: None,
                        _bytes: bytes,
                    }));
                }
                self.graveyard.push(orphan);
                self.cancel(key);
            }
            // Not a path a relay takes (the receive it adopted gave up its key), and the
            // relay's own owner keeps it: the data handed in goes from the graveyard.
            Lifecycle::Relay(_) => self.graveyard.push(orphan),
            Lifecycle::Orphaned(_) => {}
        }
    }

    fn cancel(&mut self, key: OpKey) {
        self.stats.cancels += 1;
        let entry = opcode::AsyncCancel::new(key.to_user_data()).build();
        // SAFETY: an async cancel names its target by user_data and points at no memory.
        unsafe { self.push_detached(entry) };
    }

    /// Starts a relay ([`relay`]): in the slot of the multishot receive `adopt` (its
    /// completions nobody took are relayed first, and its request goes on as the relay's), or
    /// in a new slot with a fresh receive. Returns the relay's key.
    ///
    /// # Safety
    ///
    /// Both sockets `state` names must stay open (their numbers not reused) until the kernel
    /// owns neither request: the caller keeps them, and hands them to
    /// [`Driver::orphan_relay`] if it goes first. `adopt` must be a receive on the socket the
    /// relay receives from, into the ring `state` holds.
    pub(crate) unsafe fn start_relay(&mut self, adopt: Option<OpKey>, state: RelayState) -> OpKey {
        let (key, armed, queued) = match adopt.map(|key| (key, self.slab.get_mut(key))) {
            Some((
                key,
                Some(Lifecycle::Multishot {
                    queue, finished, ..
                }),
            )) => {
                let queued = std::mem::take(queue);
                // The kernel may post to the receive until its last completion, which is either
                // still to come or queued here.
                let armed = !*finished || queued.len() > 0;
                if let Some(slot) = self.slab.get_mut(key) {
                    *slot = Lifecycle::Relay(state);
                }
                (key, armed, queued)
            }
            _ => (
                self.slab.insert(Lifecycle::Relay(state)),
                false,
                slab::CompletionQueue::default(),
            ),
        };
        self.relay_event(key, |relay, out| relay.start(armed, queued, out));
        key
    }

    /// Runs `event` on relay `key`, submitting what it asks for.
    fn relay_event<R>(
        &mut self,
        key: OpKey,
        event: impl FnOnce(&mut RelayState, &mut Requests<'_, '_>) -> R,
    ) -> Option<R> {
        let Some(Lifecycle::Relay(relay)) = self.slab.get_mut(key) else {
            return None;
        };
        let mut sq = self.ring.submission();
        let mut out = Requests {
            key,
            sq: &mut sq,
            backlog: &mut self.backlog,
            shutting_down: self.shutting_down,
            queued_behind: 0,
            cancels: 0,
        };
        let r = event(relay, &mut out);
        self.stats.sq_full += out.queued_behind;
        self.stats.cancels += out.cancels;
        Some(r)
    }

    /// The owner of relay `key` polls it: see [`RelayPoll`]. An ended relay's slot is freed.
    pub(crate) fn poll_relay(&mut self, key: OpKey, waker: &Waker) -> RelayPoll {
        let Some(Lifecycle::Relay(relay)) = self.slab.get_mut(key) else {
            return RelayPoll::Done(Err(-libc::ECANCELED));
        };
        let polled = relay.poll(waker);
        if let RelayPoll::Done(_) = polled {
            if let Some(Lifecycle::Relay(relay)) = self.slab.remove(key) {
                self.graveyard.push(Box::new(relay));
            }
        }
        polled
    }

    /// Re-arms relay `key`'s receive, which stopped when the ring ran dry.
    pub(crate) fn relay_rearm(&mut self, key: OpKey) {
        self.relay_event(key, RelayState::rearm_after_dry);
    }

    /// Relay `key`'s progress count (see [`RelayState::progress`]; 0 once it ended).
    pub(crate) fn relay_progress(&mut self, key: OpKey) -> u32 {
        match self.slab.get_mut(key) {
            Some(Lifecycle::Relay(relay)) => relay.progress(),
            _ => 0,
        }
    }

    /// The future of relay `key` was dropped. A relay the kernel is done with is freed and
    /// `fds` come back (to be dropped outside the driver's borrow); else both requests are
    /// cancelled and the slot keeps `fds` until the kernel is done.
    pub(crate) fn orphan_relay(&mut self, key: OpKey, fds: [SharedFd; 2]) -> Option<[SharedFd; 2]> {
        match self.slab.get_mut(key) {
            Some(Lifecycle::Relay(relay)) if relay.kernel_owned() => {
                self.relay_event(key, |relay, out| relay.abandon(fds, out));
                None
            }
            Some(Lifecycle::Relay(_)) => {
                if let Some(Lifecycle::Relay(relay)) = self.slab.remove(key) {
                    self.graveyard.push(Box::new(relay));
                }
                Some(fds)
            }
            _ => Some(fds),
        }
    }

    /// Submits what is queued and, if `wait`, waits for at least one completion or until
    /// `timeout` passes.
    pub(crate) fn enter(&mut self, wait: bool, timeout: Option<Duration>) -> io::Result<()> {
        if !wait && self.nothing_to_enter_for() {
            self.stats.enters_skipped += 1;
            return Ok(());
        }
        if !self.backlog.is_empty() {
            self.flush_backlog()?;
        }
        let want = usize::from(wait && self.backlog.is_empty());
        let ts;
        let args;
        let result = if let (true, Some(t)) = (want > 0, timeout) {
            ts = types::Timespec::from(t);
            args = types::SubmitArgs::new().timespec(&ts);
            self.enter_raw(want as u32, Some(&args))
        } else {
            self.enter_raw(want as u32, None)
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // A timeout, a signal, or completions waiting to be reaped first.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// True when the kernel has flagged task work (`TASKRUN_FLAG`): a waiting enter runs it and
    /// most likely returns with completions rather than sleeping.
    pub(crate) fn work_flagged(&mut self) -> bool {
        if !self.features.taskrun_flag {
            return false;
        }
        let mut sq = self.ring.submission();
        sq.sync();
        sq.taskrun()
    }

    /// True when a non-waiting enter would do nothing: no entries to submit, no backlog, no
    /// task work flagged by the kernel, no overflowed completions. Needs `TASKRUN_FLAG`.
    fn nothing_to_enter_for(&mut self) -> bool {
        if !self.features.taskrun_flag || !self.backlog.is_empty() {
            return false;
        }
        let mut sq = self.ring.submission();
        sq.sync();
        sq.is_empty() && !sq.taskrun() && !sq.cq_overflow()
    }

    fn enter_raw(
        &mut self,
        want: u32,
        args: Option<&types::SubmitArgs<'_, '_>>,
    ) -> io::Result<usize> {
        let mut sq = self.ring.submission();
        sq.sync();
        let to_submit = sq.len() as u32;
        if sq.cq_overflow() {
            self.stats.cq_overflows += 1;
        }
        drop(sq);
        // Every enter carries GETEVENTS: with DEFER_TASKRUN completions are only posted by an
        // enter that asks for events, and with NODROP it flushes overflowed completions.
        let mut flags = io_uring::EnterFlags::GETEVENTS.bits();
        self.stats.ring_enters += 1;
        if args.is_some() {
            flags |= io_uring::EnterFlags::EXT_ARG.bits();
        }
        // SAFETY: with EXT_ARG set, `args` is a valid io_uring_getevents_arg whose timespec
        // outlives the call (borrowed by `args`); without it no argument is passed. Every queued
        // entry met `push`'s contract.
        let res = unsafe {
            match (&self.registered, args) {
                (Some(ring), Some(args)) => ring.enter(
                    to_submit,
                    want,
                    flags,
                    (args as *const types::SubmitArgs<'_, '_>).cast(),
                    std::mem::size_of::<types::SubmitArgs<'_, '_>>(),
                ),
                (Some(ring), None) => ring.enter(to_submit, want, flags, std::ptr::null(), 0),
                (None, Some(args)) => {
                    self.ring
                        .submitter()
                        .enter(to_submit, want, flags, Some(args))
                }
                (None, None) => self
                    .ring
                    .submitter()
                    .enter::<libc::sigset_t>(to_submit, want, flags, None),
            }
        };
        if let Ok(n) = res {
            self.stats.ops_submitted += n as u64;
        }
        res
    }

    /// Moves backlog entries into the submission queue, submitting as it fills.
    #[cold]
    fn flush_backlog(&mut self) -> io::Result<()> {
        while !self.backlog.is_empty() {
            let mut sq = self.ring.submission();
            while let Some(entry) = self.backlog.front() {
                // SAFETY: backlog entries were queued through `push`, whose caller guaranteed
                // their memory outlives the last completion.
                if unsafe { sq.push(entry) }.is_err() {
                    break;
                }
                self.backlog.pop_front();
            }
            let full = sq.is_full();
            drop(sq);
            if !full || self.backlog.is_empty() {
                break;
            }
            // The queue is full and more wait: hand this batch to the kernel now.
            match self.enter_raw(0, None) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Drains the completion queue, collecting the wakers of ops that completed.
    #[inline]
    pub(crate) fn reap(&mut self, wakers: &mut Vec<Waker>) -> Reaped {
        let mut reaped = Reaped::default();
        // Multishot ops whose untaken completions passed their limit (allocates only then).
        let mut over_limit = Vec::new();
        // Owned sends that went short, to be continued (allocates only then).
        let mut short_sends = Vec::new();
        // The submission queue beside the completion queue: relays submit as they complete.
        let (_, mut sq, mut cq) = self.ring.split();
        cq.sync();
        let mut out = Requests {
            key: OpKey::NONE,
            sq: &mut sq,
            backlog: &mut self.backlog,
            shutting_down: self.shutting_down,
            queued_behind: 0,
            cancels: 0,
        };
        // Taken a batch at a time: the batch's slots are asked for first, so that their cache
        // misses overlap instead of stalling each completion in turn.
        let mut batch = [const { MaybeUninit::<cqueue::Entry>::uninit() }; REAP_BATCH];
        loop {
            let entries = cq.fill(&mut batch);
            if entries.is_empty() {
                break;
            }
            if entries.len() > 1 {
                for cqe in entries.iter() {
                    if let Some(key) = OpKey::from_user_data(cqe.user_data()) {
                        self.slab.prefetch(key);
                    }
                }
            }
            for cqe in entries.iter() {
                reaped.completions += 1;
                let done = Completion {
                    result: cqe.result(),
                    flags: cqe.flags(),
                };
                let user_data = cqe.user_data();
                match user_data {
                    TOKEN_IGNORE => continue,
                    TOKEN_WAKE => {
                        reaped.woken = true;
                        continue;
                    }
                    _ => {}
                }
                let Some(key) = OpKey::from_user_data(user_data) else {
                    continue;
                };
                out.key = key;
                let relay = Some((&mut out, OpKey::is_second(user_data)));
                match complete(
                    &mut self.slab,
                    key,
                    done,
                    wakers,
                    &mut self.graveyard,
                    relay,
                ) {
                    FollowUp::None => {}
                    FollowUp::CancelMultishot => over_limit.push(key),
                    FollowUp::SendRest => short_sends.push(key),
                }
            }
        }
        self.stats.sq_full += out.queued_behind;
        self.stats.cancels += out.cancels;
        drop(cq);
        drop(sq);
        // Both are empty on almost every turn: no iterator is made (and dropped) then.
        if !over_limit.is_empty() {
            for key in over_limit {
                self.cancel_multishot(key);
            }
        }
        if !short_sends.is_empty() {
            for key in short_sends {
                self.send_rest(key, wakers);
            }
        }
        self.stats.ops_completed += reaped.completions as u64;
        reaped
    }

    /// Continues an owned send that went short with the rest of its bytes, under its key; in a
    /// shutdown, ends it instead (see [`Driver::end_short_send`]).
    fn send_rest(&mut self, key: OpKey, wakers: &mut Vec<Waker>) {
        if self.shutting_down {
            self.end_short_send(key, wakers);
            return;
        }
        if let Some(Lifecycle::SendingOwned { bytes, to, .. }) = self.slab.get_mut(key) {
            let entry = owned_send::send_entry(to.get(), bytes);
            // SAFETY: as in `submit_owned_send`: the entry points at the slot's bytes, and the
            // socket stays open while the slot is an owned send (its future keeps it, or an
            // orphan does, and an orphaned slot is never continued).
            unsafe { self.push(entry.user_data(key.to_user_data())) };
        }
    }

    /// Ends an owned send that went short without continuing it: a shutdown's cancel may end a
    /// send that had sent a part with that part's count rather than `ECANCELED` (io_uring's
    /// partial-IO rule; the 6.18 kernel here reports `ECANCELED`), and a peer that reads
    /// slowly would then keep it going until the shutdown's limit. Its owner reads
    /// `ECANCELED`; its bytes are let go of.
    fn end_short_send(&mut self, key: OpKey, wakers: &mut Vec<Waker>) {
        let Some(state) = self.slab.get_mut(key) else {
            return;
        };
        let cancelled = Lifecycle::Completed(Completion {
            result: -libc::ECANCELED,
            flags: 0,
        });
        if let Lifecycle::SendingOwned { bytes, waker, .. } = std::mem::replace(state, cancelled) {
            owned_send::release(bytes, &mut self.graveyard);
            wakers.extend(waker);
        }
    }

    /// Cancels every op in flight and drives the ring until the kernel is done with all of
    /// them, or `limit` passes. Returns whether the kernel finished (if not, the caller must
    /// leak the slab: closing the ring does not wait for its ops).
    pub(crate) fn shutdown(&mut self, limit: Duration) -> bool {
        self.shutdown_cancelling(limit, self.features.cancel_any)
    }

    /// [`Driver::shutdown`], cancelling with one `IORING_ASYNC_CANCEL_ANY` (Linux 5.19) if
    /// `any`, else with one cancel per op the kernel owns (older kernels refuse the former with
    /// `EINVAL`, and nothing would be cancelled).
    fn shutdown_cancelling(&mut self, limit: Duration, any: bool) -> bool {
        let deadline = crate::time::deadline_after(Instant::now(), limit);
        let mut wakers = Vec::new();
        self.shutting_down = true;
        while self.slab.any_kernel_owned() {
            // Again each round: an op submitted after the last cancel (by a destructor) needs
            // its own, and a per-op cancel may have raced its op's submission.
            self.cancel_everything(any);
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if self
                .enter(true, Some((deadline - now).min(Duration::from_millis(10))))
                .is_err()
            {
                return false;
            }
            self.reap(&mut wakers);
            // Futures that still exist (not dropped) see -ECANCELED when next polled; nothing
            // runs them now.
            wakers.clear();
        }
        true
    }

    fn cancel_everything(&mut self, any: bool) {
        if any {
            let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build();
            // SAFETY: a cancel-any entry points at no memory.
            unsafe { self.push_detached(entry) };
            return;
        }
        for user_data in self.slab.kernel_owned() {
            let entry = opcode::AsyncCancel::new(user_data).build();
            // SAFETY: an async cancel names its target by user_data and points at no memory.
            unsafe { self.push_detached(entry) };
        }
    }

    /// Whether no dropped op's state waits to be freed.
    #[inline]
    pub(crate) fn graveyard_is_empty(&self) -> bool {
        self.graveyard.is_empty()
    }

    /// Takes the orphans the kernel is done with, to be dropped outside the driver's borrow.
    pub(crate) fn take_graveyard(&mut self) -> Vec<Box<dyn op::Orphan>> {
        std::mem::take(&mut self.graveyard)
    }

    /// Frees every slot's state (after [`Driver::shutdown`] returned true).
    pub(crate) fn drain_slots(&mut self) -> Vec<Lifecycle> {
        self.slab.drain()
    }
}

/// Completions reaped per batch (16 B each, on the stack): a loop turn at 64 busy connections
/// finds a few to a few dozen.
const REAP_BATCH: usize = 32;

/// What polling an owned send found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnedSendPoll {
    /// Not completed yet.
    Pending,
    /// Completed (whole, short with nothing more taken, or failed): the result.
    Done(Completion),
    /// Completed whole, unwatched: the slot was freed at the completion.
    Sent,
}

/// A placeholder state, replaced before anyone can see it.
const UNSEEN: Completion = Completion {
    result: 0,
    flags: 0,
};

/// What the driver does after handing a completion to its op.
#[derive(Debug, PartialEq, Eq)]
enum FollowUp {
    None,
    /// A multishot op's untaken completions just passed its limit: cancel it.
    CancelMultishot,
    /// An owned send went short: send the rest, under the same key.
    SendRest,
}

/// Hands one completion to its op, and says what must follow. A relay's completion (`relay`:
/// where it submits, and whether this is its send's) is handled here whole: a relay whose
/// owner is gone is freed once the kernel owns neither request; else its owner is woken if the
/// relay ended or stopped for want of buffers.
#[inline]
fn complete(
    slab: &mut OpSlab,
    key: OpKey,
    done: Completion,
    wakers: &mut Vec<Waker>,
    graveyard: &mut Vec<Box<dyn op::Orphan>>,
    relay: Option<(&mut Requests<'_, '_>, bool)>,
) -> FollowUp {
    let Some(state) = slab.get_mut(key) else {
        return FollowUp::None;
    };
    match state {
        Lifecycle::Waiting { .. } => {
            // Replaced, not assigned: the old state moves out whole, so no drop glue runs.
            if let Lifecycle::Waiting { waker: Some(w) } =
                std::mem::replace(state, Lifecycle::Completed(done))
            {
                wakers.push(w);
            }
        }
        Lifecycle::Multishot {
            queue,
            waker,
            finished,
            limit,
        } => {
            queue.push_back(done);
            let mut cancel = false;
            if !cqueue::more(done.flags) {
                *finished = true;
            } else if queue.len() > *limit as usize {
                // Once: the op ends with the cancel's completion.
                *limit = u32::MAX;
                cancel = true;
            }
            if let Some(w) = waker.take() {
                wakers.push(w);
            }
            if cancel {
                return FollowUp::CancelMultishot;
            }
        }
        Lifecycle::SendingOwned { bytes, waker, .. } => {
            let went = done.result;
            if went > 0 && (went as usize) < bytes.len() {
                // Short: the rest goes out under the same key, before the owner (which sends
                // nothing on the stream until this completes) can send anything else.
                bytes.advance(went as usize);
                return FollowUp::SendRest;
            }
            if waker.is_none() && went >= 0 && went as usize == bytes.len() {
                // Sent whole and nobody watches: the slot goes now, not when the owner next
                // looks (a connection waiting for its peer keeps no slot); its future, finding
                // its key gone, reads success. A failure stays for the owner to read.
                if let Some(Lifecycle::SendingOwned { bytes, .. }) = slab.remove(key) {
                    owned_send::release(bytes, graveyard);
                }
                return FollowUp::None;
            }
            // The whole send's count (an error stays the error: what went is lost with it).
            let whole = Completion {
                result: if went >= 0 {
                    went + bytes.sent() as i32
                } else {
                    went
                },
                flags: done.flags,
            };
            if let Lifecycle::SendingOwned { bytes, waker, .. } =
                std::mem::replace(state, Lifecycle::Completed(whole))
            {
                owned_send::release(bytes, graveyard);
                if let Some(w) = waker {
                    wakers.push(w);
                }
            }
        }
        Lifecycle::Orphaned(orphan) => {
            orphan.on_completion(done);
            if !cqueue::more(done.flags) {
                if let Some(Lifecycle::Orphaned(orphan)) = slab.remove(key) {
                    graveyard.push(orphan);
                }
            }
        }
        Lifecycle::Relay(state) => {
            let Some((out, second)) = relay else {
                return FollowUp::None;
            };
            if second {
                state.on_send(done, out);
            } else {
                state.on_receive(done, out);
            }
            if state.abandoned() && !state.kernel_owned() {
                if let Some(Lifecycle::Relay(state)) = slab.remove(key) {
                    // Its sockets and its ring handle go outside the driver's borrow.
                    graveyard.push(Box::new(state));
                }
            } else if let Some(w) = state.wake_owner() {
                wakers.push(w);
            }
        }
        // A second completion for a single-shot op does not happen; ignore it.
        Lifecycle::Completed(_) => {}
    }
    FollowUp::None
}

impl Driver {
    /// Registers a provided buffer ring and returns its group id.
    ///
    /// # Safety
    ///
    /// `addr` must point at `entries` page-aligned ring entries that stay valid until
    /// [`Driver::unregister_buf_ring`] or the ring's end.
    pub(crate) unsafe fn register_buf_ring(&mut self, addr: u64, entries: u16) -> io::Result<u16> {
        let (bgid, fresh) = match self.free_bgids.last() {
            Some(&bgid) => (bgid, false),
            None if self.next_bgid == u16::MAX => {
                return Err(io::Error::other("out of buffer group ids"));
            }
            None => (self.next_bgid, true),
        };
        // SAFETY: forwarded from the caller.
        unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(addr, entries, bgid, 0)
        }?;
        if fresh {
            self.next_bgid += 1;
        } else {
            self.free_bgids.pop();
        }
        self.stats.buf_rings += 1;
        Ok(bgid)
    }

    /// Puts `fd` in the registered file table; its slot, or `None` (table full or refused).
    pub(crate) fn register_file(&mut self, fd: std::os::fd::RawFd) -> Option<u32> {
        let slot = self.fixed.register(&self.ring, fd);
        self.stats.fixed_files = u64::from(self.fixed.in_use);
        slot
    }

    /// Empties `slot` of the registered file table (the table's reference to the file goes).
    pub(crate) fn unregister_file(&mut self, slot: u32) {
        // Failure means the slot holds nothing: nothing to undo.
        let _ = self.fixed.unregister(&self.ring, slot);
        self.stats.fixed_files = u64::from(self.fixed.in_use);
    }

    pub(crate) fn unregister_buf_ring(&mut self, bgid: u16) {
        // Failure means it is not registered: nothing to undo.
        if self.ring.submitter().unregister_buf_ring(bgid).is_ok() {
            self.stats.buf_rings = self.stats.buf_rings.saturating_sub(1);
            self.free_bgids.push(bgid);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    use io_uring::{opcode, types};

    use super::{op::Orphan, ring::RingConfig, slab::Lifecycle, Driver};

    /// [`super::complete`] for an op that is not a relay (nothing to submit for it).
    fn complete_alone(
        slab: &mut super::OpSlab,
        key: super::OpKey,
        done: super::Completion,
        wakers: &mut Vec<std::task::Waker>,
        graveyard: &mut Vec<Box<dyn Orphan>>,
    ) -> super::FollowUp {
        super::complete(slab, key, done, wakers, graveyard, None)
    }

    /// An owned send that went short is continued under its key with the rest of its bytes,
    /// and completes with the whole count (or the error that ended it); a ring buffer goes
    /// back to its ring only then. Watched, the result waits in the slot and the waker is
    /// woken; unwatched, a whole send frees its slot at once and a failure waits. For a ring
    /// buffer and a heap buffer. The kernel cannot be made to send short here, so the
    /// completions are handed to `complete` by hand.
    #[test]
    fn a_short_owned_send_continues_with_the_rest() {
        use super::owned_send::SendBytes;
        use super::slab::{Completion, OpSlab, PackedTarget, SendTarget};
        use super::FollowUp;
        use crate::buf::ring::BufRing;
        use std::io::Write;

        crate::block_on(async {
            let ring = BufRing::new(8, 256).unwrap();
            let (a, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
            let fd = crate::fd::SharedFd::new(a.into());
            let mut received = crate::ops::recv_multishot(&fd, &ring).unwrap();
            let mut slab = OpSlab::new();
            let (mut wakers, mut graveyard) = (Vec::new(), Vec::new());
            let cases = [(&[4, 6][..], 10), (&[3, -libc::EPIPE][..], -libc::EPIPE)];
            let variants = cases.iter().flat_map(|c| {
                [
                    (c, false, false),
                    (c, true, false),
                    (c, false, true),
                    (c, true, true),
                ]
            });
            for ((parts, whole), heap, watched) in variants {
                let bytes = if heap {
                    SendBytes::from(b"0123456789".to_vec())
                } else {
                    peer.write_all(b"0123456789").unwrap();
                    let crate::ops::Received::Data(chunk) = received.next().await.unwrap() else {
                        panic!("expected data");
                    };
                    SendBytes::from(chunk)
                };
                let lent = usize::from(!heap);
                let key = slab.insert(Lifecycle::SendingOwned {
                    bytes,
                    waker: watched.then(|| std::task::Waker::noop().clone()),
                    to: PackedTarget::new(SendTarget::Fd(-1)),
                });
                let (first, last) = (parts[0], parts[1]);
                let short = Completion {
                    result: first,
                    flags: 0,
                };
                assert_eq!(
                    complete_alone(&mut slab, key, short, &mut wakers, &mut graveyard),
                    FollowUp::SendRest
                );
                match slab.get_mut(key) {
                    Some(Lifecycle::SendingOwned { bytes, .. }) => {
                        assert_eq!(bytes.as_slice(), &b"0123456789"[first as usize..]);
                        assert_eq!(bytes.sent(), first as u32);
                    }
                    other => panic!("not continued: {other:?}"),
                }
                assert_eq!(ring.lent(), lent, "the rest is still to be sent");
                let done = Completion {
                    result: last,
                    flags: 0,
                };
                assert_eq!(
                    complete_alone(&mut slab, key, done, &mut wakers, &mut graveyard),
                    FollowUp::None
                );
                if watched || *whole < 0 {
                    assert!(matches!(
                        slab.get_mut(key),
                        Some(Lifecycle::Completed(c)) if c.result == *whole
                    ));
                    slab.remove(key);
                } else {
                    assert!(
                        slab.get_mut(key).is_none(),
                        "an unwatched whole send's slot"
                    );
                }
                assert_eq!(wakers.len(), usize::from(watched), "woken if watched");
                wakers.clear();
                assert_eq!(ring.lent(), 0, "back in the ring once the send is done");
            }
            assert!(wakers.is_empty() && graveyard.is_empty());
        });
    }

    /// Unwatched, an owned send that completes whole frees its slot at the completion, and its
    /// poll reads `Sent`: on the first completion, and for an empty send. One the kernel took
    /// nothing of (0 of more) or failed keeps its slot for its owner to read. Watched (a waker
    /// given), the result waits too; a later unwatched poll drops the kept waker.
    #[test]
    fn an_unwatched_owned_send_frees_its_slot_only_when_whole() {
        use super::owned_send::SendBytes;
        use super::slab::{Completion, PackedTarget, SendTarget};
        use super::{FollowUp, OwnedSendPoll};

        let mut driver = Driver::new(RingConfig {
            entries: 8,
            cq_entries: None,
            max_io_workers: 0,
        })
        .unwrap();
        let (mut wakers, mut graveyard) = (Vec::new(), Vec::new());
        let noop = std::task::Waker::noop();
        // (bytes, the completion's result, what an unwatched poll then reads)
        let cases = [
            (b"0123".to_vec(), 4, OwnedSendPoll::Sent),
            (Vec::new(), 0, OwnedSendPoll::Sent),
            (
                b"0123".to_vec(),
                0,
                OwnedSendPoll::Done(Completion {
                    result: 0,
                    flags: 0,
                }),
            ),
            (
                b"0123".to_vec(),
                -libc::EPIPE,
                OwnedSendPoll::Done(Completion {
                    result: -libc::EPIPE,
                    flags: 0,
                }),
            ),
        ];
        for (bytes, result, unwatched) in cases {
            for watched in [false, true] {
                let key = driver.slab.insert(Lifecycle::SendingOwned {
                    bytes: SendBytes::from(bytes.clone()),
                    waker: None,
                    to: PackedTarget::new(SendTarget::Fd(-1)),
                });
                assert_eq!(driver.poll_owned_send(key, None), OwnedSendPoll::Pending);
                if watched {
                    assert_eq!(
                        driver.poll_owned_send(key, Some(noop)),
                        OwnedSendPoll::Pending
                    );
                }
                let done = Completion { result, flags: 0 };
                assert_eq!(
                    complete_alone(&mut driver.slab, key, done, &mut wakers, &mut graveyard),
                    FollowUp::None
                );
                assert_eq!(wakers.len(), usize::from(watched));
                wakers.clear();
                let want = match (watched, unwatched) {
                    (true, _) => OwnedSendPoll::Done(done),
                    (false, want) => want,
                };
                assert_eq!(
                    driver.poll_owned_send(key, None),
                    want,
                    "{bytes:?} {result}"
                );
                assert_eq!(driver.in_flight(), 0, "the slot is free once read");
            }
        }
        // A waker kept by an awaiting poll is dropped by a later unwatched one.
        let key = driver.slab.insert(Lifecycle::SendingOwned {
            bytes: SendBytes::from(b"x".to_vec()),
            waker: None,
            to: PackedTarget::new(SendTarget::Fd(-1)),
        });
        assert_eq!(
            driver.poll_owned_send(key, Some(noop)),
            OwnedSendPoll::Pending
        );
        assert_eq!(driver.poll_owned_send(key, None), OwnedSendPoll::Pending);
        let done = Completion {
            result: 1,
            flags: 0,
        };
        complete_alone(&mut driver.slab, key, done, &mut wakers, &mut graveyard);
        assert!(wakers.is_empty(), "nobody watches");
        assert_eq!(driver.poll_owned_send(key, None), OwnedSendPoll::Sent);
        assert!(graveyard.is_empty());
    }

    /// In a shutdown a short owned send is ended, not continued: its owner reads `ECANCELED`,
    /// its waker is woken and its bytes let go of; outside one it is continued (an entry
    /// queued, the slot unchanged).
    #[test]
    fn a_shutdown_ends_a_short_owned_send_instead_of_continuing_it() {
        use super::owned_send::SendBytes;
        use super::slab::{Completion, PackedTarget, SendTarget};

        let mut driver = Driver::new(RingConfig {
            entries: 8,
            cq_entries: None,
            max_io_workers: 0,
        })
        .unwrap();
        let mut wakers = Vec::new();
        for shutting_down in [false, true] {
            driver.shutting_down = shutting_down;
            let key = driver.slab.insert(Lifecycle::SendingOwned {
                bytes: {
                    let mut bytes = SendBytes::from(b"sentrest".to_vec());
                    bytes.advance(4);
                    bytes
                },
                waker: Some(std::task::Waker::noop().clone()),
                to: PackedTarget::new(SendTarget::Fd(-1)),
            });
            let queued = driver.ring.submission().len();
            driver.send_rest(key, &mut wakers);
            if shutting_down {
                assert!(matches!(
                    driver.slab.get_mut(key),
                    Some(Lifecycle::Completed(Completion { result, .. })) if *result == -libc::ECANCELED
                ));
                assert_eq!(wakers.len(), 1);
                assert_eq!(driver.ring.submission().len(), queued, "nothing sent");
            } else {
                assert!(matches!(
                    driver.slab.get_mut(key),
                    Some(Lifecycle::SendingOwned { .. })
                ));
                assert_eq!(
                    driver.ring.submission().len(),
                    queued + 1,
                    "the rest queued"
                );
                // Never submitted: this driver goes without entering its ring again.
            }
            driver.slab.remove(key);
        }
    }

    /// The read buffer an orphaned read owns until its last completion.
    struct ReadBuf(#[allow(dead_code)] Box<[u8; 64]>);
    impl Orphan for ReadBuf {}

    /// Ops that never complete on their own (reads of an empty pipe and a multishot poll),
    /// then a shutdown that cancels them one by one, as on kernels without cancel-any.
    #[test]
    fn a_shutdown_without_cancel_any_cancels_op_by_op() {
        let mut driver = Driver::new(RingConfig {
            entries: 8,
            cq_entries: None,
            max_io_workers: 0,
        })
        .unwrap();
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh fds nothing else owns.
        let (rx, _tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for _ in 0..3 {
            // As a dropped read future leaves it: the slot owns the buffer.
            let mut buf = Box::new([0u8; 64]);
            let ptr = buf.as_mut_ptr();
            let key = driver
                .slab
                .insert(Lifecycle::Orphaned(Box::new(ReadBuf(buf))));
            let read = opcode::Read::new(types::Fd(rx.as_raw_fd()), ptr, 64)
                .build()
                .user_data(key.to_user_data());
            // SAFETY: the buffer is owned by the slot (a Box: its heap address does not move)
            // until the op's last completion frees the slot.
            unsafe { driver.push(read) };
        }
        driver.enter(false, None).unwrap();
        assert_eq!(driver.slab.live(), 3);
        assert!(driver.shutdown_cancelling(Duration::from_secs(5), false));
        assert_eq!(driver.slab.live(), 0);
    }

    /// Relays in flight (one's receive armed, the other's sends held by a peer that does not
    /// read, its receive paused) are ended by a shutdown that cancels op by op, which names
    /// both requests of each; their owners read `ECANCELED` and every ring buffer comes back.
    #[test]
    fn a_shutdown_without_cancel_any_ends_relays() {
        use std::future::Future;
        use std::io::Write;

        use crate::fd::SharedFd;
        crate::block_on(async {
            let ring = crate::buf::ring::BufRing::new(64, 1024).unwrap();
            let (quiet, quiet_peer) = std::os::unix::net::UnixStream::pair().unwrap();
            let (busy, busy_peer) = std::os::unix::net::UnixStream::pair().unwrap();
            let quiet = SharedFd::new(OwnedFd::from(quiet));
            let busy = SharedFd::new(OwnedFd::from(busy));
            // The busy peer writes (from its own thread) and never reads.
            let mut writer = busy_peer.try_clone().unwrap();
            let writing =
                std::thread::spawn(move || while writer.write_all(&[7u8; 16 * 1024]).is_ok() {});
            let mut relays = [
                crate::ops::relay(&quiet, &ring, &quiet, 8).unwrap(),
                crate::ops::relay(&busy, &ring, &busy, 8).unwrap(),
            ];
            let noop = &mut std::task::Context::from_waker(std::task::Waker::noop());
            for _ in 0..50 {
                for relay in &mut relays {
                    assert!(std::pin::Pin::new(relay).poll(noop).is_pending());
                }
                crate::time::sleep(Duration::from_millis(2)).await;
            }
            assert!(ring.lent() > 0, "the busy relay holds chunks");
            let ended = crate::runtime::context::with_driver(|driver| {
                driver.shutdown_cancelling(Duration::from_secs(5), false)
            });
            assert_eq!(ended, Some(true), "the kernel still owns a relay's request");
            for relay in &mut relays {
                match std::pin::Pin::new(relay).poll(noop) {
                    std::task::Poll::Ready(Err(e)) => {
                        assert_eq!(e.raw_os_error(), Some(libc::ECANCELED), "{e}");
                    }
                    other => panic!("a relay after the shutdown: {other:?}"),
                }
            }
            assert_eq!(ring.lent(), 0);
            drop((relays, quiet, busy, quiet_peer, busy_peer));
            writing.join().unwrap();
        });
    }
}
