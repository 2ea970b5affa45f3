//! First light: spawn, sleep, nop, timeouts, scope.
use std::time::{Duration, Instant};

#[test]
fn spawn_join_sleep_nop() {
    let v = percore_engine::block_on(async {
        let features = percore_engine::ring_features();
        eprintln!("{features}");
        percore_engine::ops::nop().await.unwrap();
        let t0 = Instant::now();
        percore_engine::time::sleep(Duration::from_millis(20)).await;
        assert!(t0.elapsed() >= Duration::from_millis(20));
        let h = percore_engine::spawn(async { 5 });
        h.await.unwrap()
    });
    assert_eq!(v, 5);
}

/// A core gives its ring's registered-ring slot back when it ends: a thread has 16, and one
/// that runs core after core keeps enters by slot (and lets each ring go with its core).
#[test]
fn cores_in_turn_on_one_thread_each_register_their_ring() {
    for i in 0..24 {
        let registered = percore_engine::block_on(async {
            percore_engine::ops::nop().await.unwrap();
            percore_engine::ring_features().registered_ring_fd
        });
        assert!(registered, "core {i} on this thread entered its ring by fd");
    }
}
