//! The deadline wrappers hold the future they wrap once: they add a timer, not a copy. (As
//! `async fn`s they kept their by-value argument beside the future they polled: a future
//! under `move_on_after` was held three times, one under `fail_after` or a cancel scope's
//! `run` twice, in every task that used them.)

use std::mem::size_of_val;
use std::time::{Duration, Instant};

use percore_engine::scope::{fail_after, fail_at, move_on_after, move_on_at, CancelScope};

/// A future of a little over 4 KiB (its buffer lives across an await).
async fn big() -> u8 {
    let buf = [7u8; 4096];
    percore_engine::time::sleep(Duration::from_millis(1)).await;
    std::hint::black_box(&buf)[4095]
}

#[test]
fn deadline_wrappers_add_a_timer_not_a_copy() {
    percore_engine::block_on(async {
        let inner = size_of_val(&big());
        assert!(inner > 4096);
        let d = Duration::from_secs(1);
        let at = Instant::now() + d;
        let scope = CancelScope::new();
        let sizes = [
            ("move_on_after", size_of_val(&move_on_after(d, big()))),
            ("move_on_at", size_of_val(&move_on_at(at, big()))),
            ("fail_after", size_of_val(&fail_after(d, big()))),
            ("fail_at", size_of_val(&fail_at(at, big()))),
            ("CancelScope::run", size_of_val(&scope.run(big()))),
        ];
        for (name, size) in sizes {
            assert!(
                size < inner + 256,
                "{name}: {size} B around a {inner} B future"
            );
        }
        // And they still work.
        assert_eq!(move_on_after(d, big()).await, Some(7));
        assert_eq!(fail_after(d, big()).await, Ok(7));
        assert_eq!(scope.run(big()).await, Some(7));
    });
}
