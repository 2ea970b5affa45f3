//! Relays: a multishot receive on one socket whose chunks the driver itself sends on another
//! socket (or back on the same one: an echo), each straight from the ring buffer it arrived
//! in, without waking the relay's owner.
//!
//! # Design
//!
//! One slot holds both requests ([`Lifecycle::Relay`](super::slab::Lifecycle)): the receive's
//! `user_data` is the slot's key, the send's is [`OpKey::second_user_data`]. Each receive
//! completion with bytes hands its ring buffer to the send: at once if no send is in flight,
//! else behind the chunks already waiting. Each send completion gives its buffer back to the
//! ring and sends the next waiting chunk. Sends go one at a time, which keeps the bytes in
//! order (`MSG_WAITALL`; a send the kernel still ends short is continued with the rest). So a
//! chunk costs the driver two completions and two entries and wakes no task: the owner is woken
//! only when the relay ends (end of stream, all sent; or an error), or when the core's ring
//! ran dry, which the owner's future waits out with a back-off before re-arming (the driver has
//! no timers).
//!
//! Memory: the state a chunk's completions touch sits in the slot itself (48 B: the slot is
//! one cache line), and what they rarely need (the waiting chunks, the owner's waker, a
//! dropped future's sockets, the error, the source socket) in a box beside. The chunks it holds
//! are buffer ids ([`Lent`]), not `RingBuf`s: the slot's one ring handle keeps the ring, and
//! every path that lets go of a chunk gives its buffer back by id (the relay's drop too).
//!
//! Bounded: past `max_waiting` chunks waiting (a destination that takes bytes slower than the
//! source sends them), the receive is cancelled, so that one relay cannot take the core's ring
//! from every other connection; the bytes wait in the source socket, where its flow control
//! holds the peer. The receive is re-armed when the waiting chunks are down to half. Nothing
//! is lost or reordered: a cancelled receive takes nothing more from the socket, and the next
//! one starts where it stopped.
//!
//! Failure: the first error (either request's) ends the relay: the other request is
//! cancelled, the waiting chunks go back to the ring, and the owner reads the error once the
//! kernel owns neither request. A dropped future leaves its sockets in the slot
//! ([`RelayState::abandon`]): both requests are cancelled, and the slot goes when the kernel is
//! done with both.

use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Waker;

use io_uring::{cqueue, opcode, squeue, types};

use super::op::Orphan;
use super::slab::{Completion, CompletionQueue, OpKey, PackedTarget, SendTarget};
use crate::buf::ring::Inner;
use crate::fd::SharedFd;

/// The failure code for a send the kernel completed with nothing taken (it has no errno).
pub(crate) const WRITE_ZERO: i32 = i32::MIN;

/// Set apart from a send's `-errno` in a failure code: the relay's destination refused the
/// bytes (see [`RelayState::fail_send`]). Errnos are below it.
const SEND_SIDE: i32 = 1 << 16;

/// The failure code of a send the destination refused with `errno` (0: it took nothing).
pub(crate) fn encode_send_failure(errno: i32) -> i32 {
    if errno == 0 {
        WRITE_ZERO
    } else {
        -errno - SEND_SIDE
    }
}

/// A failure code's side and errno: `(true, errno)` for the send's (errno 0: nothing taken),
/// `(false, errno)` otherwise (the receive's, or a stop).
pub(crate) fn decode_failure(code: i32) -> (bool, i32) {
    match code {
        WRITE_ZERO => (true, 0),
        code if code <= -SEND_SIDE => (true, -(code + SEND_SIDE)),
        code => (false, -code),
    }
}

/// A relay's state, in its slot. What every completion touches is here; what only a waiting
/// chunk, the owner's waker or a dropped future needs is in a box beside ([`RelayCold`]), so
/// that a chunk's round trip reads the slot and nothing else of the relay's (each lookup of
/// memory the kernel's work between two completions evicted is a cache miss).
pub(crate) struct RelayState {
    /// The ring the receive takes buffers from (the handle that keeps it; the chunks the relay
    /// holds have none of their own).
    ring: Rc<Inner>,
    cold: Box<RelayCold>,
    /// Bytes sent.
    relayed: u64,
    /// The chunk the send in flight sends (what is left of it, after a short send); `len` 0:
    /// no send in flight.
    sending: Lent,
    /// Completions that moved bytes (wrapping): what an owner watching for idleness compares.
    moved: u32,
    /// The socket sent to (may be the one received from).
    to: PackedTarget,
    /// Chunks waiting in `cold.queue` (at most the ring's buffers, at most 32,768).
    waiting: u16,
    /// [`Flags`]: where the receive is, and how the relay stands.
    flags: u8,
}

