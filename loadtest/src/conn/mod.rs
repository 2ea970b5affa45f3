//! Connection drivers: one task per connection, owning its schedule, its protocol session and
//! its socket. A lost connection fails what it had outstanding and is reopened (counted) with
//! a doubling back-off; it stops when its schedule is over, when the run's end passes, or when
//! the target stayed unreachable for longer than the request timeout.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore_engine::sync::Event;

use crate::protocol::Protocol;
use crate::record::{ErrorKind, Recorder};
use crate::schedule::{Quota, Schedule};

mod datagram;
mod stream;

pub(crate) use datagram::drive_datagram;
pub(crate) use stream::drive_stream;

/// First pause after a failed connect (doubles up to [`MAX_BACKOFF`]).
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// What every connection of a shard shares.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub(crate) protocol: Arc<dyn Protocol>,
    pub(crate) addr: SocketAddr,
    pub(crate) pipeline: usize,
    pub(crate) timeout: Duration,
    pub(crate) max_response: usize,
    /// No request is sent after this (duration runs).
    pub(crate) end: Option<Instant>,
    pub(crate) recorder: Rc<RefCell<Recorder>>,
    /// Set when the run is stopped early (Ctrl-C): no new requests, in-flight ones finish.
    pub(crate) stop: Event,
    /// The shard's `--requests` quota, whose end also ends the connections' pauses.
    pub(crate) quota: Option<Rc<Quota>>,
}

/// A request on the wire.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    sent: Instant,
    /// `sent` as the recorder's nanosecond stamp, and how late after its intended time it went
    /// out (both 0 when not measured).
    sent_ns: u64,
    lag_ns: u64,
    measured: bool,
}

/// How a connection's life ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The schedule is over.
    Finished,
    /// The connection was lost; open another.
    Lost,
}

impl ConnCtx {
    /// Records a request going out now; returns its in-flight entry.
    fn send(&self, intended: Instant, now: Instant) -> InFlight {
        let mut rec = self.recorder.borrow_mut();
        let measured = rec.measures(intended);
        let (sent_ns, lag_ns) = if measured {
            rec.sent(intended, now)
        } else {
            (0, 0)
        };
        InFlight {
            sent: now,
            sent_ns,
            lag_ns,
            measured,
        }
    }

    /// Records the answer to `req`, which arrived at `now`: a success, or an error status.
    fn answered(&self, req: InFlight, error_status: Option<u16>, now: Instant) {
        if !req.measured {
            return;
        }
        let mut rec = self.recorder.borrow_mut();
        match error_status {
            None => rec.answered(req.sent_ns, req.lag_ns, now),
            Some(status) => rec.failed(ErrorKind::Status(status), now),
        }
    }

    /// Fails every request in flight with `kind`. With no measured request in flight (none,
    /// or only warm-up ones), a connection broken by anything but the server closing it is
    /// counted as a connection error instead (bytes sent unasked, a reset).
    fn fail_all(&self, inflight: &mut VecDeque<InFlight>, kind: ErrorKind) {
        let now = Instant::now();
        let mut rec = self.recorder.borrow_mut();
        let mut charged = false;
        for req in inflight.drain(..) {
            if req.measured {
                rec.failed(kind, now);
                charged = true;
            }
        }
        if !charged && kind != ErrorKind::Closed {
            rec.connection_failed(kind, now);
        }
    }

    /// Ends `schedule` if the run was stopped early; true if it was.
    fn stopped(&self, schedule: &mut Schedule) -> bool {
        if self.stop.is_set() {
            schedule.stop();
            true
        } else {
            false
        }
    }

    /// Sleeps until `at`, until the run is stopped early, or until the shard's quota is
    /// spent (by the other connections).
    ///
    /// # Cancel safety
    ///
    /// Dropping it cancels the timer; nothing else changes.
    async fn pause_until(&self, at: Instant) {
        let sleep = std::pin::pin!(percore_engine::time::sleep_until(at));
        let stop = std::pin::pin!(self.stop.wait());
        let spent = std::pin::pin!(async {
            match &self.quota {
                Some(quota) => quota.spent().await,
                None => std::future::pending().await,
            }
        });
        let _ = percore_engine::first3(sleep, stop, spent).await;
    }

    /// Whether a connection that has been down since `since` should stop trying.
    fn gives_up(&self, since: Instant, now: Instant) -> bool {
        match self.end {
            Some(end) => now >= end,
            None => now.duration_since(since) > self.timeout,
        }
    }
}

/// The doubling pause between attempts to reach the target.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(MIN_BACKOFF)
    }

    fn reset(&mut self) {
        self.0 = MIN_BACKOFF;
    }

    /// Pauses for the current back-off (cut short by the run's end, or if the run is
    /// stopped), then doubles it.
    ///
    /// # Cancel safety
    ///
    /// Dropped during the pause, the back-off is not doubled.
    async fn wait(&mut self, ctx: &ConnCtx) {
        let mut until = Instant::now() + self.0;
        if let Some(end) = ctx.end {
            until = until.min(end);
        }
        ctx.pause_until(until).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}
