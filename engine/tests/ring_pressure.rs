//! Tiny rings: the submission queue fills (entries wait in the backlog) and the completion
//! queue overflows (the kernel keeps the completions), and not one op is lost.

mod common;

use percore_engine::{ops, Runtime};

#[test]
fn thousands_of_ops_through_a_four_entry_ring() {
    let _serial = common::serial();
    let runtime = Runtime::builder()
        .pin(false)
        .ring_entries(4)
        .cq_entries(8)
        .build()
        .unwrap();
    let (done, stats) = runtime.block_on(async {
        let tasks: Vec<_> = (0..2000)
            .map(|_| percore_engine::spawn(async { ops::nop().await }))
            .collect();
        let mut done = 0;
        for t in tasks {
            t.await.unwrap().unwrap();
            done += 1;
        }
        (done, percore_engine::stats::current())
    });
    assert_eq!(done, 2000);
    eprintln!("{stats:?}");
    assert!(
        stats.sq_full > 0,
        "a 4-entry ring must have filled: {stats:?}"
    );
    assert!(
        stats.cq_overflows > 0,
        "an 8-entry CQ must have overflowed: {stats:?}"
    );
    assert!(stats.ops_completed >= 2000);
}

#[test]
fn cancels_through_a_full_ring_are_not_lost() {
    let _serial = common::serial();
    let runtime = Runtime::builder()
        .pin(false)
        .ring_entries(2)
        .cq_entries(4)
        .build()
        .unwrap();
    runtime.block_on(async {
        let base = common::baseline();
        let pairs: Vec<_> = (0..300).map(|_| common::unix_pair()).collect();
        let mut pending = Vec::new();
        for (fd, _) in &pairs {
            let f = common::poll_once(Box::pin(ops::recv(fd, Vec::with_capacity(16), 0))).await;
            pending.push(f);
        }
        common::let_kernel_work().await;
        drop(pending);
        drop(pairs);
        common::assert_settles_to(base, "cancels through a 2-entry ring").await;
    });
}
