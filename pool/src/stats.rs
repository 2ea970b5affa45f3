//! [`PoolStats`]: what a pool holds right now and what it has done since it was built.
//!
//! The gauges (`in_use`, `idle`, `pending`, `waiting`) are read from the pool's state; the
//! counters live in one `Cell` on the pool and are bumped on the paths that change them. No
//! atomics: a pool lives on one core.

use std::cell::Cell;

/// A snapshot of a pool's state and counters ([`Pool::stats`](crate::Pool::stats)).
///
/// `created - discarded` is the number of live connections: `in_use + idle`, plus those
/// being health-checked (counted in neither).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// The hard maximum of connections (in use + idle + pending).
    pub max: usize,
    /// Connections checked out (guards alive).
    pub in_use: usize,
    /// Connections resting in the pool.
    pub idle: usize,
    /// Checkouts holding a slot without a connection yet (creating one or health-checking an
    /// idle one).
    pub pending: usize,
    /// Checkouts queued for a slot.
    pub waiting: usize,
    /// Checkouts that returned a connection.
    pub checkouts: u64,
    /// Connections the factory created.
    pub created: u64,
    /// Connections the pool closed, for any reason (the next counters say why for some).
    pub discarded: u64,
    /// Connections discarded because they broke or may have: marked broken, dropped after
    /// use without [`release`](crate::PooledConn::release) (the holder failed, timed out, was
    /// cancelled or panicked), or failed the health check.
    pub broken: u64,
    /// Connections discarded because they were idle or alive too long.
    pub expired: u64,
    /// Factory calls that failed.
    pub create_failures: u64,
    /// Checkouts that timed out.
    pub timeouts: u64,
    /// Health checks that failed (their connections are counted in `broken`; the last
    /// error is [`Pool::last_check_error`](crate::Pool::last_check_error)).
    pub check_failures: u64,
}

/// The counters of [`PoolStats`], bumped in place.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) checkouts: u64,
    pub(crate) created: u64,
    pub(crate) discarded: u64,
    pub(crate) broken: u64,
    pub(crate) expired: u64,
    pub(crate) create_failures: u64,
    pub(crate) timeouts: u64,
    pub(crate) check_failures: u64,
}

/// The counters' cell with a one-line bump.
#[derive(Debug, Default)]
pub(crate) struct CounterCell(Cell<Counters>);

impl CounterCell {
    pub(crate) fn bump(&self, f: impl FnOnce(&mut Counters)) {
        let mut c = self.0.get();
        f(&mut c);
        self.0.set(c);
    }

    pub(crate) fn get(&self) -> Counters {
        self.0.get()
    }
}
