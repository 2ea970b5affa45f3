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

/// A sleep raced against a busy source: the task is woken hundreds of times for the other
/// future and re-polls the armed sleep each time (the path that skips the clock). It still
/// fires, never early, and a reset to a later deadline re-arms it.
#[test]
fn an_armed_sleep_polled_often_fires_on_time() {
    percore_engine::block_on(async {
        let (tx, rx) = percore_engine::sync::channel::bounded::<u32>(1);
        let feeder = percore_engine::spawn(async move {
            for i in 0.. {
                if tx.send(i).await.is_err() {
                    break;
                }
                percore_engine::yield_now().await;
            }
        });
        let t0 = Instant::now();
        let mut timer = time::sleep(Duration::from_millis(20));
        let mut received = 0u32;
        for round in 0..2 {
            loop {
                let recv = std::pin::pin!(rx.recv());
                match percore_engine::first(recv, &mut timer).await {
                    percore_engine::First::A(_, _) => received += 1,
                    percore_engine::First::B((), _) => break,
                }
            }
            let want = Duration::from_millis(20 * (round + 1));
            assert!(
                t0.elapsed() >= want,
                "fired at {:?}, before {want:?}",
                t0.elapsed()
            );
            timer.reset(t0 + Duration::from_millis(40));
        }
        assert!(
            received > 100,
            "the sleep was re-polled only {received} times"
        );
        drop(rx);
        feeder.await.expect("feeder");
    });
}

/// The turn clock: one reading per loop turn, shared by its callers, never ahead of the real
/// clock, and fresh after the core went round its loop (here: a 1 ms sleep).
#[test]
fn the_turn_clock_is_shared_within_a_turn_and_moves_between_turns() {
    percore_engine::block_on(async {
        let t0 = time::turn_instant();
        assert_eq!(time::turn_instant(), t0, "two readings in one turn differ");
        assert!(t0 <= Instant::now());
        time::sleep(Duration::from_millis(1)).await;
        let t1 = time::turn_instant();
        assert!(
            t1 >= t0 + Duration::from_millis(1),
            "{t1:?} is not a later turn's time"
        );
        assert!(t1 <= Instant::now());
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

#[test]
fn durations_past_what_an_instant_holds_mean_never_not_a_panic() {
    percore_engine::block_on(async {
        let forever = Duration::MAX;
        let slept =
            percore_engine::scope::move_on_after(Duration::from_millis(5), time::sleep(forever))
                .await;
        assert!(slept.is_none(), "a sleep of Duration::MAX does not end");
        let v = time::timeout(forever, async { 7 }).await;
        assert_eq!(v, Ok(7));
        let nested = percore_engine::scope::move_on_after(forever, async { 8 }).await;
        assert_eq!(nested, Some(8));
        let mut ticks = time::interval(forever);
        ticks.tick().await;
        let second =
            percore_engine::scope::move_on_after(Duration::from_millis(5), ticks.tick()).await;
        assert!(
            second.is_none(),
            "the second tick of a forever interval never comes"
        );
    });
}

#[test]
fn an_interval_more_than_2_pow_32_periods_behind_skips_to_after_now() {
    percore_engine::block_on(async {
        // Started 10 s ago with a 1 ns period: 10^10 periods missed, more than a u32 counts.
        let start = Instant::now() - Duration::from_secs(10);
        let mut ticks = time::interval_at(start, Duration::from_nanos(1));
        ticks.set_missed_ticks(MissedTicks::Skip);
        let before = Instant::now();
        assert_eq!(ticks.tick().await, start);
        // The next tick is the first one after the moment the first was taken, not one of
        // the ten seconds' worth that were missed.
        let next = ticks.tick().await;
        assert!(
            next >= before,
            "a stale tick {:?} in the past",
            before - next
        );
    });
}

/// A task that took the turn's clock reading and then held the core a while (200 ms of
/// blocking work): the core's wait for the next timer is measured from a fresh reading, not
/// from that old one, so the timer is not late by the time the core was held. (Measured from
/// the old reading, this 250 ms sleep ended after ~450 ms.)
#[test]
fn a_turn_reading_taken_before_long_work_does_not_make_timers_late() {
    percore_engine::block_on(async {
        let t0 = Instant::now();
        let mut sleep = std::pin::pin!(time::sleep(Duration::from_millis(250)));
        // Armed now (its first poll takes the turn's reading), then the core is held.
        std::future::poll_fn(|cx| {
            assert!(sleep.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        let _ = time::turn_instant();
        std::thread::sleep(Duration::from_millis(200));
        sleep.await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(250), "early: {took:?}");
        assert!(
            took < Duration::from_millis(400),
            "late by the blocked time: {took:?}"
        );
    });
}
