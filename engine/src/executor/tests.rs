//! The task machinery on a real core: pooled blocks are reused, the reference count frees a
//! block exactly when its last owner (slot, queue entry, handle) lets go, whatever the order,
//! and the stage rules hold under self-cancel and panicking destructors.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::runtime::context::with_core;
use crate::{block_on, spawn, yield_now, JoinHandle};

fn pooled() -> usize {
    with_core(|core| core.executor.pooled()).expect("on a core")
}

/// Idle blocks expected after `n` more went back to the pool than left it since `idle` was
/// read (with reuse off, the AddressSanitizer build, the pool stays empty).
fn pooled_after(idle: usize, n: usize) -> usize {
    if cfg!(percore_no_task_pool) {
        0
    } else {
        idle + n
    }
}

fn alive() -> u64 {
    with_core(|core| core.executor.stats().tasks_alive).expect("on a core")
}

/// Counts its drops.
struct DropCount(Rc<Cell<u32>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Pending forever; panics when dropped.
struct PanicOnDrop;

impl Future for PanicOnDrop {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("drop of the future");
    }
}

/// Ready at once; panics when dropped after that.
struct ReadyThenPanicOnDrop;

impl Future for ReadyThenPanicOnDrop {
    type Output = u32;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u32> {
        Poll::Ready(7)
    }
}

impl Drop for ReadyThenPanicOnDrop {
    fn drop(&mut self) {
        panic!("drop after ready");
    }
}

async fn until_finished<T: 'static>(h: &JoinHandle<T>) {
    while !h.is_finished() {
        yield_now().await;
    }
}

#[test]
#[cfg_attr(percore_no_task_pool, ignore = "reuse is off in this build")]
fn a_finished_task_block_is_reused_by_the_next_spawn() {
    block_on(async {
        spawn(async {}).await.expect("join");
        let idle = pooled();
        assert!(idle >= 1, "the joined task's block went back to the pool");
        let h = spawn(async {});
        assert_eq!(pooled(), idle - 1, "the spawn took it");
        h.await.expect("join");
        assert_eq!(pooled(), idle);
        for _ in 0..1000 {
            spawn(async {}).await.expect("join");
        }
        assert_eq!(pooled(), idle, "a spawn/join loop allocates nothing new");
    });
}

#[test]
fn owners_are_the_slot_the_queue_entry_and_the_handle() {
    block_on(async {
        let h = spawn(std::future::pending::<()>());
        assert_eq!(h.refs(), 3);
        yield_now().await; // polled once: the queue entry is gone
        assert_eq!(h.refs(), 2);
        h.cancel(); // the slot lets go
        assert_eq!(h.refs(), 1);
        assert!(h.is_finished());
        assert!(h.await.expect_err("cancelled").is_cancelled());
    });
}

#[test]
fn handle_dropped_before_completion_cancels_and_frees() {
    block_on(async {
        let drops = Rc::new(Cell::new(0));
        let d = DropCount(drops.clone());
        let h = spawn(async move {
            let _d = d;
            std::future::pending::<()>().await;
        });
        yield_now().await;
        let idle = pooled();
        drop(h);
        assert_eq!(drops.get(), 1, "the future was dropped in place");
        assert_eq!(alive(), 0);
        assert_eq!(
            pooled(),
            pooled_after(idle, 1),
            "the block went back to the pool"
        );
    });
}

#[test]
fn handle_dropped_before_the_first_poll_frees_after_the_queue_lets_go() {
    block_on(async {
        let drops = Rc::new(Cell::new(0));
        let d = DropCount(drops.clone());
        let idle = pooled();
        drop(spawn(async move {
            let _d = d;
        }));
        assert_eq!(drops.get(), 1);
        assert_eq!(pooled(), idle, "the queue entry still holds the block");
        yield_now().await; // the stale entry is popped and skipped
        assert_eq!(pooled(), pooled_after(idle, 1));
        assert_eq!(alive(), 0);
    });
}

#[test]
fn handle_dropped_after_completion_drops_the_result() {
    block_on(async {
        let drops = Rc::new(Cell::new(0));
        let d = drops.clone();
        let h = spawn(async move { DropCount(d) });
        until_finished(&h).await;
        assert_eq!(alive(), 0, "finished: the slot is free");
        assert_eq!(h.refs(), 1, "only the handle holds the block");
        assert_eq!(drops.get(), 0, "the result waits in the block");
        drop(h);
        assert_eq!(drops.get(), 1);
    });
}

