//! Lines on stderr from the services: never a panic, never one per event without bound.
//!
//! `eprintln!` panics when stderr fails (a closed pipe is `EPIPE`: Rust ignores SIGPIPE), and
//! it blocks the core on a slow reader. A service logs through [`line`](fn@line), which drops
//! a line it cannot write (the counters still hold every event), and logs per-connection
//! trouble only while `worth_logging` says so: the first ten, then the 16th, 32nd, 64th, ...
//! (each line says how many so far), so a peer that fails connections at will cannot flood
//! the log.
//!
//! The other crates' services (UDP conversations) and the binary log through it too.

use std::fmt;
use std::io::Write as _;

/// Writes one line on stderr; a write error is ignored (see the module docs).
pub fn line(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Whether the `n`-th event of a kind (counted from 1) gets a line.
pub(crate) fn worth_logging(n: u64) -> bool {
    n <= 10 || n.is_power_of_two()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_ten_then_powers_of_two() {
        let logged: Vec<u64> = (1..=100).filter(|&n| super::worth_logging(n)).collect();
        assert_eq!(logged, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64]);
    }
}