/// A relay's state bits (its slot keeps them in one byte: the state is at most 48 bytes, so
/// that the slot is one cache line).
struct Flags;

impl Flags {
    /// The kernel owns the receive (until its completion without `F_MORE`).
    const RECV_ARMED: u8 = 1;
    /// A cancel went for the armed receive.
    const RECV_CANCELLED: u8 = 1 << 1;
    /// Stopped for backpressure: re-armed when the waiting chunks are down to half.
    const PAUSED: u8 = 1 << 2;
    /// Stopped because the ring ran dry: the owner re-arms after a back-off.
    const DRY: u8 = 1 << 3;
    /// The source reached its end.
    const EOF: u8 = 1 << 4;
    /// The owner's future is gone (its sockets are in `cold.kept`).
    const ABANDONED: u8 = 1 << 5;
    /// It failed: the code is in `cold.failed`.
    const FAILED: u8 = 1 << 6;
}

/// What a relay needs off its fast path.
struct RelayCold {
    /// Chunks received and not yet sent, oldest first (no heap memory while empty: a relay
    /// whose peer waits for its reply holds none).
    queue: VecDeque<Lent>,
    /// The owner's, woken when the relay ends or the ring ran dry.
    waker: Option<Waker>,
    /// The sockets, kept here once the owner's future is gone, until the kernel is done.
    kept: Option<[SharedFd; 2]>,
    /// The first error (once [`Flags::FAILED`] is set), as `-errno`, with [`SEND_SIDE`] set
    /// apart for the send's (or [`WRITE_ZERO`]; see [`decode_failure`]).
    failed: i32,
    /// The socket received from (needed when the receive is armed).
    from: PackedTarget,
    bgid: u16,
    /// Waiting chunks beyond which the receive pauses.
    max_waiting: u16,
}

/// A ring buffer a relay holds, out of its ring: `len` bytes from `start` in buffer `bid`. It
/// has no handle of its own: the relay's `ring` keeps the ring, and the relay gives the buffer
/// back by its id (every path that lets go of one, and the relay's drop, does).
#[derive(Debug, Clone, Copy)]
struct Lent {
    start: u32,
    len: u32,
    bid: u16,
}

impl Lent {
    const NONE: Lent = Lent {
        start: 0,
        len: 0,
        bid: 0,
    };
}

impl Drop for RelayState {
    /// Gives back the buffers it still holds. A relay is only dropped once the kernel owns
    /// neither of its requests (its send reads none of them then).
    fn drop(&mut self) {
        debug_assert!(!self.kernel_owned(), "a relay dropped under the kernel");
        if self.sending.len > 0 {
            self.ring.give_back_lent(self.sending.bid);
        }
        for chunk in self.cold.queue.drain(..) {
            self.ring.give_back_lent(chunk.bid);
        }
    }
}

impl Orphan for RelayState {}

impl std::fmt::Debug for RelayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayState")
            .field("recv_armed", &self.has(Flags::RECV_ARMED))
            .field("sending", &self.sending.len)
            .field("waiting", &self.waiting)
            .field("eof", &self.has(Flags::EOF))
            .field("failed", &self.cold.failed)
            .field("relayed", &self.relayed)
            .finish()
    }
}

/// What the owner's poll finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayPoll {
    /// Going on (the waker is kept).
    Pending,
    /// The ring ran dry and the receive stopped: back off, then [`Driver::relay_rearm`]. With
    /// the relay's progress (see [`RelayState::progress`]).
    ///
    /// [`Driver::relay_rearm`]: super::Driver::relay_rearm
    Dry(u32),
    /// Over: the bytes sent (the source ended and all went), or the error's code (see
    /// [`decode_failure`]).
    Done(Result<u64, i32>),
}

