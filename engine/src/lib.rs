//! percore-engine: the per-core io_uring engine under percore.
//!
//! Each core runs one thread, pinned, with its own io_uring, executor and timer wheel. Tasks
//! are `!Send` futures that never leave their core; I/O ops own their buffers and survive being
//! dropped at any point (the kernel's last completion frees them); scopes give trio's
//! structured concurrency; core-local sync primitives share one FIFO wait queue; cross-core
//! channels exist for explicit hand-off.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! let answer = percore_engine::block_on(async {
//!     let task = percore_engine::spawn(async {
//!         percore_engine::time::sleep(Duration::from_millis(1)).await;
//!         21
//!     });
//!     task.await.unwrap() * 2
//! });
//! assert_eq!(answer, 42);
//! ```
//!
//! # Threads and system calls
//!
//! [`Runtime::run`] starts one thread per core. A core makes one `io_uring_enter` per loop turn
//! (submit the batch, wait with the nearest timer as timeout); cross-thread wake-ups use
//! `IORING_OP_MSG_RING` or an eventfd write; SIGINT/SIGTERM are read from a signalfd when
//! enabled; [`runtime::blocking::spawn_blocking`] runs closures on a bounded pool of plain threads.
//! [`raise_fd_limit`] calls `getrlimit`/`setrlimit` when asked to (a load generator with many
//! connections). `unsafe` lives in this crate only, each block with the reason it is sound.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod buf;
pub mod cross;
mod driver;
mod executor;
pub mod fd;
mod first;
pub mod ops;
mod prefetch;
pub mod runtime;
pub mod scope;
pub mod stats;
pub mod sync;
mod sys;
pub mod time;

pub use driver::slab::Completion;
pub use driver::{DriverStats, RingFeatures};
pub use executor::task::{JoinError, JoinHandle};
pub use executor::ExecutorStats;
pub use first::{first, first3, First, First3, Race2, Race3};
pub use runtime::{
    block_on, current_core, ring_features, shutdown, spawn, yield_now, Builder, CoreError,
    CoreInfo, RunError, Runtime, RuntimeHandle,
};
pub use scope::{scope, spawn_detached, Scope, ScopeError, TaskFailure};
pub use sys::{open_fd_count, raise_fd_limit, thread_cpu_time};
