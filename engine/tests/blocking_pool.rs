//! The blocking pool: results wake the core, panics come back, the queue is bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use percore_engine::runtime::blocking::{spawn_blocking, QUEUE_CAPACITY};

#[test]
fn results_come_back_and_wake_the_core() {
    percore_engine::block_on(async {
        let v = spawn_blocking(|| {
            std::thread::sleep(Duration::from_millis(5));
            "slept"
        })
        .await
        .unwrap();
        assert_eq!(v, "slept");
    });
}

#[test]
fn a_panic_is_returned_not_swallowed() {
    percore_engine::block_on(async {
        let r = spawn_blocking(|| -> u32 { panic!("blocking boom") }).await;
        let e = r.unwrap_err();
        assert!(e.is_panic());
        assert_eq!(e.panic_message(), Some("blocking boom"));
    });
}

#[test]
fn more_jobs_than_the_queue_holds_all_complete() {
    percore_engine::block_on(async {
        let n = QUEUE_CAPACITY * 2 + 17;
        let count = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let count = count.clone();
            tasks.push(percore_engine::spawn(async move {
                spawn_blocking(move || {
                    count.fetch_add(1, Ordering::SeqCst);
                })
                .await
                .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(count.load(Ordering::SeqCst), n);
    });
}

#[test]
fn a_dropped_job_that_never_started_never_runs() {
    percore_engine::block_on(async {
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        // Never polled: never queued.
        drop(spawn_blocking(move || {
            r2.fetch_add(1, Ordering::SeqCst);
        }));
        spawn_blocking(|| ()).await.unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    });
}
