//! Ring set-up: the flags we want, probed one by one, and a report of what is in use.
//!
//! We ask for SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN. A kernel that refuses a flag gets
//! asked again without it, in the order that keeps the most useful flags longest: DEFER_TASKRUN
//! needs SINGLE_ISSUER, so it goes first; COOP_TASKRUN next; SINGLE_ISSUER last.

use std::fmt;
use std::io;

use io_uring::{opcode, IoUring, Probe};

/// What the kernel gave this core's ring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RingFeatures {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries.
    pub cq_entries: u32,
    /// `IORING_SETUP_SINGLE_ISSUER` is in use.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` is in use (completions run only when we wait).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` is in use (no IPI to interrupt us for task work).
    pub coop_taskrun: bool,
    /// `IORING_SETUP_TASKRUN_FLAG` is in use: turns with nothing to submit and no flagged task
    /// work skip `io_uring_enter`.
    pub taskrun_flag: bool,
    /// Waits can carry a timeout (`IORING_FEAT_EXT_ARG`); without it a timeout op is used.
    pub ext_arg: bool,
    /// The kernel keeps overflowing completions instead of dropping them (`IORING_FEAT_NODROP`).
    pub nodrop: bool,
    /// The ring fd is registered (`IORING_ENTER_REGISTERED_RING`).
    pub registered_ring_fd: bool,
    /// `IORING_ASYNC_CANCEL_ANY` is supported (5.19): a shutdown cancels everything with one
    /// entry; before, one cancel per op.
    pub cancel_any: bool,
    /// `IORING_OP_MSG_RING` is supported (cross-core wake-ups without a syscall).
    pub msg_ring: bool,
    /// Multishot accept is supported.
    pub accept_multishot: bool,
    /// Multishot receive is supported.
    pub recv_multishot: bool,
    /// Provided buffer rings can be registered.
    pub buf_ring: bool,
    /// `IORING_OP_SEND_ZC` is supported.
    pub send_zc: bool,
    /// The cap on the kernel's worker threads for this core's ops that block and cannot be
    /// polled (`IORING_REGISTER_IOWQ_MAX_WORKERS`, unbounded class), if the kernel took it.
    pub max_io_workers: Option<u32>,
}

impl fmt::Display for RingFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |on: bool, name: &'static str| if on { Some(name) } else { None };
        let on: Vec<&str> = [
            flag(self.single_issuer, "single-issuer"),
            flag(self.defer_taskrun, "defer-taskrun"),
            flag(self.coop_taskrun, "coop-taskrun"),
            flag(self.taskrun_flag, "taskrun-flag"),
            flag(self.ext_arg, "ext-arg"),
            flag(self.nodrop, "nodrop"),
            flag(self.registered_ring_fd, "registered-ring"),
            flag(self.cancel_any, "cancel-any"),
            flag(self.msg_ring, "msg-ring"),
            flag(self.accept_multishot, "multishot-accept"),
            flag(self.recv_multishot, "multishot-recv"),
            flag(self.buf_ring, "buf-ring"),
            flag(self.send_zc, "send-zc"),
        ]
        .into_iter()
        .flatten()
        .collect();
        write!(
            f,
            "io_uring sq={} cq={} [{}]",
            self.sq_entries,
            self.cq_entries,
            on.join(" ")
        )?;
        if let Some(workers) = self.max_io_workers {
            write!(f, " io-workers<={workers}")?;
        }
        Ok(())
    }
}

/// How a ring is asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingConfig {
    pub(crate) entries: u32,
    /// The cap on the ring's unbounded io-wq workers (see [`cap_io_workers`]); 0: the kernel's.
    pub(crate) max_io_workers: u32,
    /// Completion queue size; `None` lets the kernel pick (2 x entries).
    pub(crate) cq_entries: Option<u32>,
}

struct Wanted {
    single_issuer: bool,
    defer_taskrun: bool,
    coop_taskrun: bool,
}

