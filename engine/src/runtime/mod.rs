//! The launcher: a [`Runtime`] runs one pinned core per CPU and returns every core's outcome.
//!
//! # Design
//!
//! [`Runtime::run`] starts one thread per configured CPU (pinned with `core_affinity` unless
//! pinning is off), builds that core's ring and executor on the thread itself (the ring is
//! `SINGLE_ISSUER`), and runs the caller's closure there. The closure's future is `!Send`: it
//! lives and dies on its core. `run` returns when every core is done, with every core's result
//! or error ([`RunError`] lists them all, none is dropped).
//!
//! Shutdown: SIGINT/SIGTERM (read from a signalfd by the first core) or
//! [`RuntimeHandle::shutdown`] make [`shutdown::requested`] resolve on every core; each main
//! future then has the grace period to return before it is dropped (cancelled).
//!
//! [`Runtime::block_on`] runs a single core on the calling thread, the way tests and small
//! programs use it.

pub mod blocking;
pub(crate) mod context;
pub(crate) mod core;
pub mod shutdown;
mod signal;

pub use signal::{hold_shutdown_signals, HeldSignals};

use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use self::core::{Core, CoreConfig};
use crate::executor::task::JoinHandle;
use crate::stats::{CoreStats, StatsBoard};
use shutdown::{CoreShutdown, ShutdownShared};

/// Configures a [`Runtime`].
#[derive(Debug, Clone)]
pub struct Builder {
    cpus: Option<Vec<usize>>,
    pin: bool,
    ring_entries: u32,
    cq_entries: Option<u32>,
    receive_buffers: u16,
    max_io_workers: u32,
    budget: usize,
    busy_poll: Option<Duration>,
    grace: Duration,
    signals: bool,
    announce: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cpus: None,
            pin: true,
            ring_entries: 1024,
            cq_entries: None,
            receive_buffers: crate::buf::ring::CORE_RING_ENTRIES,
            max_io_workers: self::core::DEFAULT_MAX_IO_WORKERS,
            budget: 128,
            busy_poll: None,
            grace: Duration::from_secs(5),
            signals: false,
            announce: false,
        }
    }
}

