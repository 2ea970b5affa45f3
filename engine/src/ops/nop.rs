//! `IORING_OP_NOP`: a round trip through the ring and nothing else (the benchmark floor).

use std::io;

use io_uring::opcode;

use crate::driver::op::{Op, Orphan};

struct NopData;

impl Orphan for NopData {}

/// Submits a no-op and waits for its completion.
///
/// # Errors
///
/// Fails off a percore core.
///
/// # Cancel safety
///
/// Cancel-safe: a no-op owns nothing.
pub async fn nop() -> io::Result<()> {
    // SAFETY: a nop entry points at no memory.
    let op = unsafe { Op::submit(NopData, |_| opcode::Nop::new().build()) }.map_err(|(e, _)| e)?;
    let (done, _) = op.await;
    super::check(done).map(drop)
}
