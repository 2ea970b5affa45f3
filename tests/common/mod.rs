//! Helpers shared by the CLI test binaries (`cli_bench`, `cli_serve`, `cli_serve_proxy`).

// Not every test binary uses every helper.
#[allow(dead_code)]
pub(crate) mod nginx;
#[allow(dead_code)]
pub(crate) mod serve;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `command` (stdin closed, stdout and stderr captured) and gives its output if it ends
/// within `limit`; otherwise kills it and gives `None`.
pub(crate) fn output_within(mut command: Command, limit: Duration) -> Option<Output> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running percore");
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Some(out.expect("waiting for percore")),
        Err(_) => {
            // SAFETY: kill(2) on our own child, not waited for yet (its waiter is blocked).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            None
        }
    }
}