impl Builder {
    /// The CPUs to run a core on, one core each (default: every CPU this process may use).
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.cpus = Some(cpus.into_iter().collect());
        self
    }

    /// Whether each core's thread is pinned to its CPU (default: yes).
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Submission queue entries per ring (default 1024). Small rings work: a full queue
    /// backs entries up in user space.
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.ring_entries = entries;
        self
    }

    /// Completion queue entries per ring (default: twice the submission queue).
    pub fn cq_entries(mut self, entries: u32) -> Self {
        self.cq_entries = Some(entries);
        self
    }

    /// Buffers in each core's shared receive ring (default [`CORE_RING_ENTRIES`] of
    /// [`CORE_RING_BUF_SIZE`] bytes; rounded up to a power of two, at most 32768). A stream
    /// holds one only while a received chunk waits to be consumed, so a core needs about one
    /// per connection that can have data waiting at once. Fewer buffers are fewer cache lines
    /// for the kernel to copy into (the ring hands them out in turn): a core with a known,
    /// small number of busy connections (a load generator) receives faster with a ring sized to
    /// them. A ring that runs dry pauses the receives that found it empty, and loses nothing.
    ///
    /// [`CORE_RING_ENTRIES`]: crate::buf::ring::CORE_RING_ENTRIES
    /// [`CORE_RING_BUF_SIZE`]: crate::buf::ring::CORE_RING_BUF_SIZE
    pub fn receive_buffers(mut self, buffers: u16) -> Self {
        self.receive_buffers = buffers.clamp(1, 32768);
        self
    }

    /// The most kernel worker threads each core's ring may use for ops that block and cannot
    /// be polled (default 64; 0: the kernel's limit, which is the process's thread limit). A
    /// Unix-socket connect to a listener whose backlog is full is one: it holds a thread until
    /// the listener accepts or the connect is cancelled. Past the cap such ops queue in the
    /// kernel until a thread is free; a deadline or a dropped future still cancels them. The
    /// cap in force is in [`RingFeatures::max_io_workers`](crate::RingFeatures).
    pub fn io_workers(mut self, max: u32) -> Self {
        self.max_io_workers = max;
        self
    }

    /// Task polls per loop turn before the ring is checked again (default 128).
    pub fn budget(mut self, polls: usize) -> Self {
        self.budget = polls.max(1);
        self
    }

    /// Latency mode: spin on the ring for up to `window` before sleeping in the kernel.
    pub fn busy_poll(mut self, window: Duration) -> Self {
        self.busy_poll = Some(window);
        self
    }

    /// How long main futures get to finish after a shutdown request (default 5 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Whether SIGINT and SIGTERM start a graceful shutdown (default: no). When on, `run`
    /// blocks both signals in the calling thread (the cores inherit the mask) and reads them
    /// from a signalfd on the first core.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Whether each core prints, when it starts, which CPU it runs on and the io_uring features
    /// its ring got (to stderr; default: no). Servers turn it on; libraries leave it off and read
    /// [`ring_features`] instead.
    pub fn announce(mut self, on: bool) -> Self {
        self.announce = on;
        self
    }

    /// Builds the runtime (no thread starts until [`Runtime::run`]).
    ///
    /// # Errors
    ///
    /// Fails if the CPU list is empty or names a CPU this process may not use.
    pub fn build(self) -> io::Result<Runtime> {
        let available: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let cpus = match &self.cpus {
            Some(cpus) => cpus.clone(),
            None if available.is_empty() => vec![0],
            None => available.clone(),
        };
        if cpus.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty CPU list",
            ));
        }
        if self.pin && !available.is_empty() {
            if let Some(bad) = cpus.iter().find(|c| !available.contains(c)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("CPU {bad} is not available to this process (have {available:?})"),
                ));
            }
        }
        let shutdown = ShutdownShared::new(self.grace);
        Ok(Runtime {
            board: StatsBoard::new(cpus.len()),
            cpus,
            config: self,
            shutdown,
        })
    }

    fn core_config(&self, index: usize, cpu: Option<usize>) -> CoreConfig {
        CoreConfig {
            ring_entries: self.ring_entries,
            cq_entries: self.cq_entries,
            receive_buffers: self.receive_buffers,
            max_io_workers: self.max_io_workers,
            budget: self.budget,
            busy_poll: self.busy_poll,
            index,
            cpu,
            ..CoreConfig::default()
        }
    }
}

/// Which core a closure passed to [`Runtime::run`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreInfo {
    /// Position in the runtime's CPU list (0-based).
    pub index: usize,
    /// The CPU this core is pinned to (`None` when pinning is off).
    pub cpu: Option<usize>,
    /// How many cores the runtime runs.
    pub cores: usize,
}

/// Why a core produced no value.
#[derive(Debug)]
pub enum CoreError {
    /// The ring or executor could not be set up.
    Setup(io::Error),
    /// The core's main future panicked.
    Panicked(String),
    /// The grace period after a shutdown request passed and the main future was dropped.
    ShutdownTimedOut,
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Setup(e) => write!(f, "core set-up failed: {e}"),
            CoreError::Panicked(m) => write!(f, "core panicked: {m}"),
            CoreError::ShutdownTimedOut => f.write_str("cancelled after the shutdown grace period"),
        }
    }
}

impl std::error::Error for CoreError {}

