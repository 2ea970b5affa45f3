//! The floor of the TCP echo benchmark: a runtime-free, single-threaded io_uring echo server
//! written straight on the `io-uring` crate.
//!
//! One multishot accept on the listener; per connection one multishot receive into a provided
//! buffer ring (registered with `register_buf_ring_with_flags`); each received chunk is sent
//! straight from its ring buffer, and the buffer goes back to the ring when that send
//! completes. Submissions are batched: one `submit_and_wait(1)` per loop turn.
//!
//! Run it pinned (`taskset -c 0 echo_raw_uring --listen 127.0.0.1:7000`); see
//! `benches/echo/run.sh`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use clap::Parser;
use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
}

/// Buffers in the provided ring (a power of two, at most 32768).
const RING_ENTRIES: u16 = 4096;
/// Bytes per provided buffer.
const BUF_SIZE: usize = 4096;
/// The buffer group id of the ring.
const BGID: u16 = 0;
/// Submission queue entries.
const SQ_ENTRIES: u32 = 4096;

// user_data layout: tag (8 bits) | generation (8 bits) | fd (32 bits) | buffer id (16 bits).
const TAG_ACCEPT: u64 = 1;
const TAG_RECV: u64 = 2;
const TAG_SEND: u64 = 3;

fn user_data(tag: u64, gen: u8, fd: i32, bid: u16) -> u64 {
    (tag << 56) | (u64::from(gen) << 48) | (u64::from(fd as u32) << 16) | u64::from(bid)
}

fn split_user_data(ud: u64) -> (u64, u8, i32, u16) {
    (
        ud >> 56,
        (ud >> 48) as u8,
        ((ud >> 16) & 0xffff_ffff) as u32 as i32,
        ud as u16,
    )
}

/// The provided buffer ring: the ring of descriptors shared with the kernel and the buffers.
struct BufRing {
    entries: *mut BufRingEntry,
    bufs: *mut u8,
    /// Our copy of the tail, published to the kernel by [`BufRing::publish`].
    tail: u16,
}

