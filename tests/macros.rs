//! `#[percore::test]` and the facade's re-exports.

use std::time::Duration;

#[percore::test]
async fn percore_test_runs_an_async_test() {
    percore::time::sleep(Duration::from_millis(1)).await;
    let h = percore::spawn(async { 2 + 2 });
    assert_eq!(h.await.unwrap(), 4);
}

#[percore::test]
async fn percore_test_keeps_the_return_type() -> Result<(), std::io::Error> {
    percore::ops::nop().await
}