/// Every core that failed, with its index.
#[derive(Debug)]
pub struct RunError {
    /// `(core index, error)` for each failed core, in core order.
    pub failures: Vec<(usize, CoreError)>,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} core(s) failed", self.failures.len())?;
        for (index, e) in &self.failures {
            write!(f, "; core {index}: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RunError {}

/// A thread-per-core runtime; see the module docs.
#[derive(Debug)]
pub struct Runtime {
    cpus: Vec<usize>,
    config: Builder,
    shutdown: Arc<ShutdownShared>,
    board: Arc<StatsBoard>,
}

/// A handle to a runtime usable from any thread: request shutdown, read stats.
#[derive(Debug, Clone)]
pub struct RuntimeHandle {
    shutdown: Arc<ShutdownShared>,
    board: Arc<StatsBoard>,
}

impl RuntimeHandle {
    /// Starts a graceful shutdown of every core. The request stays: cores this runtime starts
    /// later see it at once.
    pub fn shutdown(&self) {
        self.shutdown.request();
    }

    /// Every core's latest published stats (updated each loop turn).
    pub fn stats(&self) -> Vec<CoreStats> {
        self.board.snapshot()
    }
}

impl Runtime {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A runtime on every available CPU, pinned.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new() -> io::Result<Runtime> {
        Builder::default().build()
    }

    /// The CPUs the cores run on.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// A handle for other threads.
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            shutdown: self.shutdown.clone(),
            board: self.board.clone(),
        }
    }

    /// Runs `f` on every core and returns each core's value, in core order.
    ///
    /// # Errors
    ///
    /// If any core failed (set-up, panic, shutdown timeout), every failure is returned.
    pub fn run<F, Fut, T>(&self, f: F) -> Result<Vec<T>, RunError>
    where
        F: Fn(CoreInfo) -> Fut + Sync,
        Fut: Future<Output = T>,
        T: Send,
    {
        let signals = if self.config.signals {
            match signal::SignalGuard::install() {
                Ok(g) => Some(g),
                Err(e) => {
                    return Err(RunError {
                        failures: vec![(0, CoreError::Setup(e))],
                    })
                }
            }
        } else {
            None
        };
        let cores = self.cpus.len();
        let (mailboxes, inboxes) = crate::cross::spawn_on::Mailboxes::new(cores);
        let inboxes: Vec<_> = inboxes
            .into_iter()
            .map(|i| std::sync::Mutex::new(Some(i)))
            .collect();
        let outcomes: Vec<Result<T, CoreError>> = std::thread::scope(|scope| {
            let threads: Vec<_> = self
                .cpus
                .iter()
                .enumerate()
                .map(|(index, &cpu)| {
                    let f = &f;
                    let signals = signals.as_ref().filter(|_| index == 0);
                    let mailboxes = mailboxes.clone();
                    let inbox = inboxes[index]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    std::thread::Builder::new()
                        .name(format!("percore-{index}"))
                        .spawn_scoped(scope, move || {
                            let start = CoreStart {
                                index,
                                cpu,
                                cores,
                                signals,
                                mailboxes,
                                inbox,
                            };
                            self.run_core(start, f)
                        })
                        .expect("spawning a core thread")
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|p| Err(CoreError::Panicked(panic_text(&*p))))
                })
                .collect()
        });
        drop(signals);
        let mut values = Vec::with_capacity(cores);
        let mut failures = Vec::new();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(v) => values.push(v),
                Err(e) => failures.push((index, e)),
            }
        }
        if failures.is_empty() {
            Ok(values)
        } else {
            Err(RunError { failures })
        }
    }

    fn run_core<F, Fut, T>(&self, start: CoreStart<'_>, f: &F) -> Result<T, CoreError>
    where
        F: Fn(CoreInfo) -> Fut,
        Fut: Future<Output = T>,
    {
        let CoreStart {
            index,
            cpu,
            cores,
            signals,
            mailboxes,
            inbox,
        } = start;
        let pinned =
            self.config.pin && core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
        let cpu = pinned.then_some(cpu);
        let core = Core::new(
            self.config.core_config(index, cpu),
            CoreShutdown::new(self.shutdown.clone()),
        )
        .map_err(CoreError::Setup)?;
        self.shutdown.add_core(core.remote.clone());
        *core.mailboxes.borrow_mut() = Some(mailboxes);
        *core.publisher.borrow_mut() = Some((self.board.clone(), u64::MAX));
        if self.config.announce {
            let cpu = cpu.map_or_else(|| "unpinned".to_string(), |c| format!("CPU {c}"));
            eprintln!(
                "percore: core {index} ({cpu}): {}",
                core.driver.borrow().features()
            );
        }
        let info = CoreInfo { index, cpu, cores };
        let grace = self.shutdown.grace;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            core.block_on(async {
                let _signals = signals.map(|s| s.spawn_reader());
                let _mailbox = inbox.map(crate::cross::spawn_on::serve_mailbox);
                let main = std::pin::pin!(f(info));
                let deadline = std::pin::pin!(async {
                    shutdown::requested().await;
                    crate::time::sleep(grace).await;
                });
                match crate::first::first(main, deadline).await {
                    crate::first::First::A(value, _) => Ok(value),
                    crate::first::First::B((), _) => Err(CoreError::ShutdownTimedOut),
                }
            })
        }));
        outcome.unwrap_or_else(|p| Err(CoreError::Panicked(panic_text(&*p))))
    }

    /// Runs `future` on a single core on the calling thread and returns its value. The thread is
    /// pinned to the first CPU of [`Builder::cpus`] if CPUs were chosen and pinning is on (it
    /// stays pinned afterwards); otherwise it is left alone. Tasks the future spawned that are
    /// still alive when it returns are cancelled.
    ///
    /// # Panics
    ///
    /// Panics if the ring cannot be set up, and resumes the future's panic.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        // Pin the calling thread only when the caller chose the CPUs explicitly.
        let cpu = match (&self.config.cpus, self.config.pin) {
            (Some(cpus), true) => cpus
                .first()
                .copied()
                .filter(|&c| core_affinity::set_for_current(core_affinity::CoreId { id: c })),
            _ => None,
        };
        let core = Core::new(
            self.config.core_config(0, cpu),
            CoreShutdown::new(self.shutdown.clone()),
        )
        .unwrap_or_else(|e| panic!("percore: cannot set up the ring: {e}"));
        self.shutdown.add_core(core.remote.clone());
        core.block_on(future)
    }
}