/// Where a relay's events submit the entries they need: straight into the submission queue
/// (the completion queue's loop holds it beside), or behind the backlog when it is full.
pub(crate) struct Requests<'a, 'q> {
    /// The relay the event is for.
    pub(crate) key: OpKey,
    pub(crate) sq: &'a mut io_uring::SubmissionQueue<'q>,
    pub(crate) backlog: &'a mut VecDeque<squeue::Entry>,
    pub(crate) shutting_down: bool,
    /// Entries that found the queue full and went to the backlog.
    pub(crate) queued_behind: u64,
    /// Cancels queued.
    pub(crate) cancels: u64,
}

impl Requests<'_, '_> {
    /// Queues `entry` for submission.
    ///
    /// # Safety
    ///
    /// As for `Driver::push`: whatever the entry points at stays valid and unmoved until its
    /// last completion.
    #[inline]
    unsafe fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: forwarded from the caller.
        if self.backlog.is_empty() && unsafe { self.sq.push(&entry) }.is_ok() {
            return;
        }
        self.queued_behind += 1;
        self.backlog.push_back(entry);
    }

    /// Queues a cancel of the request named by `user_data`.
    fn cancel(&mut self, user_data: u64) {
        self.cancels += 1;
        // SAFETY: a cancel names its target by user_data and points at no memory; its own
        // completion is ignored (user_data 0).
        unsafe { self.push(opcode::AsyncCancel::new(user_data).build()) };
    }
}

impl RelayState {
    /// A relay from `from` to `to` on `ring` (group `bgid`), pausing past `max_waiting`
    /// chunks; nothing armed yet ([`RelayState::start`] arms).
    pub(crate) fn new(
        from: SendTarget,
        to: SendTarget,
        ring: Rc<Inner>,
        bgid: u16,
        max_waiting: u32,
    ) -> RelayState {
        RelayState {
            ring,
            cold: Box::new(RelayCold {
                queue: VecDeque::new(),
                waker: None,
                kept: None,
                failed: 0,
                from: PackedTarget::new(from),
                bgid,
                max_waiting: u16::try_from(max_waiting).unwrap_or(u16::MAX).max(1),
            }),
            relayed: 0,
            moved: 0,
            sending: Lent::NONE,
            to: PackedTarget::new(to),
            waiting: 0,
            flags: 0,
        }
    }

    #[inline]
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    #[inline]
    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Whether the kernel may still post completions for either request.
    #[inline]
    pub(crate) fn kernel_owned(&self) -> bool {
        self.has(Flags::RECV_ARMED) || self.sending.len > 0
    }

    /// A count that changes whenever the relay moves bytes (a receive or a send completes).
    pub(crate) fn progress(&self) -> u32 {
        self.moved
    }

    /// The owner's future is gone.
    #[inline]
    pub(crate) fn abandoned(&self) -> bool {
        self.has(Flags::ABANDONED)
    }

    #[inline]
    fn live(&self) -> bool {
        !self.has(Flags::FAILED | Flags::ABANDONED)
    }

    /// Starts the relay. An adopted receive's completions that nobody took (`queued`, with
    /// the kernel's flags) go first; `recv_armed` says whether the kernel still owns that
    /// receive or may post to it (it has not posted its last completion, or that one is in
    /// `queued`).
    pub(crate) fn start(
        &mut self,
        recv_armed: bool,
        queued: CompletionQueue,
        out: &mut Requests<'_, '_>,
    ) {
        self.set(Flags::RECV_ARMED, recv_armed);
        for done in queued {
            self.on_receive(done, out);
        }
        self.rearm_if_due(out);
    }

    /// A completion of the receive.
    #[inline]
    pub(crate) fn on_receive(&mut self, done: Completion, out: &mut Requests<'_, '_>) {
        if !cqueue::more(done.flags) {
            self.set(Flags::RECV_ARMED | Flags::RECV_CANCELLED, false);
        }
        let result = done.result;
        if result > 0 {
            match self.ring.lend(done.flags) {
                Some(bid) if self.live() => {
                    let (_, size) = self.ring.buffer(bid);
                    let chunk = Lent {
                        start: 0,
                        len: (result as u32).min(size),
                        bid,
                    };
                    self.moved = self.moved.wrapping_add(1);
                    if self.sending.len == 0 {
                        self.sending = chunk;
                        self.push_send(out);
                    } else {
                        self.cold.queue.push_back(chunk);
                        self.waiting += 1;
                        if self.waiting > self.cold.max_waiting {
                            self.set(Flags::PAUSED, true);
                            self.cancel_recv(out);
                        }
                    }
                }
                // Bytes for a relay that failed or was dropped: the buffer goes back.
                Some(bid) => self.ring.give_back_lent(bid),
                None => self.fail(-libc::EIO, out),
            }
        } else {
            self.ring.give_back(done.flags);
            match -result {
                0 => self.set(Flags::EOF, true),
                libc::ENOBUFS => self.set(Flags::DRY, self.live()),
                // A cancel of ours (a pause, or the end of a failed or dropped relay),
                // unless the core is shutting down.
                libc::ECANCELED if !out.shutting_down => {}
                errno => self.fail(-errno, out),
            }
        }
        self.rearm_if_due(out);
    }

