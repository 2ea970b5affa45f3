//! Core-local sync primitives with real tasks: FIFO, capacity, cancel safety, timeouts.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use percore_engine::sync::channel::{self, TrySendError};
use percore_engine::sync::{Event, Latch, Mutex, Semaphore};
use percore_engine::time::sleep;

#[test]
fn channel_keeps_fifo_across_blocked_senders_and_respects_capacity() {
    percore_engine::block_on(async {
        let (tx, rx) = channel::bounded::<u32>(2);
        tx.try_send(0).unwrap();
        tx.try_send(1).unwrap();
        assert!(matches!(tx.try_send(99), Err(TrySendError::Full(99))));
        let mut senders = Vec::new();
        for i in 2..10 {
            let tx = tx.clone();
            senders.push(percore_engine::spawn(
                async move { tx.send(i).await.unwrap() },
            ));
            percore_engine::yield_now().await;
        }
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(rx.recv().await.unwrap());
        }
        assert_eq!(
            got,
            (0..10).collect::<Vec<_>>(),
            "blocked senders are served in order"
        );
        for s in senders {
            s.await.unwrap();
        }
        drop(tx);
        assert_eq!(rx.recv().await, None);
    });
}

#[test]
fn recv_timeout_times_out_then_receives() {
    percore_engine::block_on(async {
        let (tx, rx) = channel::bounded::<&str>(1);
        assert!(rx.recv_timeout(Duration::from_millis(2)).await.is_err());
        percore_engine::spawn(async move {
            sleep(Duration::from_millis(2)).await;
            tx.send("late").await.unwrap();
        })
        .detach(|_| {});
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).await,
            Ok(Some("late"))
        );
    });
}

#[test]
fn a_timed_out_receive_loses_no_message() {
    percore_engine::block_on(async {
        let (tx, rx) = channel::bounded::<u32>(4);
        for round in 0..200u32 {
            let t = Duration::from_micros(u64::from(round % 7));
            let tx2 = tx.clone();
            percore_engine::spawn(async move {
                if round % 2 == 0 {
                    percore_engine::yield_now().await;
                }
                tx2.send(round).await.unwrap();
            })
            .detach(|_| {});
            // Either we get it now or a later receive does: never lost.
            let got = match rx.recv_timeout(t).await {
                Ok(Some(v)) => v,
                _ => rx.recv().await.unwrap(),
            };
            assert_eq!(got, round);
        }
    });
}

#[test]
fn mutex_hands_off_in_arrival_order() {
    percore_engine::block_on(async {
        let m = Rc::new(Mutex::new(Vec::new()));
        let guard = m.lock().await;
        let mut tasks = Vec::new();
        for i in 0..5 {
            let m = m.clone();
            tasks.push(percore_engine::spawn(async move {
                m.lock().await.push(i);
            }));
            percore_engine::yield_now().await;
        }
        drop(guard);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*m.lock().await, vec![0, 1, 2, 3, 4]);
    });
}

#[test]
fn semaphore_limits_concurrency() {
    percore_engine::block_on(async {
        let sem = Rc::new(Semaphore::new(3));
        let peak = Rc::new(RefCell::new((0usize, 0usize)));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (sem, peak) = (sem.clone(), peak.clone());
            tasks.push(percore_engine::spawn(async move {
                let _p = sem.acquire(1).await.unwrap();
                {
                    let mut p = peak.borrow_mut();
                    p.0 += 1;
                    p.1 = p.1.max(p.0);
                }
                sleep(Duration::from_micros(200)).await;
                peak.borrow_mut().0 -= 1;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.borrow().1, 3);
    });
}

#[test]
fn event_and_latch_release_waiters() {
    percore_engine::block_on(async {
        let ev = Rc::new(Event::new());
        let latch = Rc::new(Latch::new(3));
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let (ev, latch) = (ev.clone(), latch.clone());
            waiters.push(percore_engine::spawn(async move {
                ev.wait().await;
                latch.count_down();
            }));
        }
        percore_engine::yield_now().await;
        ev.set();
        latch.wait().await;
        for w in waiters {
            w.await.unwrap();
        }
    });
}