/// What one core thread needs to start.
struct CoreStart<'a> {
    index: usize,
    cpu: usize,
    cores: usize,
    signals: Option<&'a signal::SignalGuard>,
    mailboxes: Arc<crate::cross::spawn_on::Mailboxes>,
    inbox: Option<crate::cross::channel::CrossReceiver<crate::cross::spawn_on::Job>>,
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&'static str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// Runs `future` on a fresh single-core runtime on this thread (default settings).
///
/// # Panics
///
/// Panics if the ring cannot be set up, and resumes the future's panic.
///
/// # Examples
///
/// ```
/// let v = percore_engine::block_on(async { 40 + 2 });
/// assert_eq!(v, 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    Builder::default()
        .pin(false)
        .build()
        .expect("default runtime")
        .block_on(future)
}

/// Spawns a task on the current core.
///
/// The task starts at the next loop turn. Dropping the returned handle cancels it; see
/// [`JoinHandle`].
///
/// # Panics
///
/// Panics when called off a percore core.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    context::with_core(|core| core.executor.spawn(future))
        .expect("percore::spawn called off a percore core")
}

/// Yields to the other tasks of this core once.
///
/// # Cancel safety
///
/// Cancel-safe: it holds nothing.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// The kernel features this core's ring runs with.
///
/// # Panics
///
/// Panics off a percore core.
pub fn ring_features() -> crate::driver::RingFeatures {
    context::with_core(|core| core.driver.borrow().features().clone())
        .expect("ring_features called off a percore core")
}

/// Which core this is.
///
/// # Panics
///
/// Panics off a percore core.
pub fn current_core() -> CoreInfo {
    context::with_core(|core| CoreInfo {
        index: core.config.index,
        cpu: core.config.cpu,
        cores: core.mailboxes.borrow().as_ref().map_or(1, |m| m.cores()),
    })
    .expect("current_core called off a percore core")
}