#[test]
#[allow(clippy::async_yields_async)] // the handle is the point: it outlives the core
fn a_handle_outliving_its_core_reads_cancelled_and_frees_off_core() {
    let drops = Rc::new(Cell::new(0));
    let d = DropCount(drops.clone());
    let mut h = block_on(async move {
        spawn(async move {
            let _d = d;
            std::future::pending::<()>().await;
        })
    });
    assert_eq!(drops.get(), 1, "the core's end cancelled the task");
    assert!(h.is_finished());
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(&mut h).poll(&mut cx) {
        Poll::Ready(Err(e)) => assert!(e.is_cancelled()),
        other => panic!(
            "expected a cancelled join, got {:?}",
            other.map(|r| r.is_ok())
        ),
    }
    drop(h); // no core: the block goes back to the global allocator
}

#[test]
fn a_task_cancelling_itself_during_its_poll_ends_after_that_poll() {
    block_on(async {
        let me: Rc<Cell<Option<JoinHandle<()>>>> = Rc::new(Cell::new(None));
        let m = me.clone();
        let polls = Rc::new(Cell::new(0));
        let p = polls.clone();
        let h = spawn(std::future::poll_fn(move |_| {
            p.set(p.get() + 1);
            if let Some(h) = m.take() {
                h.cancel();
                assert!(!h.is_finished(), "still being polled");
                m.set(Some(h));
            }
            Poll::<()>::Pending
        }));
        me.set(Some(h));
        yield_now().await;
        yield_now().await;
        assert_eq!(polls.get(), 1, "never polled again");
        assert_eq!(alive(), 0);
        let h = me.take().expect("handle");
        assert!(h.await.expect_err("cancelled").is_cancelled());
    });
}

#[test]
fn a_task_dropping_its_own_handle_during_its_poll_is_cancelled() {
    block_on(async {
        let me: Rc<Cell<Option<JoinHandle<()>>>> = Rc::new(Cell::new(None));
        let m = me.clone();
        me.set(Some(spawn(std::future::poll_fn(move |_| {
            drop(m.take());
            Poll::<()>::Pending
        }))));
        yield_now().await;
        yield_now().await;
        assert_eq!(alive(), 0);
    });
}

#[test]
fn a_panic_in_the_futures_drop_on_cancel_is_the_result() {
    block_on(async {
        let mut h = spawn(PanicOnDrop);
        yield_now().await;
        h.cancel();
        let e = (&mut h).await.expect_err("panicked");
        assert_eq!(e.panic_message(), Some("drop of the future"));
        assert_eq!(alive(), 0);
    });
}

#[test]
fn a_panic_in_the_futures_drop_after_ready_is_the_result() {
    block_on(async {
        let e = spawn(ReadyThenPanicOnDrop).await.expect_err("panicked");
        assert_eq!(e.panic_message(), Some("drop after ready"));
        assert_eq!(alive(), 0);
    });
}

#[test]
fn a_detached_task_detaching_itself_mid_poll_still_reports() {
    block_on(async {
        let me: Rc<Cell<Option<JoinHandle<u32>>>> = Rc::new(Cell::new(None));
        let got = Rc::new(Cell::new(None));
        let (m, g) = (me.clone(), got.clone());
        me.set(Some(spawn(async move {
            if let Some(h) = m.take() {
                h.detach(move |r| g.set(Some(r.expect("ok"))));
            }
            yield_now().await;
            5
        })));
        for _ in 0..4 {
            yield_now().await;
        }
        assert_eq!(got.get(), Some(5));
        assert_eq!(alive(), 0);
    });
}

#[test]
fn big_and_over_aligned_futures_bypass_the_pool() {
    #[repr(align(128))]
    struct Aligned(u8);
    block_on(async {
        let idle = pooled();
        let big = [1u8; 4096];
        let n = spawn(async move { big.iter().map(|&b| u32::from(b)).sum::<u32>() })
            .await
            .expect("join");
        assert_eq!(n, 4096);
        let a = Aligned(3);
        let v = spawn(async move {
            let a = a;
            assert_eq!(std::ptr::from_ref(&a) as usize % 128, 0);
            a.0
        })
        .await
        .expect("join");
        assert_eq!(v, 3);
        assert_eq!(pooled(), idle);
    });
}

