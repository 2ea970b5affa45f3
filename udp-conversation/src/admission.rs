//! Admission of new peers, decided before any state exists for them.
//!
//! # Design
//!
//! A datagram from a peer with no live conversation passes, in this order and before anything is
//! allocated for it: the tombstones of recently ended conversations (if enabled), the cap on
//! live conversations, the rate of new conversations (a token bucket: a token must be there),
//! then the user's hook (which sees the peer and the datagram and says [`Admission::Accept`] or
//! [`Admission::Drop`]). The token is spent only when the hook accepts, so datagrams the hook
//! refuses do not use up the rate meant for peers it accepts.
//! The cheap, state-free checks come first so that a flood of spoofed sources is turned away
//! without running the hook. The only per-peer memory an unknown peer can cause is a tombstone,
//! and tombstones are bounded in number too (the oldest goes first).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use percore_engine::time::Instant;

/// What the admission hook decides for a new peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Start a conversation; the datagram is its first.
    Accept,
    /// Drop the datagram (counted as [`DropReason::Refused`](crate::DropReason::Refused)); no
    /// state is kept, so the peer's next datagram is asked about again.
    Drop,
}

/// A token bucket: at most `rate` new conversations per second, with a burst of one second's
/// worth.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u32) -> RateLimiter {
        let rate = f64::from(per_second.max(1));
        RateLimiter {
            rate,
            tokens: rate,
            refilled: Instant::now(),
        }
    }

    /// Whether a token is there at `now` (refilling first); [`RateLimiter::take`] spends it.
    pub(crate) fn has_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
        self.tokens >= 1.0
    }

    /// Spends the token [`RateLimiter::has_token`] found.
    pub(crate) fn take(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    #[cfg(test)]
    fn try_take(&mut self, now: Instant) -> bool {
        let there = self.has_token(now);
        if there {
            self.take();
        }
        there
    }
}

/// Peers whose conversation ended less than `ttl` ago, at most `max` of them.
#[derive(Debug)]
pub(crate) struct Tombstones {
    ttl: Duration,
    max: usize,
    until: HashMap<SocketAddr, Instant>,
    order: VecDeque<(SocketAddr, Instant)>,
}

impl Tombstones {
    pub(crate) fn new(ttl: Duration, max: usize) -> Tombstones {
        Tombstones {
            ttl,
            max: max.max(1),
            until: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Marks `peer` as just ended.
    pub(crate) fn insert(&mut self, peer: SocketAddr, now: Instant) {
        self.expire(now);
        while self.order.len() >= self.max {
            self.pop_oldest();
        }
        let until = now + self.ttl;
        self.until.insert(peer, until);
        self.order.push_back((peer, until));
    }

    /// Whether `peer` has a live tombstone.
    pub(crate) fn contains(&mut self, peer: &SocketAddr, now: Instant) -> bool {
        self.expire(now);
        self.until.get(peer).is_some_and(|&until| now < until)
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|&(_, until)| until <= now) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((peer, until)) = self.order.pop_front() {
            // A peer tombstoned twice has two queue entries; only the current one removes it.
            if self.until.get(&peer) == Some(&until) {
                self.until.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_allows_a_burst_then_refills() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10);
        let granted = (0..20).filter(|_| r.try_take(t0)).count();
        assert_eq!(granted, 10);
        assert!(r.try_take(t0 + Duration::from_millis(150)));
        assert!(!r.try_take(t0 + Duration::from_millis(150)));
    }

    #[test]
    fn tombstones_expire_and_stay_bounded() {
        let t0 = Instant::now();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let mut t = Tombstones::new(Duration::from_secs(1), 2);
        t.insert(a, t0);
        t.insert(b, t0);
        t.insert(c, t0);
        assert!(!t.contains(&a, t0), "the oldest went to keep the bound");
        assert!(t.contains(&b, t0) && t.contains(&c, t0));
        assert!(!t.contains(&b, t0 + Duration::from_secs(1)));
        assert!(t.until.is_empty() && t.order.is_empty());
    }
}
