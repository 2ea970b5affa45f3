//! Per-core statistics, readable at run time.
//!
//! Each core counts in plain integers (driver and executor counters). [`current`] reads the
//! calling core's directly. For other threads, every core publishes a snapshot to a shared
//! board (atomic stores of whole values, no read-modify-write) before it sleeps and every 1024
//! loop turns while busy, when anything changed; no timer wakes a core for it.
//! [`RuntimeHandle::stats`](crate::RuntimeHandle::stats) reads the board.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::runtime::context;

/// One core's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoreStats {
    /// Position of the core in its runtime.
    pub core: usize,
    /// Tasks polled (main future included).
    pub tasks_polled: u64,
    /// Tasks spawned.
    pub tasks_spawned: u64,
    /// Tasks alive.
    pub tasks_alive: u64,
    /// Tasks in the run queue.
    pub run_queue_depth: u64,
    /// Ring entries submitted.
    pub ops_submitted: u64,
    /// Completions reaped.
    pub ops_completed: u64,
    /// Ops in flight: the kernel still owns them (orphans included), or they completed and
    /// their future has not taken the result yet (an unwatched send that failed, say, whose
    /// owner looks later; one that succeeded frees its slot at the completion).
    pub ops_in_flight: u64,
    /// `io_uring_enter` calls.
    pub ring_enters: u64,
    /// Completion-queue overflows seen.
    pub cq_overflows: u64,
    /// Entries that found the submission queue full.
    pub sq_full: u64,
    /// Async cancels submitted for dropped ops.
    pub cancels: u64,
    /// Timers pending.
    pub timers_pending: u64,
    /// Loop turns.
    pub loop_turns: u64,
    /// Provided buffer rings registered.
    pub buf_rings: u64,
    /// Files in the core's registered file table.
    pub fixed_files: u64,
    /// Zero-copy sends (`SEND_ZC`) submitted.
    pub zero_copy_sends: u64,
}

const FIELDS: usize = 16;

impl CoreStats {
    fn to_array(self) -> [u64; FIELDS] {
        [
            self.tasks_polled,
            self.tasks_spawned,
            self.tasks_alive,
            self.run_queue_depth,
            self.ops_submitted,
            self.ops_completed,
            self.ops_in_flight,
            self.ring_enters,
            self.cq_overflows,
            self.sq_full,
            self.cancels,
            self.timers_pending,
            self.loop_turns,
            self.buf_rings,
            self.fixed_files,
            self.zero_copy_sends,
        ]
    }

    fn from_array(core: usize, a: [u64; FIELDS]) -> CoreStats {
        CoreStats {
            core,
            tasks_polled: a[0],
            tasks_spawned: a[1],
            tasks_alive: a[2],
            run_queue_depth: a[3],
            ops_submitted: a[4],
            ops_completed: a[5],
            ops_in_flight: a[6],
            ring_enters: a[7],
            cq_overflows: a[8],
            sq_full: a[9],
            cancels: a[10],
            timers_pending: a[11],
            loop_turns: a[12],
            buf_rings: a[13],
            fixed_files: a[14],
            zero_copy_sends: a[15],
        }
    }
}

/// The calling core's counters, now.
///
/// # Panics
///
/// Panics off a percore core.
pub fn current() -> CoreStats {
    context::with_core(|core| core.stats()).expect("stats::current called off a percore core")
}

/// Snapshots published by every core of a runtime.
#[derive(Debug)]
pub(crate) struct StatsBoard {
    cores: Vec<[AtomicU64; FIELDS]>,
}

impl StatsBoard {
    pub(crate) fn new(cores: usize) -> Arc<StatsBoard> {
        Arc::new(StatsBoard {
            cores: (0..cores)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        })
    }

    pub(crate) fn publish(&self, stats: CoreStats) {
        if let Some(slots) = self.cores.get(stats.core) {
            for (slot, value) in slots.iter().zip(stats.to_array()) {
                slot.store(value, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<CoreStats> {
        self.cores
            .iter()
            .enumerate()
            .map(|(i, slots)| {
                CoreStats::from_array(i, std::array::from_fn(|f| slots[f].load(Ordering::Relaxed)))
            })
            .collect()
    }
}