    /// A completion of the send.
    #[inline]
    pub(crate) fn on_send(&mut self, done: Completion, out: &mut Requests<'_, '_>) {
        let chunk = self.sending;
        if chunk.len == 0 {
            return;
        }
        self.moved = self.moved.wrapping_add(1);
        let went = done.result;
        if went >= 0 && (went as u32) < chunk.len {
            if went == 0 {
                self.let_go_of_sending();
                self.fail_send(0, out);
            } else if !self.live() || out.shutting_down {
                self.let_go_of_sending();
                self.fail(-libc::ECANCELED, out);
            } else {
                // Short despite MSG_WAITALL: the rest goes next, before any waiting chunk.
                self.sending.start += went as u32;
                self.sending.len -= went as u32;
                self.relayed += went as u64;
                self.push_send(out);
            }
            return;
        }
        // The buffer goes back to the ring here (the slot's `ring` handle keeps the ring).
        self.let_go_of_sending();
        if went < 0 {
            // `EPIPE` is the destination's refusal: its peer closed (a reset that comes after
            // the peer's end reads so); the source may still be fine. Anything else (a reset
            // with no end before it, a timeout, a cancel of ours, a local error) ends it as a
            // failure of the connection.
            if went == -libc::EPIPE {
                self.fail_send(libc::EPIPE, out);
            } else {
                self.fail(went, out);
            }
            return;
        }
        self.relayed += went as u64;
        if out.shutting_down && self.live() {
            // A shutdown sends nothing more (a peer that reads slowly would hold it up).
            self.fail(-libc::ECANCELED, out);
            return;
        }
        if self.waiting > 0 && self.live() {
            if let Some(next) = self.cold.queue.pop_front() {
                self.waiting -= 1;
                if self.waiting == 0 {
                    // A burst is over: its memory goes rather than stay per relay.
                    self.cold.queue = VecDeque::new();
                }
                self.sending = next;
                self.push_send(out);
            }
        }
        self.rearm_if_due(out);
    }

    /// The send in flight is over: its buffer goes back to the ring.
    #[inline]
    fn let_go_of_sending(&mut self) {
        self.ring.give_back_lent(self.sending.bid);
        self.sending = Lent::NONE;
    }

    /// Gives the waiting chunks back to the ring.
    fn drop_waiting(&mut self) {
        for chunk in self.cold.queue.drain(..) {
            self.ring.give_back_lent(chunk.bid);
        }
        self.cold.queue = VecDeque::new();
        self.waiting = 0;
    }

    /// The owner's future is gone: `fds` stay until the kernel is done; both requests are
    /// cancelled and the waiting chunks go back to the ring.
    pub(crate) fn abandon(&mut self, fds: [SharedFd; 2], out: &mut Requests<'_, '_>) {
        self.set(Flags::ABANDONED, true);
        self.cold.kept = Some(fds);
        self.cold.waker = None;
        self.stop(out);
    }

