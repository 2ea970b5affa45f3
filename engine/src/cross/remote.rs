//! Waking a core from another thread.
//!
//! Every running executor registers a [`Remote`] in a process-wide table, under the executor
//! id that its wakers carry. A wake from a foreign thread pushes the task onto the remote's
//! queue and, if the core was not already notified, wakes its ring: with `IORING_OP_MSG_RING`
//! from the waking thread's own ring when that thread is a percore core (no syscall of its own:
//! it rides on that core's next submit), with an eventfd write otherwise. The core clears the
//! `notified` flag before it drains the queue, so a wake racing with the drain costs at most
//! one spurious wake-up and is never lost. The flag's swap and clear are sequentially
//! consistent: a core that drains after a notify that found the flag set (and so sent nothing)
//! also sees whatever the notifier stored before it (the shutdown request's flag: a core
//! looks at that only when it drains, see `runtime::shutdown`).
//!
//! This is the only path in the engine that takes a lock (the queue's mutex) and does atomic
//! read-modify-writes; it is used for explicit hand-off only.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::executor::waker::{TaskRef, MAX_EXECUTORS};
use crate::sys;

/// The cross-thread face of one core.
#[derive(Debug)]
pub(crate) struct Remote {
    queue: Mutex<Vec<TaskRef>>,
    notified: AtomicBool,
    eventfd: OwnedFd,
    /// A duplicate of the core's ring fd, kept open as long as anyone can message it.
    ring_fd: Option<OwnedFd>,
}

impl Remote {
    pub(crate) fn new(eventfd: OwnedFd, ring_fd: Option<OwnedFd>) -> Remote {
        Remote {
            queue: Mutex::new(Vec::new()),
            notified: AtomicBool::new(false),
            eventfd,
            ring_fd,
        }
    }

    pub(crate) fn eventfd(&self) -> std::os::fd::RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Queues `task` and makes sure the core will look.
    pub(crate) fn wake(self: &Arc<Self>, task: TaskRef) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        self.notify();
    }

    /// Makes the core's ring return from its wait (once per batch of wakes).
    pub(crate) fn notify(self: &Arc<Self>) {
        if self.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(ring_fd) = &self.ring_fd {
            if crate::runtime::context::send_msg_ring(ring_fd.as_raw_fd(), self) {
                return;
            }
        }
        self.signal_eventfd();
    }

    pub(crate) fn signal_eventfd(&self) {
        // An eventfd write only fails if the fd is bad, which the Remote's ownership rules out.
        let _ = sys::eventfd_signal(self.eventfd.as_raw_fd());
    }

    /// Takes every queued wake; clears `notified` first so later wakes notify again.
    pub(crate) fn drain(&self, into: &mut Vec<TaskRef>) {
        self.notified.store(false, Ordering::SeqCst);
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        into.append(&mut queue);
    }
}

type Table = RwLock<Vec<Option<Arc<Remote>>>>;

static REGISTRY: Table = RwLock::new(Vec::new());

/// Registers a remote and returns the executor id its wakers carry.
pub(crate) fn register(remote: Arc<Remote>) -> std::io::Result<u16> {
    let mut table = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    if let Some(free) = table.iter().position(Option::is_none) {
        table[free] = Some(remote);
        return Ok(free as u16);
    }
    if table.len() >= MAX_EXECUTORS {
        return Err(std::io::Error::other(
            "too many percore executors in one process",
        ));
    }
    table.push(Some(remote));
    Ok((table.len() - 1) as u16)
}

/// Removes an executor's remote; its id may be reused (stale wakers then cause at most a
/// spurious poll there).
pub(crate) fn unregister(id: u16) {
    let mut table = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    if let Some(slot) = table.get_mut(id as usize) {
        *slot = None;
    }
}

/// The remote of executor `id`, if it is running.
pub(crate) fn lookup(id: u16) -> Option<Arc<Remote>> {
    let table = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    table.get(id as usize).and_then(Clone::clone)
}
