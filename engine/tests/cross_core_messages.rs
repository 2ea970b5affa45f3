//! Cross-core hand-off under load: N cores x M messages, none lost or duplicated; values
//! (an fd) moved to a chosen core; wakers used from foreign threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use percore_engine::cross::{self, channel};
use percore_engine::sync::channel::TrySendError;
use percore_engine::Runtime;

const M: u64 = 20_000;

#[test]
fn two_cores_exchange_every_message_in_order() {
    let rt = Runtime::builder().cpus([0, 1]).build().unwrap();
    let (to_b, from_a) = channel::bounded::<u64>(64);
    let (to_a, from_b) = channel::bounded::<u64>(64);
    let a = Mutex::new(Some((to_b, from_b)));
    let b = Mutex::new(Some((to_a, from_a)));
    let out = rt
        .run(|core| {
            let mine_a = if core.index == 0 {
                a.lock().unwrap().take()
            } else {
                None
            };
            let mine_b = if core.index == 1 {
                b.lock().unwrap().take()
            } else {
                None
            };
            async move {
                if let Some((to_b, from_b)) = mine_a {
                    let sender = percore_engine::spawn(async move {
                        for i in 0..M {
                            to_b.send(i).await.unwrap();
                        }
                    });
                    let mut expect = 0;
                    while let Some(v) = from_b.recv().await {
                        assert_eq!(v, expect * 2, "order and content preserved");
                        expect += 1;
                    }
                    sender.await.unwrap();
                    return expect;
                }
                if let Some((to_a, from_a)) = mine_b {
                    let mut n = 0;
                    while let Some(v) = from_a.recv().await {
                        to_a.send(v * 2).await.unwrap();
                        n += 1;
                    }
                    return n;
                }
                0
            }
        })
        .unwrap();
    assert_eq!(out, vec![M, M]);
}

#[test]
fn many_foreign_threads_into_one_core() {
    let (tx, rx) = channel::bounded::<(u32, u64)>(128);
    let producers: Vec<_> = (0..4u32)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                percore_engine::block_on(async move {
                    for i in 0..M / 4 {
                        tx.send((p, i)).await.unwrap();
                    }
                })
            })
        })
        .collect();
    drop(tx);
    let counts = percore_engine::block_on(async move {
        let mut next = [0u64; 4];
        while let Some((p, i)) = rx.recv().await {
            assert_eq!(next[p as usize], i, "per-producer order");
            next[p as usize] += 1;
        }
        next
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(counts, [M / 4; 4]);
}

#[test]
fn plain_threads_wake_a_core_without_a_ring() {
    // A thread with no percore core sends: the wake goes through the eventfd.
    let (tx, rx) = channel::bounded::<u64>(1);
    let t = std::thread::spawn(move || {
        for i in 0..1000 {
            let mut v = i;
            loop {
                match tx.try_send(v) {
                    Ok(()) => break,
                    Err(e) => {
                        v = e.into_inner();
                        std::thread::yield_now();
                    }
                }
            }
        }
    });
    let sum = percore_engine::block_on(async move {
        let mut sum = 0;
        while let Some(v) = rx.recv().await {
            sum += v;
        }
        sum
    });
    t.join().unwrap();
    assert_eq!(sum, (0..1000).sum::<u64>());
}

/// A waker that records that it was woken.
struct Flag(std::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> (Arc<Flag>, std::task::Waker) {
    let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
    (flag.clone(), std::task::Waker::from(flag))
}

#[test]
fn a_closed_channel_refuses_sends_wakes_waiting_ones_and_ends_after_its_queue() {
    use std::future::Future;
    use std::task::{Context, Poll};

    // A sender waits for room while a clone closes the channel: it is woken and refused.
    let (tx, rx) = channel::bounded::<u64>(2);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    let waiting_tx = tx.clone();
    let mut send = waiting_tx.send(3);
    let (woken, waker) = flag();
    let mut cx = Context::from_waker(&waker);
    assert!(
        std::pin::Pin::new(&mut send).poll(&mut cx).is_pending(),
        "full: it waits"
    );
    tx.close();
    assert!(
        woken.0.load(Ordering::SeqCst),
        "the close woke the waiting send"
    );
    match std::pin::Pin::new(&mut send).poll(&mut cx) {
        Poll::Ready(Err(e)) => assert_eq!(e.into_inner(), 3),
        other => panic!("expected the value back, got {other:?}"),
    }
    drop(send);
    assert!(
        matches!(tx.try_send(4), Err(TrySendError::Closed(4))),
        "closed for every sender"
    );
    tx.close();
    // The receiver takes what was queued, then sees the end, though `tx` is still alive.
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(rx.try_recv(), Ok(2));
    let (_, waker) = flag();
    let mut cx = Context::from_waker(&waker);
    assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    drop((tx, waiting_tx));

    // A receiver already waiting on an empty channel is woken by the close.
    let (tx, rx) = channel::bounded::<u64>(2);
    let (woken, waker) = flag();
    let mut cx = Context::from_waker(&waker);
    assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
    tx.close();
    assert!(
        woken.0.load(Ordering::SeqCst),
        "the close woke the receiver"
    );
    assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
}

#[test]
fn spawn_on_runs_on_the_chosen_core_and_carries_an_fd() {
    let rt = Runtime::builder().cpus([0, 1]).build().unwrap();
    let ran_on = Arc::new(AtomicU64::new(u64::MAX));
    let (done_tx, done_rx) = channel::bounded::<()>(1);
    let done_tx = Mutex::new(Some(done_tx));
    let done_rx = Mutex::new(Some(done_rx));
    let out = rt
        .run(|core| {
            let ran_on = ran_on.clone();
            let done_tx = if core.index == 0 {
                done_tx.lock().unwrap().take()
            } else {
                None
            };
            let done_rx = if core.index == 1 {
                done_rx.lock().unwrap().take()
            } else {
                None
            };
            async move {
                if let Some(done_rx) = done_rx {
                    // Core 1 serves its mailbox until core 0 is finished with it.
                    let _ = done_rx.recv().await;
                    return 0;
                }
                let _done = done_tx;
                let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
                let fd: std::os::fd::OwnedFd = a.into();
                let r = cross::spawn_on(1, move || async move {
                    ran_on.store(
                        percore_engine::current_core().index as u64,
                        Ordering::SeqCst,
                    );
                    let fd = percore_engine::fd::SharedFd::new(fd);
                    let (n, _) = percore_engine::ops::send(&fd, &b"moved"[..], 0).await;
                    n.unwrap()
                })
                .await
                .unwrap();
                let mut buf = [0u8; 5];
                std::io::Read::read_exact(&mut b, &mut buf).unwrap();
                assert_eq!(&buf, b"moved");
                let panicked = cross::spawn_on(1, || async { panic!("remote boom") }).await;
                assert!(panicked.unwrap_err().is_panic());
                r as u64
            }
        })
        .unwrap();
    assert_eq!(out[0], 5);
    assert_eq!(ran_on.load(Ordering::SeqCst), 1);
}
