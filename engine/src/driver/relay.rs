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
use super::slab::{Completion, CompletionQueue, OpKey, SendTarget};
use crate::buf::ring::{Inner, RingBuf};
use crate::fd::SharedFd;

/// The failure code for a send the kernel completed with nothing taken (it has no errno).
pub(crate) const WRITE_ZERO: i32 = i32::MIN;

/// A relay's state, boxed in its slot.
pub(crate) struct RelayState {
    /// The socket received from.
    from: SendTarget,
    /// The socket sent to (may be `from`).
    to: SendTarget,
    /// The ring the receive takes buffers from, and its group id.
    ring: Rc<Inner>,
    bgid: u16,
    /// Waiting chunks beyond which the receive pauses.
    max_waiting: u32,
    /// The chunk the send in flight sends (what is left of it, after a short send).
    sending: Option<RingBuf>,
    /// Chunks received and not yet sent, oldest first (no heap memory while empty: a relay
    /// whose peer waits for its reply holds none).
    waiting: VecDeque<RingBuf>,
    /// The kernel owns the receive (until its completion without `F_MORE`).
    recv_armed: bool,
    /// A cancel went for the armed receive.
    recv_cancelled: bool,
    /// A cancel went for the send in flight.
    send_cancelled: bool,
    /// Stopped for backpressure: re-armed when the waiting chunks are down to half.
    paused: bool,
    /// Stopped because the ring ran dry: the owner re-arms after a back-off.
    dry: bool,
    /// The source reached its end.
    eof: bool,
    /// The first error, as `-errno` (or [`WRITE_ZERO`]); 0: none.
    failed: i32,
    /// Bytes received, and bytes sent.
    received: u64,
    relayed: u64,
    /// The owner's, woken when the relay ends or the ring ran dry.
    waker: Option<Waker>,
    /// The sockets, kept here once the owner's future is gone, until the kernel is done.
    kept: Option<[SharedFd; 2]>,
}

impl Orphan for RelayState {}

