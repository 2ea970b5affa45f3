//! One generator shard per core: its share of the connections (a contiguous range of the
//! run's connection indices, so schedules interleave across cores), a recorder, and a ticker
//! that ships intervals while the connections are quiet.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore_engine::CoreInfo;

use crate::config::{LoadConfig, Stop};
use crate::conn::{drive_datagram, drive_stream, ConnCtx};
use crate::protocol::{Protocol, Transport};
use crate::record::{Recorder, Report};
use crate::schedule::{Quota, Schedule, Window};

/// What every shard is given.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) config: LoadConfig,
    pub(crate) protocol: Arc<dyn Protocol>,
    pub(crate) window: Window,
    /// Set when a signal stopped the run early.
    pub(crate) stopped_early: std::sync::atomic::AtomicBool,
}

/// The connections `[first, first + count)` of `total` that shard `index` of `shards` runs.
pub(crate) fn share(total: usize, shards: usize, index: usize) -> (usize, usize) {
    let base = total / shards;
    let extra = total % shards;
    let first = index * base + index.min(extra);
    (first, base + usize::from(index < extra))
}

/// Runs one shard to the end of its schedules.
///
/// # Cancel safety
///
/// Meant to run to its end (the shard's runtime exits with it). Dropped early, its connection
/// tasks are cancelled with it (their sockets closed), and the recorder's last interval is
/// never shipped: the aggregator sees that shard end short.
pub(crate) async fn run_shard(plan: &Plan, core: CoreInfo, out: Sender<Report>) {
    let config = &plan.config;
    let recorder = Rc::new(RefCell::new(Recorder::new(
        core.index,
        plan.window.measure_from,
        out,
    )));
    let (first, count) = share(config.connections, core.cores, core.index);
    // A `--requests` run: this shard's share of the requests (its connections' shares),
    // drawn on by all of them.
    let quota = match config.stop {
        Stop::Requests(n) => Some(Quota::new(
            (first..first + count)
                .map(|i| share(n as usize, config.connections, i).1 as u64)
                .sum(),
        )),
        Stop::Duration(_) => None,
    };
    let ctx = Rc::new(ConnCtx {
        protocol: plan.protocol.clone(),
        addr: config.target.addr(),
        pipeline: config.pipeline,
        timeout: config.timeout,
        max_response: config.max_response,
        end: plan.window.end,
        recorder: recorder.clone(),
        stop: percore_engine::sync::Event::new(),
        quota: quota.clone(),
    });
    // Ctrl-C / SIGTERM (when the runtime watches them): stop sending, let in-flight requests
    // finish, report.
    let stopper = {
        let ctx = ctx.clone();
        percore_engine::spawn(async move {
            percore_engine::shutdown::requested().await;
            ctx.stop.set();
        })
    };
    let ticker = {
        let recorder = recorder.clone();
        let first_tick = plan.window.measure_from + Duration::from_secs(1);
        percore_engine::spawn(async move {
            let mut tick = percore_engine::time::interval_at(first_tick, Duration::from_secs(1));
            loop {
                tick.tick().await;
                recorder.borrow_mut().roll(Instant::now());
            }
        })
    };
    let datagram = plan.protocol.transport() == Transport::Datagram;
    let tasks: Vec<_> = (first..first + count)
        .map(|i| {
            let schedule = Schedule::sharing(
                config.mode,
                plan.window,
                i,
                config.connections,
                quota.as_ref(),
                config.seed,
            );
            if datagram {
                percore_engine::spawn(drive_datagram(ctx.clone(), schedule))
            } else {
                percore_engine::spawn(drive_stream(ctx.clone(), schedule))
            }
        })
        .collect();
    for task in tasks {
        if let Err(e) = task.await {
            // A connection task panicked: that is a bug, not a load result; let it show.
            std::panic::panic_any(format!("load connection task failed: {e}"));
        }
    }
    drop(ticker);
    drop(stopper);
    if ctx.stop.is_set() {
        plan.stopped_early
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    drop(ctx);
    recorder.borrow_mut().finish(Instant::now());
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_cover_every_connection_once() {
        for total in [1, 2, 7, 64, 1000] {
            for shards in 1..=4.min(total) {
                let mut next = 0;
                for i in 0..shards {
                    let (first, count) = share(total, shards, i);
                    assert_eq!(first, next);
                    assert!(count >= total / shards);
                    next += count;
                }
                assert_eq!(next, total);
            }
        }
    }
}
