//! The launcher: every core's value or error comes back; shutdown requests reach every core
//! and the grace period bounds them; stats are readable while cores run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use percore_engine::{shutdown, CoreError, Runtime};

fn cpus() -> Vec<usize> {
    let n = core_affinity::get_core_ids().map_or(1, |c| c.len()).min(2);
    (0..n).collect()
}

#[test]
fn every_core_runs_and_returns_in_order() {
    let rt = Runtime::builder().cpus(cpus()).build().unwrap();
    let out = rt
        .run(|core| async move {
            assert_eq!(percore_engine::current_core().index, core.index);
            percore_engine::time::sleep(Duration::from_millis(1)).await;
            (core.index, core.cpu, core.cores)
        })
        .unwrap();
    let n = cpus().len();
    for (i, (index, cpu, cores)) in out.into_iter().enumerate() {
        assert_eq!(index, i);
        assert_eq!(cpu, Some(i), "pinned to its CPU");
        assert_eq!(cores, n);
    }
}

#[test]
fn every_failure_is_reported_not_just_the_first() {
    let rt = Runtime::builder().cpus(cpus()).pin(false).build().unwrap();
    let err = rt
        .run(|core| async move {
            if core.index == 0 {
                panic!("core zero failed");
            }
            if core.cores > 1 {
                panic!("core one failed too");
            }
        })
        .unwrap_err();
    assert_eq!(err.failures.len(), cpus().len());
    for (i, (index, e)) in err.failures.iter().enumerate() {
        assert_eq!(*index, i);
        assert!(matches!(e, CoreError::Panicked(_)), "{e}");
    }
    assert!(err.to_string().contains("core zero failed"));
}

#[test]
fn shutdown_reaches_every_core_and_the_grace_period_bounds_it() {
    let rt = Runtime::builder()
        .cpus(cpus())
        .pin(false)
        .grace_period(Duration::from_millis(50))
        .build()
        .unwrap();
    let handle = rt.handle();
    let started = Arc::new(AtomicBool::new(false));
    let s2 = started.clone();
    let requester = std::thread::spawn(move || {
        while !s2.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        handle.shutdown();
    });
    let err = rt
        .run(|core| {
            let started = started.clone();
            async move {
                if core.index == 0 {
                    started.store(true, Ordering::SeqCst);
                    // A polite core: returns when asked.
                    shutdown::requested().await;
                    assert!(shutdown::is_requested());
                    return;
                }
                // A stubborn core: ignores the request and is cancelled after the grace.
                std::future::pending::<()>().await;
            }
        })
        .err();
    requester.join().unwrap();
    if cpus().len() > 1 {
        let err = err.expect("the stubborn core is reported");
        assert_eq!(err.failures.len(), 1);
        assert_eq!(err.failures[0].0, 1);
        assert!(matches!(err.failures[0].1, CoreError::ShutdownTimedOut));
    }
}

/// A core learns of a shutdown when it drains its cross-thread wakes, not by reading the flag
/// every turn. Here the core is never idle (a task yields on every poll) and another thread
/// wakes one of its tasks without pause, so the request's own wake is mostly coalesced with
/// one already pending: the core must still see the request, every time.
#[test]
fn shutdown_reaches_a_busy_core_whose_wakes_coalesce() {
    for round in 0..20 {
        let rt = Runtime::builder()
            .cpus(vec![0])
            .pin(false)
            .grace_period(Duration::from_secs(5))
            .build()
            .unwrap();
        let handle = rt.handle();
        let (waker_tx, waker_rx) = std::sync::mpsc::channel::<std::task::Waker>();
        let stop = Arc::new(AtomicBool::new(false));
        let waking_started = Arc::new(AtomicBool::new(false));
        let (stop_waking, started_waking) = (stop.clone(), waking_started.clone());
        let waking = std::thread::spawn(move || {
            let waker = waker_rx.recv().expect("the woken task ran");
            started_waking.store(true, Ordering::SeqCst);
            while !stop_waking.load(Ordering::SeqCst) {
                waker.wake_by_ref();
            }
        });
        let requester = std::thread::spawn(move || {
            // Once the wakes are flowing, so that the request's own is likely coalesced.
            while !waking_started.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_micros(200 * (round % 7) + 100));
            handle.shutdown();
        });
        let started = std::time::Instant::now();
        rt.run(move |_core| {
            let waker_tx = waker_tx.clone();
            async move {
                // Woken from the other thread over and over; never finishes on its own.
                let mut waker_tx = Some(waker_tx);
                let woken = percore_engine::spawn(std::future::poll_fn(move |cx| {
                    if let Some(tx) = waker_tx.take() {
                        let _ = tx.send(cx.waker().clone());
                    }
                    std::task::Poll::<()>::Pending
                }));
                // Keeps the core busy: it never waits in the kernel.
                let busy = percore_engine::spawn(async {
                    loop {
                        percore_engine::yield_now().await;
                    }
                });
                shutdown::requested().await;
                woken.cancel();
                busy.cancel();
            }
        })
        .expect("the core returns when asked, inside the grace");
        stop.store(true, Ordering::SeqCst);
        waking.join().unwrap();
        requester.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "round {round}: the request took {:?} to be seen",
            started.elapsed()
        );
    }
}

