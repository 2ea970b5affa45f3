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