#[test]
fn many_queued_tasks_run_in_spawn_order_across_queue_growth() {
    block_on(async {
        let order = Rc::new(std::cell::RefCell::new(Vec::new()));
        let handles: Vec<_> = (0..300u32)
            .map(|i| {
                let order = order.clone();
                spawn(async move {
                    order.borrow_mut().push(i);
                    yield_now().await;
                    order.borrow_mut().push(1000 + i);
                    i
                })
            })
            .collect();
        // Dropped while queued (never polled): its entry is skipped, its block freed after.
        drop(spawn(async {}));
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.expect("join"), i as u32);
        }
        let order = order.borrow();
        let expected: Vec<u32> = (0..300).chain(1000..1300).collect();
        assert_eq!(*order, expected);
        assert_eq!(alive(), 0);
    });
}

/// Counts wakes of a waker that is not the executor's own.
struct WakeCount(std::sync::atomic::AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn wake_count() -> (std::sync::Arc<WakeCount>, Waker) {
    let count = std::sync::Arc::new(WakeCount(std::sync::atomic::AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    (count, waker)
}

#[test]
fn a_foreign_joiner_waker_is_woken_once_when_the_task_ends() {
    block_on(async {
        let (count, waker) = wake_count();
        let mut h = spawn(async {
            yield_now().await;
            String::from("done")
        });
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut h).poll(&mut cx).is_pending());
        until_finished(&h).await;
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(
            std::sync::Arc::strong_count(&count),
            2,
            "the parked clone is gone"
        );
        match Pin::new(&mut h).poll(&mut cx) {
            Poll::Ready(Ok(s)) => assert_eq!(s, "done"),
            _ => panic!("expected the output"),
        }
    });
}

#[test]
fn a_waker_parked_before_a_detach_is_dropped_unwoken() {
    block_on(async {
        let (count, waker) = wake_count();
        let mut h = spawn(async {
            yield_now().await;
            3u32
        });
        assert!(Pin::new(&mut h)
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        let got = Rc::new(Cell::new(None));
        let g = got.clone();
        h.detach(move |r| g.set(Some(r.expect("ok"))));
        for _ in 0..3 {
            yield_now().await;
        }
        assert_eq!(got.get(), Some(3));
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(
            std::sync::Arc::strong_count(&count),
            2,
            "the parked clone is gone"
        );
        assert_eq!(alive(), 0);
    });
}

#[test]
fn outputs_of_every_size_and_alignment_come_back_intact() {
    #[derive(Debug, PartialEq)]
    #[repr(align(64))]
    struct Aligned(u64);
    block_on(async {
        // The future is smaller than its output, and the other way round.
        let small = spawn(async { [7u8; 3000] }).await.expect("join");
        assert!(small.iter().all(|&b| b == 7));
        let big_future = [1u64; 64];
        let n = spawn(async move { big_future.iter().sum::<u64>() as u8 })
            .await
            .expect("join");
        assert_eq!(n, 64);
        let a = spawn(async { Aligned(0xfeed) }).await.expect("join");
        assert_eq!(a, Aligned(0xfeed));
        assert_eq!(std::ptr::from_ref(&a) as usize % 64, 0);
        let v = spawn(async { vec![String::from("a"), String::from("b")] })
            .await
            .expect("join");
        assert_eq!(v, ["a", "b"]);
        assert_eq!(alive(), 0);
    });
}

/// Panics when polled; counts its drops (and panics in its drop too, if asked).
struct PanicOnPoll {
    drops: Rc<Cell<u32>>,
    panic_on_drop: bool,
}

impl Future for PanicOnPoll {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        panic!("poll");
    }
}

impl Drop for PanicOnPoll {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
        if self.panic_on_drop {
            panic!("drop after a panicking poll");
        }
    }
}

#[test]
fn a_future_that_panics_in_its_poll_is_dropped_once() {
    block_on(async {
        let drops = Rc::new(Cell::new(0));
        for (panic_on_drop, message, dropped) in
            [(false, "poll", 1), (true, "drop after a panicking poll", 2)]
        {
            let e = spawn(PanicOnPoll {
                drops: drops.clone(),
                panic_on_drop,
            })
            .await
            .expect_err("panicked");
            assert_eq!(e.panic_message(), Some(message));
            assert_eq!(drops.get(), dropped);
        }
        assert_eq!(alive(), 0);
    });
}