impl std::fmt::Debug for RelayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayState")
            .field("recv_armed", &self.recv_armed)
            .field("sending", &self.sending.as_ref().map(|c| c.len()))
            .field("waiting", &self.waiting.len())
            .field("eof", &self.eof)
            .field("failed", &self.failed)
            .field("received", &self.received)
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
    Dry(u64),
    /// Over: the bytes sent (the source ended and all went), or the error (`-errno`, or
    /// [`WRITE_ZERO`]).
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
            from,
            to,
            ring,
            bgid,
            max_waiting: max_waiting.max(1),
            sending: None,
            waiting: VecDeque::new(),
            recv_armed: false,
            recv_cancelled: false,
            send_cancelled: false,
            paused: false,
            dry: false,
            eof: false,
            failed: 0,
            received: 0,
            relayed: 0,
            waker: None,
            kept: None,
        }
    }

    /// Whether the kernel may still post completions for either request.
    #[inline]
    pub(crate) fn kernel_owned(&self) -> bool {
        self.recv_armed || self.sending.is_some()
    }

    /// Bytes received plus bytes sent: grows while the relay moves anything.
    pub(crate) fn progress(&self) -> u64 {
        self.received + self.relayed
    }

    /// The owner's future is gone.
    pub(crate) fn abandoned(&self) -> bool {
        self.kept.is_some()
    }

    #[inline]
    fn live(&self) -> bool {
        self.failed == 0 && self.kept.is_none()
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
        self.recv_armed = recv_armed;
        for done in queued {
            self.on_receive(done, out);
        }
        self.rearm_if_due(out);
    }

    /// A completion of the receive.
    #[inline]
    pub(crate) fn on_receive(&mut self, done: Completion, out: &mut Requests<'_, '_>) {
        if !cqueue::more(done.flags) {
            self.recv_armed = false;
            self.recv_cancelled = false;
        }
        let result = done.result;
        if result > 0 {
            match self.ring.take(done.flags, result as usize) {
                Some(chunk) if self.failed == 0 && self.kept.is_none() => {
                    self.received += chunk.len() as u64;
                    if self.sending.is_none() {
                        self.sending = Some(chunk);
                        self.push_send(out);
                    } else {
                        self.waiting.push_back(chunk);
                        if self.waiting.len() > self.max_waiting as usize {
                            self.paused = true;
                            self.cancel_recv(out);
                        }
                    }
                }
                // Bytes for a relay that failed or was dropped: the buffer goes back.
                Some(chunk) => drop(chunk),
                None => self.fail(-libc::EIO, out),
            }
        } else {
            self.ring.give_back(done.flags);
            match -result {
                0 => self.eof = true,
                libc::ENOBUFS => self.dry = self.live(),
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
        let live = self.live();
        let Some(chunk) = self.sending.as_mut() else {
            return;
        };
        self.send_cancelled = false;
        let went = done.result;
        if went >= 0 && (went as usize) < chunk.len() {
            if went == 0 {
                self.sending = None;
                self.fail(WRITE_ZERO, out);
            } else if !live || out.shutting_down {
                self.sending = None;
                self.fail(-libc::ECANCELED, out);
            } else {
                // Short despite MSG_WAITALL: the rest goes next, before any waiting chunk.
                chunk.narrow(went as usize, usize::MAX);
                self.relayed += went as u64;
                self.push_send(out);
            }
            return;
        }
        // The buffer goes back to the ring here (the slot's `ring` handle keeps the ring).
        self.sending = None;
        if went < 0 {
            self.fail(went, out);
            return;
        }
        self.relayed += went as u64;
        if out.shutting_down && self.live() {
            // A shutdown sends nothing more (a peer that reads slowly would hold it up).
            self.fail(-libc::ECANCELED, out);
            return;
        }
        if self.live() {
            if let Some(next) = self.waiting.pop_front() {
                if self.waiting.is_empty() {
                    // A burst is over: its memory goes rather than stay per relay.
                    self.waiting = VecDeque::new();
                }
                self.sending = Some(next);
                self.push_send(out);
            }
        }
        self.rearm_if_due(out);
    }

    /// The owner's future is gone: `fds` stay until the kernel is done; both requests are
    /// cancelled and the waiting chunks go back to the ring.
    pub(crate) fn abandon(&mut self, fds: [SharedFd; 2], out: &mut Requests<'_, '_>) {
        self.kept = Some(fds);
        self.waker = None;
        self.stop(out);
    }

    /// What the owner finds: see [`RelayPoll`]. `waker` is kept while the relay goes on.
    pub(crate) fn poll(&mut self, waker: &Waker) -> RelayPoll {
        if !self.kernel_owned() {
            if self.failed != 0 {
                return RelayPoll::Done(Err(self.failed));
            }
            if self.eof {
                return RelayPoll::Done(Ok(self.relayed));
            }
            if self.dry {
                return RelayPoll::Dry(self.progress());
            }
        }
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
        RelayPoll::Pending
    }

    /// After an event: the owner's waker if it has something to see (the relay is over, or
    /// the ring ran dry).
    #[inline]
    pub(crate) fn wake_owner(&mut self) -> Option<Waker> {
        if self.waker.is_none() || self.kernel_owned() {
            return None;
        }
        if self.failed != 0 || self.eof || self.dry {
            return self.waker.take();
        }
        None
    }

    /// Re-arms a receive the ring's running dry stopped (the owner waited a while).
    pub(crate) fn rearm_after_dry(&mut self, out: &mut Requests<'_, '_>) {
        self.dry = false;
        self.rearm_if_due(out);
    }

    /// Re-arms the receive if it stopped and should go on (the usual case, armed, is one test).
    #[inline]
    fn rearm_if_due(&mut self, out: &mut Requests<'_, '_>) {
        if !self.recv_armed {
            self.rearm(out);
        }
    }

    #[cold]
    fn rearm(&mut self, out: &mut Requests<'_, '_>) {
        if !self.live() || self.eof || self.dry || out.shutting_down {
            return;
        }
        if self.paused && self.waiting.len() > self.max_waiting as usize / 2 {
            return;
        }
        self.paused = false;
        self.recv_armed = true;
        let entry = match self.from {
            SendTarget::Fixed(slot) => opcode::RecvMulti::new(types::Fixed(slot), self.bgid),
            SendTarget::Fd(fd) => opcode::RecvMulti::new(types::Fd(fd), self.bgid),
        };
        // SAFETY: a multishot receive with buffer select points at no memory of ours: the
        // kernel picks buffers from the ring, which the slot's `ring` handle keeps alive; the
        // owner keeps the socket open until the kernel owns neither request.
        unsafe { out.push(entry.build().user_data(out.key.to_user_data())) };
    }

    #[inline]
    fn push_send(&mut self, out: &mut Requests<'_, '_>) {
        let Some(chunk) = &self.sending else {
            return;
        };
        let entry = super::owned_send::send_entry_raw(self.to, chunk.as_ptr(), chunk.len());
        // SAFETY: the entry points at the ring buffer `sending` holds, which stays lent (out of
        // the ring, unmoved) until this send's completion takes it out of `sending`; the owner
        // keeps the socket open until the kernel owns neither request.
        unsafe { out.push(entry.user_data(out.key.second_user_data())) };
    }

    fn fail(&mut self, errno: i32, out: &mut Requests<'_, '_>) {
        if self.failed == 0 {
            self.failed = errno;
        }
        self.stop(out);
    }

    /// Cancels what the kernel owns and gives the waiting chunks back. The receive is
    /// cancelled even if a pause cancelled it already (a second cancel is harmless; a relay
    /// left armed would keep its owner waiting for the peer).
    fn stop(&mut self, out: &mut Requests<'_, '_>) {
        self.waiting = VecDeque::new();
        self.recv_cancelled = false;
        self.cancel_recv(out);
        if self.sending.is_some() && !self.send_cancelled {
            self.send_cancelled = true;
            out.cancel(out.key.second_user_data());
        }
    }

    fn cancel_recv(&mut self, out: &mut Requests<'_, '_>) {
        if self.recv_armed && !self.recv_cancelled {
            self.recv_cancelled = true;
            out.cancel(out.key.to_user_data());
        }
    }
}