impl BufRing {
    fn new() -> BufRing {
        let ring_layout = std::alloc::Layout::from_size_align(
            RING_ENTRIES as usize * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .expect("ring layout");
        let bufs_layout =
            std::alloc::Layout::from_size_align(RING_ENTRIES as usize * BUF_SIZE, 4096)
                .expect("bufs layout");
        // SAFETY: both layouts have a non-zero size; the allocations live as long as the
        // process (the ring is never unregistered), so they are never freed.
        let (entries, bufs) = unsafe {
            (
                std::alloc::alloc_zeroed(ring_layout).cast::<BufRingEntry>(),
                std::alloc::alloc_zeroed(bufs_layout),
            )
        };
        assert!(!entries.is_null() && !bufs.is_null(), "out of memory");
        let mut ring = BufRing {
            entries,
            bufs,
            tail: 0,
        };
        for bid in 0..RING_ENTRIES {
            ring.push(bid);
        }
        ring
    }

    /// Queues buffer `bid` for the kernel (visible after [`BufRing::publish`]).
    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (RING_ENTRIES - 1)) as usize;
        // SAFETY: `idx < RING_ENTRIES`, inside the descriptor allocation; the kernel only reads
        // descriptors below the published tail, and this slot is past it.
        let entry = unsafe { &mut *self.entries.add(idx) };
        // SAFETY: `bid < RING_ENTRIES`, so the offset stays inside the buffer allocation.
        let addr = unsafe { self.bufs.add(bid as usize * BUF_SIZE) };
        entry.set_addr(addr as u64);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    fn publish(&self) {
        // SAFETY: `entries` is the page-aligned base of the ring; the tail field overlays the
        // first entry's `resv` and is only written here (the kernel reads it), so viewing it
        // as an atomic for a release store is sound.
        let tail = unsafe { &*BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The received bytes of buffer `bid`.
    fn buf_ptr(&self, bid: u16) -> *const u8 {
        // SAFETY: `bid < RING_ENTRIES` (the kernel only hands out ids we pushed).
        unsafe { self.bufs.add(bid as usize * BUF_SIZE) }
    }
}

/// Pushes `sqe`, submitting first if the submission queue is full.
fn push(ring: &mut IoUring, sqe: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every buffer an SQE points at (ring buffers) outlives the operation: a ring
        // buffer is only recycled when the send reading it completed.
        if unsafe { ring.submission().push(sqe) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

/// Per-buffer state of an in-flight send: where in the buffer it is and how much is left.
#[derive(Clone, Copy, Default)]
struct SendState {
    off: u32,
    len: u32,
}

fn send_sqe(ring: &BufRing, fd: i32, gen: u8, bid: u16, st: SendState) -> squeue::Entry {
    // SAFETY: `off < len <= BUF_SIZE`, inside buffer `bid`.
    let ptr = unsafe { ring.buf_ptr(bid).add(st.off as usize) };
    opcode::Send::new(Fd(fd), ptr, st.len - st.off)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(TAG_SEND, gen, fd, bid))
}

fn recv_sqe(fd: i32, gen: u8) -> squeue::Entry {
    opcode::RecvMulti::new(Fd(fd), BGID)
        .build()
        .user_data(user_data(TAG_RECV, gen, fd, 0))
}

fn close(fd: i32) {
    // SAFETY: `fd` is a connection this loop accepted and owns; it is closed once (its
    // generation is bumped, so late completions for it are ignored).
    unsafe { libc::close(fd) };
}

fn set_nodelay(fd: i32) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to a c_int of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

fn build_ring() -> io::Result<IoUring> {
    // DEFER_TASKRUN + SINGLE_ISSUER (kernel 6.1+): completions are processed only when we
    // wait, no task-work interrupts. Fall back to a plain ring on older kernels.
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(SQ_ENTRIES * 4)
        .build(SQ_ENTRIES)
        .or_else(|_| {
            IoUring::builder()
                .setup_cqsize(SQ_ENTRIES * 4)
                .build(SQ_ENTRIES)
        })
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)?;
    let lfd = listener.as_raw_fd();
    let mut ring = build_ring()?;
    let mut bufs = BufRing::new();
    bufs.publish();
    // SAFETY: the descriptor ring is page-aligned, holds RING_ENTRIES entries and lives for
    // the rest of the process.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.entries as u64, RING_ENTRIES, BGID, 0)?
    };
    eprintln!("echo_raw_uring listening on {}", listener.local_addr()?);

    // Connection generations, indexed by fd: a completion whose generation differs belongs to
    // a connection closed since (its fd number may have been reused).
    let mut gens: Vec<u8> = vec![0; 1024];
    let mut sends: Vec<SendState> = vec![SendState::default(); RING_ENTRIES as usize];
    let accept = opcode::AcceptMulti::new(Fd(lfd))
        .build()
        .user_data(user_data(TAG_ACCEPT, 0, lfd, 0));
    push(&mut ring, &accept)?;
    let mut cqes: Vec<cqueue::Entry> = Vec::with_capacity(SQ_ENTRIES as usize * 4);
    loop {
        bufs.publish();
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        cqes.clear();
        cqes.extend(ring.completion());
        for cqe in &cqes {
            let (tag, gen, fd, bid) = split_user_data(cqe.user_data());
            let res = cqe.result();
            let flags = cqe.flags();
            match tag {
                TAG_ACCEPT => {
                    if res >= 0 {
                        let cfd = res;
                        if cfd as usize >= gens.len() {
                            gens.resize(cfd as usize * 2, 0);
                        }
                        set_nodelay(cfd);
                        push(&mut ring, &recv_sqe(cfd, gens[cfd as usize]))?;
                    } else {
                        eprintln!("accept: {}", io::Error::from_raw_os_error(-res));
                    }
                    if !cqueue::more(flags) {
                        push(&mut ring, &accept)?;
                    }
                }
                TAG_RECV => {
                    let live = gens[fd as usize] == gen;
                    if res > 0 {
                        let bid = cqueue::buffer_select(flags).expect("recv without buffer");
                        if live {
                            let st = SendState {
                                off: 0,
                                len: res as u32,
                            };
                            sends[bid as usize] = st;
                            push(&mut ring, &send_sqe(&bufs, fd, gen, bid, st))?;
                        } else {
                            bufs.push(bid);
                        }
                        if live && !cqueue::more(flags) {
                            push(&mut ring, &recv_sqe(fd, gen))?;
                        }
                    } else if res == -libc::ENOBUFS {
                        // The ring ran dry: buffers come back as sends complete; re-arm.
                        if live {
                            push(&mut ring, &recv_sqe(fd, gen))?;
                        }
                    } else if live && !cqueue::more(flags) {
                        // End of stream (0) or an error: the connection is done.
                        gens[fd as usize] = gen.wrapping_add(1);
                        close(fd);
                    }
                }
                TAG_SEND => {
                    let st = sends[bid as usize];
                    let live = gens[fd as usize] == gen;
                    if res > 0 && st.off + (res as u32) < st.len && live {
                        // Short send: send the rest from the same buffer.
                        let st = SendState {
                            off: st.off + res as u32,
                            len: st.len,
                        };
                        sends[bid as usize] = st;
                        push(&mut ring, &send_sqe(&bufs, fd, gen, bid, st))?;
                    } else {
                        bufs.push(bid);
                    }
                }
                _ => unreachable!("unknown user_data {:#x}", cqe.user_data()),
            }
        }
    }
}
