//! Core-local synchronisation primitives.
//!
//! Tasks in percore are `!Send` futures polled on one thread, so these primitives
//! are single-threaded: plain `Cell`/`RefCell`/`Rc`, no atomics, no locks, and none
//! of them is `Sync`. (The wakers they store are ordinary [`Waker`](std::task::Waker)s, which their
//! owners may wake from anywhere; that is the waker's business.) Share them between
//! tasks by reference (scoped tasks) or through an `Rc`; channel halves are handles
//! already.
//!
//! # One wait queue
//!
//! As in Trio (`ParkingLot`), there is exactly one parking primitive, [`WaitQueue`],
//! and everything else is a small state machine on top of it:
//!
//! | primitive            | own state                         | a notification means                 |
//! |----------------------|-----------------------------------|--------------------------------------|
//! | [`Mutex`]            | `locked`                          | "the lock is yours"                  |
//! | [`Semaphore`]        | available / granted permits       | "your `n` permits are set aside"     |
//! | [`Event`]            | `set`                             | "the event is set" (everyone)        |
//! | [`Latch`]            | count + an [`Event`]              | (the event's)                        |
//! | [`channel`]          | buffer, reserved slots, claims    | "a slot / a message is set aside"    |
//!
//! The [`WaitQueue`] is a slab of entries (vector + free list + generation counters)
//! threaded by an intrusive doubly-linked list by index: register, notify-the-oldest
//! and cancel-from-anywhere are all O(1) and allocation-free in steady state.
//!
//! # FIFO and hand-off
//!
//! Waiters are served in the order in which they first found the resource
//! unavailable. Except for [`Event`] (which wakes everyone), a freed resource is
//! *handed off*: it is assigned to the oldest waiter before that waiter runs (the
//! mutex stays locked, permits are moved to "granted", a channel slot is reserved or
//! a message claimed). A newcomer (`try_*`, or the first poll of a new future) only
//! sees what is not assigned, so it can never barge past a queued task, and a large
//! semaphore request at the head is never starved by small ones. The cost is the
//! usual one of fair locks: a resource handed to a task stays idle until that task is
//! polled.
//!
//! # Cancellation
//!
//! Every waiting operation is a named future with a `Drop` impl. Dropping it:
//!
//! 1. before its first poll, or after it completed: does nothing (it owns nothing);
//! 2. while queued and not yet notified: unlinks its entry in O(1) (the semaphore then
//!    re-checks its queue, since the dropped waiter may have been the head blocking
//!    smaller requests);
//! 3. after being notified but before being polled again: the waiter owns what was
//!    handed to it without knowing it. [`WaitQueue::cancel`] reports this, and the
//!    drop passes the lock / permits / slot / message claim on to the next waiter,
//!    or returns it to the primitive if nobody waits.
//!
//! So no wake-up is ever lost and nothing is consumed by a future that does not
//! return it: a dropped `recv` leaves its message in the channel; a dropped `send`
//! drops its own, never-sent value. Each async method documents this in a
//! `# Cancel safety` section.
//!
//! # Closing
//!
//! [`Semaphore::close`] and closing a channel wake every waiter and *revoke* pending
//! hand-offs: a waiter woken by a grant that has not run yet fails like the others
//! (its permits return to the semaphore), and after a channel closes, woken receivers
//! take whatever is still buffered, first come first served.
//!
//! # Re-entrancy and misuse
//!
//! No primitive holds a `RefCell` borrow while running foreign code (waking,
//! dropping a waker or a message), so wakers and destructors may call back into the
//! primitive. Polling one of these futures again after it returned `Ready` panics.

pub mod channel;
mod event;
mod latch;
mod mutex;
mod semaphore;
mod wait_queue;

#[cfg(test)]
mod test_util;

pub use event::{Event, WaitFuture};
pub use latch::Latch;
pub use mutex::{LockFuture, Mutex, MutexGuard};
pub use semaphore::{AcquireError, AcquireFuture, Permit, Semaphore, TryAcquireError};
pub use wait_queue::{WaitQueue, WaiterKey};
