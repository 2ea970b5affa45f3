//! Lines on stderr that never take the service down.
//!
//! `eprintln!` panics when stderr fails (a closed pipe is `EPIPE`: Rust ignores SIGPIPE), and a
//! panic in the demultiplexer or after a conversation's end would fail the core's whole service.
//! A log line that cannot be written is lost instead: the counters still hold every event.

use std::fmt;
use std::io::Write as _;

/// Writes one line on stderr; a write error is ignored (see the module docs).
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}