fn try_build(config: RingConfig, want: &Wanted) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    if want.single_issuer {
        builder.setup_single_issuer();
    }
    if want.defer_taskrun {
        builder.setup_defer_taskrun();
    }
    if want.coop_taskrun {
        builder.setup_coop_taskrun();
    }
    if want.coop_taskrun || want.defer_taskrun {
        // The kernel then flags pending task work in the SQ ring, so a turn that has nothing to
        // submit can skip io_uring_enter when the flag is clear.
        builder.setup_taskrun_flag();
    }
    if let Some(cq) = config.cq_entries {
        builder.setup_cqsize(cq);
    }
    builder.build(config.entries)
}

/// Builds a ring with as many of the wanted flags as the kernel accepts.
pub(crate) fn build(config: RingConfig) -> io::Result<(IoUring, RingFeatures)> {
    let ladder = [
        Wanted {
            single_issuer: true,
            defer_taskrun: true,
            coop_taskrun: true,
        },
        Wanted {
            single_issuer: true,
            defer_taskrun: false,
            coop_taskrun: true,
        },
        Wanted {
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: true,
        },
        Wanted {
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: false,
        },
    ];
    let mut last_err = None;
    for want in &ladder {
        match try_build(config, want) {
            Ok(mut ring) => {
                let features = describe(&mut ring, want);
                return Ok((ring, features));
            }
            // EINVAL is how the kernel says "unknown flag"; anything else is a real failure
            // (ENOMEM, EPERM from seccomp or io_uring_disabled) that a lesser flag won't fix.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("io_uring set-up failed")))
}

fn describe(ring: &mut IoUring, want: &Wanted) -> RingFeatures {
    let params = ring.params();
    let mut probe = Probe::new();
    let probed = ring.submitter().register_probe(&mut probe).is_ok();
    let supports = |op: u8| probed && probe.is_supported(op);
    // Multishot variants share their opcode with the single-shot one; they arrived in 5.19 and
    // 6.0 together with buffer rings, which arrived with IORING_OP_SOCKET (5.19).
    let kernel_519 = supports(opcode::Socket::CODE);
    RingFeatures {
        sq_entries: params.sq_entries(),
        cq_entries: params.cq_entries(),
        single_issuer: want.single_issuer,
        defer_taskrun: want.defer_taskrun,
        coop_taskrun: want.coop_taskrun,
        taskrun_flag: want.coop_taskrun || want.defer_taskrun,
        ext_arg: params.is_feature_ext_arg(),
        nodrop: params.is_feature_nodrop(),
        // Set by the driver, which owns the registration (`ring_fd`).
        registered_ring_fd: false,
        // Cancel-any came with 5.19, as did IORING_OP_SOCKET.
        cancel_any: kernel_519,
        msg_ring: supports(opcode::MsgRingData::CODE),
        accept_multishot: kernel_519,
        recv_multishot: kernel_519 && supports(opcode::SendZc::CODE),
        buf_ring: kernel_519,
        send_zc: supports(opcode::SendZc::CODE),
        max_io_workers: None,
    }
}

/// Caps the kernel threads that may serve this ring's ops that block and cannot be polled
/// (io-wq's unbounded class: a Unix-socket connect to a listener whose backlog is full waits
/// in one, for as long as the listener does not accept). Without a cap each such op in flight
/// holds a thread of its own: a proxy with a stalled Unix upstream grew one per client
/// (measured: 20 stalled connects, 20 `iou-wrk` threads). Past the cap, such ops wait in
/// io-wq's queue (a cancel still reaches them there). Bounded work (regular files) keeps the
/// kernel's limit. Returns the cap in force, or `None` if the kernel refused it (before 5.15).
pub(crate) fn cap_io_workers(ring: &IoUring, max: u32) -> Option<u32> {
    if max == 0 {
        return None;
    }
    // [bounded, unbounded]; 0 leaves a class as it is.
    let mut limits = [0, max];
    ring.submitter()
        .register_iowq_max_workers(&mut limits)
        .ok()
        .map(|()| max)
}