#[test]
fn stats_are_readable_from_outside_while_cores_run() {
    let rt = Runtime::builder().cpus(cpus()).pin(false).build().unwrap();
    let handle = rt.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stats = handle.stats();
            if stats
                .iter()
                .all(|s| s.ops_completed > 100 && s.loop_turns > 0)
            {
                stop2.store(true, Ordering::SeqCst);
                return stats;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stats never published: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    rt.run(|_| {
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::SeqCst) {
                percore_engine::ops::nop().await.unwrap();
                percore_engine::time::sleep(Duration::from_micros(100)).await;
            }
        }
    })
    .unwrap();
    let stats = reader.join().unwrap();
    assert_eq!(stats.len(), cpus().len());
}

#[test]
fn busy_poll_mode_runs_io_and_timers() {
    let rt = Runtime::builder()
        .cpus([0])
        .pin(false)
        .busy_poll(Duration::from_micros(50))
        .build()
        .unwrap();
    rt.run(|_| async {
        for _ in 0..100 {
            percore_engine::ops::nop().await.unwrap();
        }
        let t0 = std::time::Instant::now();
        percore_engine::time::sleep(Duration::from_millis(2)).await;
        assert!(t0.elapsed() >= Duration::from_millis(2));
        let stats = percore_engine::stats::current();
        assert!(stats.ops_completed >= 100, "{stats:?}");
    })
    .unwrap();
}

/// A task that read the turn's clock, then slept for less than the busy-poll window: the
/// busy-poll loop must not keep that reading (it kept it, so the timer, due by the real clock,
/// never came due by the turn's and the core spun for ever), and completions reaped while
/// busy-polling get a fresh one.
#[test]
fn busy_poll_mode_fires_timers_after_the_turn_clock_was_read() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = Runtime::builder()
            .cpus([0])
            .pin(false)
            .busy_poll(Duration::from_micros(500))
            .build()
            .unwrap();
        rt.run(|_| async {
            for _ in 0..20 {
                let before = percore_engine::time::turn_instant();
                percore_engine::time::sleep(Duration::from_micros(50)).await;
                let after = percore_engine::time::turn_instant();
                assert!(
                    after >= before + Duration::from_micros(50),
                    "{before:?} {after:?}"
                );
            }
        })
        .unwrap();
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(20))
        .expect("20 sleeps of 50 µs in busy-poll mode finished within 20 s");
}

#[test]
fn the_core_receive_ring_has_the_configured_size() {
    let rt = Runtime::builder()
        .cpus([0])
        .pin(false)
        .receive_buffers(100)
        .build()
        .unwrap();
    rt.run(|_| async {
        let ring = percore_engine::buf::ring::BufRing::core_default().unwrap();
        assert_eq!(ring.entries(), 128, "rounded up to a power of two");
        assert_eq!(ring.lent(), 0);
    })
    .unwrap();
    percore_engine::block_on(async {
        let ring = percore_engine::buf::ring::BufRing::core_default().unwrap();
        assert_eq!(ring.entries(), percore_engine::buf::ring::CORE_RING_ENTRIES);
    });
}

#[test]
fn bad_cpu_lists_are_refused() {
    assert!(Runtime::builder()
        .cpus(Vec::<usize>::new())
        .build()
        .is_err());
    assert!(Runtime::builder().cpus([4096]).build().is_err());
}

#[test]
fn ring_features_are_reported() {
    percore_engine::block_on(async {
        let f = percore_engine::ring_features();
        let text = f.to_string();
        assert!(text.contains("io_uring"), "{text}");
        assert!(f.ext_arg);
        // The kernel here (6.x) takes the cap on blocking-op worker threads.
        assert_eq!(f.max_io_workers, Some(64), "{text}");
        assert!(text.contains("io-workers<=64"), "{text}");
    });
    // The cap a core's ring reports when the builder asks for `max` (0: none).
    let cap_with = |max: u32| {
        Runtime::builder()
            .cpus(vec![0])
            .pin(false)
            .io_workers(max)
            .build()
            .unwrap()
            .run(|_| async { percore_engine::ring_features().max_io_workers })
            .unwrap()
    };
    assert_eq!(cap_with(3), vec![Some(3)]);
    assert_eq!(cap_with(0), vec![None]);
}
