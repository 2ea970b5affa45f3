//! Timers: never early, late by a bounded amount, intervals and timeouts behave, and a
//! million pending timers are fine.

use std::time::{Duration, Instant};

use percore_engine::time::{self, MissedTicks};

#[test]
fn sleeps_are_never_early_and_not_very_late() {
    percore_engine::block_on(async {
        for ms in [0u64, 1, 2, 5, 10, 25] {
            let d = Duration::from_millis(ms);
            let t0 = Instant::now();
            time::sleep(d).await;
            let took = t0.elapsed();
            assert!(took >= d, "slept {took:?} for {d:?}");
            // Generous: this VM is shared and noisy; the point is "not stuck".
            assert!(
                took < d + Duration::from_millis(200),
                "slept {took:?} for {d:?}"
            );
        }
    });
}

#[test]
fn many_sleepers_wake_in_deadline_order() {
    percore_engine::block_on(async {
        let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in (0..50u64).rev() {
            let order = order.clone();
            tasks.push(percore_engine::spawn(async move {
                time::sleep(Duration::from_millis(i * 2)).await;
                order.borrow_mut().push(i);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.borrow();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(*order, sorted);
    });
}

#[test]
fn interval_ticks_on_schedule_and_handles_missed_ticks() {
    percore_engine::block_on(async {
        let period = Duration::from_millis(5);
        let mut iv = time::interval(period);
        let start = iv.tick().await;
        let second = iv.tick().await;
        assert_eq!(second - start, period);
        // Fall behind by several periods.
        std::thread::sleep(period * 4);
        iv.set_missed_ticks(MissedTicks::Skip);
        let late = iv.tick().await;
        let next = iv.tick().await;
        assert!(next > late);
        assert_eq!(
            (next - start).as_nanos() % period.as_nanos(),
            0,
            "skip keeps the grid"
        );

        let mut burst = time::interval(period);
        burst.set_missed_ticks(MissedTicks::Burst);
        let b0 = burst.tick().await;
        std::thread::sleep(period * 3);
        let t0 = Instant::now();
        let b1 = burst.tick().await;
        let b2 = burst.tick().await;
        assert!(t0.elapsed() < period, "missed ticks fire back to back");
        assert_eq!(b1 - b0, period);
        assert_eq!(b2 - b1, period);
    });
}

#[test]
fn timeout_prefers_a_ready_result_and_fails_otherwise() {
    percore_engine::block_on(async {
        assert_eq!(time::timeout(Duration::ZERO, async { 7 }).await, Ok(7));
        let r = time::timeout(Duration::from_millis(5), std::future::pending::<()>()).await;
        assert!(r.is_err());
        let e: std::io::Error = r.unwrap_err().into();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    });
}

#[test]
fn sleep_reset_moves_the_deadline_both_ways() {
    percore_engine::block_on(async {
        let mut s = time::sleep(Duration::from_secs(3600));
        let t0 = Instant::now();
        s.reset(Instant::now() + Duration::from_millis(3));
        (&mut s).await;
        assert!(t0.elapsed() >= Duration::from_millis(3));
        assert!(t0.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn a_million_pending_timers() {
    percore_engine::block_on(async {
        let n = 1_000_000usize;
        let base = time::pending_timers();
        let mut sleeps: Vec<_> = (0..n)
            .map(|i| Box::pin(time::sleep(Duration::from_secs(10 + (i % 1000) as u64))))
            .collect();
        // Register every one (first poll inserts into the wheel).
        std::future::poll_fn(|cx| {
            for s in sleeps.iter_mut() {
                assert!(s.as_mut().poll(cx).is_pending());
            }
            std::task::Poll::Ready(())
        })
        .await;
        assert_eq!(time::pending_timers(), base + n);
        // The loop still turns quickly with a million timers pending.
        let t0 = Instant::now();
        time::sleep(Duration::from_millis(1)).await;
        assert!(t0.elapsed() < Duration::from_secs(2));
        drop(sleeps);
        assert_eq!(
            time::pending_timers(),
            base,
            "dropping sleeps cancels their timers"
        );
    });
}

use std::future::Future;
