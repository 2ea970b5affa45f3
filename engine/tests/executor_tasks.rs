//! Tasks: join errors tell panic from cancellation, dropping a handle cancels, a busy task
//! cannot starve I/O, wakers work from other threads.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use percore_engine::{spawn, yield_now, JoinError};

#[test]
fn join_error_tells_panic_from_cancellation() {
    percore_engine::block_on(async {
        let p = spawn(async { panic!("task panic") }).await;
        let p: JoinError = p.unwrap_err();
        assert!(p.is_panic() && !p.is_cancelled());
        assert_eq!(p.panic_message(), Some("task panic"));

        let h = spawn(std::future::pending::<()>());
        h.cancel();
        let c = h.await.unwrap_err();
        assert!(c.is_cancelled() && !c.is_panic());
    });
}

#[test]
fn dropping_a_handle_cancels_the_task() {
    percore_engine::block_on(async {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let h = spawn(async move {
            percore_engine::time::sleep(Duration::from_millis(5)).await;
            r.set(true);
        });
        yield_now().await;
        drop(h);
        percore_engine::time::sleep(Duration::from_millis(20)).await;
        assert!(!ran.get());
    });
}

#[test]
fn a_task_can_cancel_itself() {
    percore_engine::block_on(async {
        let slot: Rc<Cell<Option<percore_engine::JoinHandle<()>>>> = Rc::new(Cell::new(None));
        let s = slot.clone();
        let h = spawn(async move {
            yield_now().await;
            if let Some(me) = s.take() {
                me.cancel();
                drop(me);
            }
            yield_now().await;
            unreachable!("cancelled at its next await");
        });
        slot.set(Some(h));
        for _ in 0..10 {
            yield_now().await;
        }
        assert_eq!(percore_engine::stats::current().tasks_alive, 0);
    });
}

#[test]
fn a_busy_task_does_not_starve_io() {
    percore_engine::block_on(async {
        let stop = Rc::new(Cell::new(false));
        let s = stop.clone();
        let spinner = spawn(async move {
            while !s.get() {
                yield_now().await;
            }
        });
        // Timers and ring completions keep flowing while another task always runs.
        for _ in 0..100 {
            percore_engine::ops::nop().await.unwrap();
        }
        percore_engine::time::sleep(Duration::from_millis(2)).await;
        stop.set(true);
        spinner.await.unwrap();
    });
}

#[test]
fn wakers_work_from_other_threads() {
    percore_engine::block_on(async {
        let woken = std::future::poll_fn(|cx| {
            static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if DONE.load(std::sync::atomic::Ordering::SeqCst) {
                return std::task::Poll::Ready(true);
            }
            let waker = cx.waker().clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2));
                DONE.store(true, std::sync::atomic::Ordering::SeqCst);
                waker.wake();
            });
            std::task::Poll::Pending
        })
        .await;
        assert!(woken);
    });
}

#[test]
fn spawned_tasks_are_cancelled_when_the_runtime_ends() {
    let dropped = Rc::new(Cell::new(false));
    struct Flag(Rc<Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let d = dropped.clone();
    percore_engine::block_on(async move {
        let flag = Flag(d);
        spawn(async move {
            let _f = flag;
            std::future::pending::<()>().await;
        })
        .detach(|r| assert!(r.unwrap_err().is_cancelled()));
        yield_now().await;
    });
    assert!(dropped.get());
}