    /// What the owner finds: see [`RelayPoll`]. `waker` is kept while the relay goes on.
    pub(crate) fn poll(&mut self, waker: &Waker) -> RelayPoll {
        if !self.kernel_owned() {
            if self.has(Flags::FAILED) {
                return RelayPoll::Done(Err(self.cold.failed));
            }
            if self.has(Flags::EOF) {
                return RelayPoll::Done(Ok(self.relayed));
            }
            if self.has(Flags::DRY) {
                return RelayPoll::Dry(self.progress());
            }
        }
        match &self.cold.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.cold.waker = Some(waker.clone()),
        }
        RelayPoll::Pending
    }

    /// After an event: the owner's waker if it has something to see (the relay is over, or
    /// the ring ran dry).
    #[inline]
    pub(crate) fn wake_owner(&mut self) -> Option<Waker> {
        if self.kernel_owned() || !self.has(Flags::FAILED | Flags::EOF | Flags::DRY) {
            return None;
        }
        self.cold.waker.take()
    }

    /// Re-arms a receive the ring's running dry stopped (the owner waited a while).
    pub(crate) fn rearm_after_dry(&mut self, out: &mut Requests<'_, '_>) {
        self.set(Flags::DRY, false);
        self.rearm_if_due(out);
    }

    /// Re-arms the receive if it stopped and should go on (the usual case, armed, is one test).
    #[inline]
    fn rearm_if_due(&mut self, out: &mut Requests<'_, '_>) {
        if !self.has(Flags::RECV_ARMED) {
            self.rearm(out);
        }
    }

    #[cold]
    fn rearm(&mut self, out: &mut Requests<'_, '_>) {
        if !self.live() || self.has(Flags::EOF | Flags::DRY) || out.shutting_down {
            return;
        }
        if self.has(Flags::PAUSED) && self.waiting > self.cold.max_waiting / 2 {
            return;
        }
        self.set(Flags::PAUSED, false);
        self.set(Flags::RECV_ARMED, true);
        let bgid = self.cold.bgid;
        let entry = match self.cold.from.get() {
            SendTarget::Fixed(slot) => opcode::RecvMulti::new(types::Fixed(slot), bgid),
            SendTarget::Fd(fd) => opcode::RecvMulti::new(types::Fd(fd), bgid),
        };
        // SAFETY: a multishot receive with buffer select points at no memory of ours: the
        // kernel picks buffers from the ring, which the slot's `ring` handle keeps alive; the
        // owner keeps the socket open until the kernel owns neither request.
        unsafe { out.push(entry.build().user_data(out.key.to_user_data())) };
    }

    #[inline]
    fn push_send(&mut self, out: &mut Requests<'_, '_>) {
        let chunk = self.sending;
        let (buffer, _) = self.ring.buffer(chunk.bid);
        let at = buffer.wrapping_add(chunk.start as usize);
        let entry = super::owned_send::send_entry_raw(self.to.get(), at, chunk.len as usize);
        // SAFETY: the entry points at the part of the ring buffer `sending` names that the
        // receive filled (`start + len` within it), which stays lent (out of the ring, so the
        // kernel selects it for no receive) until this send's completion lets go of it; the
        // slot's `ring` handle keeps the buffers allocated, and the owner keeps the socket
        // open until the kernel owns neither request.
        unsafe { out.push(entry.user_data(out.key.second_user_data())) };
    }

    fn fail(&mut self, errno: i32, out: &mut Requests<'_, '_>) {
        if !self.has(Flags::FAILED) {
            self.set(Flags::FAILED, true);
            self.cold.failed = errno;
        }
        self.stop(out);
    }

    /// Fails the relay because its destination refused a send (`errno`: `EPIPE`; 0: the kernel
    /// took nothing). The owner can tell this from other failures: the source may still be
    /// fine (a proxy's other direction, reading from this destination, may have more to
    /// deliver).
    fn fail_send(&mut self, errno: i32, out: &mut Requests<'_, '_>) {
        self.fail(encode_send_failure(errno), out);
    }

    /// Cancels what the kernel owns and gives the waiting chunks back. The receive is
    /// cancelled even if a pause cancelled it already (a second cancel is harmless; a relay
    /// left armed would keep its owner waiting for the peer).
    fn stop(&mut self, out: &mut Requests<'_, '_>) {
        self.drop_waiting();
        self.set(Flags::RECV_CANCELLED, false);
        self.cancel_recv(out);
        if self.sending.len > 0 {
            // Once per stop, and a stopped relay sends nothing new under the key: a second
            // stop's cancel (a failure after a failure) finds this send or nothing.
            out.cancel(out.key.second_user_data());
        }
    }

    fn cancel_recv(&mut self, out: &mut Requests<'_, '_>) {
        if self.has(Flags::RECV_ARMED) && !self.has(Flags::RECV_CANCELLED) {
            self.set(Flags::RECV_CANCELLED, true);
            out.cancel(out.key.to_user_data());
        }
    }
}
