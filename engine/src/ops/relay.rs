//! Relays: every byte received on one stream socket sent on another (or back on the same one),
//! by the driver itself, straight from the ring buffer each chunk arrived in. A proxy's two
//! directions, or an echo, without a task wake-up per chunk (see the driver's
//! [`relay`](crate::driver::relay) design note).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::multishot::RecvStream;
use crate::buf::ring::BufRing;
use crate::driver::op::{Found, Home};
use crate::driver::relay::{decode_failure, RelayPoll, RelayState};
use crate::driver::slab::SendTarget;
use crate::fd::SharedFd;
use crate::runtime::context;
use crate::time::Sleep;

/// The first wait, after the core's ring ran dry, before the relay's receive is re-armed.
const DRY_BACKOFF: Duration = Duration::from_micros(200);
/// The longest wait while the ring stays dry (the wait doubles until then).
const DRY_BACKOFF_MAX: Duration = Duration::from_millis(10);

/// Relays `from` to `to` (they may be the same socket: an echo): receives on `from` with a
/// multishot receive into `ring`'s buffers and sends each chunk on `to` from its buffer, until
/// `from` reaches end of stream and everything went out. The driver does it all, without
/// waking the task that awaits the [`Relay`] (see [`RecvStream::relay_to`]).
///
/// # Errors
///
/// Off a percore core. The relay's own errors come from the future.
pub fn relay(
    from: &SharedFd,
    ring: &BufRing,
    to: &SharedFd,
    max_waiting: usize,
) -> io::Result<Relay> {
    let (home, fds) = start(from, ring, to, max_waiting)?;
    Ok(Relay {
        home,
        fds: Some(fds),
        dry: None,
    })
}

impl RecvStream {
    /// Turns this receive into a relay to `to` (which may be the receive's own socket: an
    /// echo). The chunks it received that nobody took go first, and its request goes on as the
    /// relay's receive, so no byte is lost or reordered.
    ///
    /// Each chunk is sent on `to` straight from its ring buffer, by the driver, which sends
    /// the next when the last completes; the buffer goes back to the ring at the send's
    /// completion. The awaiting task is woken only when the relay ends (or the ring ran dry:
    /// its future waits a back-off, doubling from 0.2 to 10 ms, then re-arms). Past
    /// `max_waiting` chunks waiting to be sent (`to` takes bytes slower than `from` brings
    /// them) the receive pauses until half of them went, and `from`'s peer is held by TCP's
    /// flow control. One relay then holds `max_waiting` + 1 of the ring's buffers, plus what
    /// the kernel delivers before the pause's cancel lands (its receive retries of one loop
    /// turn: about 66 more were seen here with a fast sender) and the chunks an adopted
    /// receive had queued.
    ///
    /// # Errors
    ///
    /// Off the receive's core: the receive is dropped (cancelled) as usual, and with it what it
    /// had received.
    pub fn relay_to(self, to: &SharedFd, max_waiting: usize) -> io::Result<Relay> {
        if !self.op.at_home() {
            return Err(io::Error::other("a receive relayed off its core"));
        }
        let to = to.clone();
        // The receive gives up its slot inside the driver's borrow, where the relay takes it
        // over at once: off a core the closure never runs, and the receive is dropped (and
        // cancelled) as usual.
        let started = context::with_driver(move |driver| {
            let (home, data) = self.op.into_raw();
            let state = RelayState::new(
                target(&data.fd),
                target(&to),
                data.ring.clone(),
                data.ring.bgid(),
                u32::try_from(max_waiting).unwrap_or(u32::MAX),
            );
            let adopt = home.filter(|home| *home == Home::new(driver, home.key));
            // SAFETY: the relay's future keeps both sockets until it ends, or hands them to
            // the slot when dropped first; the adopted receive is on `from`, into the ring.
            let key = unsafe { driver.start_relay(adopt.map(|home| home.key), state) };
            // Dropped outside the driver's borrow (the ring's handle among them).
            (Home::new(driver, key), [data.fd.clone(), to], data)
        });
        let Some((home, fds, data)) = started else {
            return Err(context::no_runtime());
        };
        drop(data);
        Ok(Relay {
            home,
            fds: Some(fds),
            dry: None,
        })
    }
}

fn target(fd: &SharedFd) -> SendTarget {
    match fd.fixed_slot() {
        Some(slot) => SendTarget::Fixed(slot),
        None => SendTarget::Fd(fd.raw()),
    }
}

/// Starts a relay with a fresh receive on this core.
fn start(
    from: &SharedFd,
    ring: &BufRing,
    to: &SharedFd,
    max_waiting: usize,
) -> io::Result<(Home, [SharedFd; 2])> {
    let state = RelayState::new(
        target(from),
        target(to),
        ring.inner().clone(),
        ring.bgid(),
        u32::try_from(max_waiting).unwrap_or(u32::MAX),
    );
    let home = context::with_driver(|driver| {
        // SAFETY: the relay's future keeps both sockets until it ends, or hands them to the
        // slot when dropped first (`orphan_relay`).
        let key = unsafe { driver.start_relay(None, state) };
        Home::new(driver, key)
    })
    .ok_or_else(context::no_runtime)?;
    Ok((home, [from.clone(), to.clone()]))
}

/// The future of a relay: the bytes relayed when the source reached its end and all of them
/// went, or the first error.
///
/// # Errors
///
/// A receive's or a send's error (`ECONNRESET`, `EPIPE`, ...; `WriteZero` if the kernel took
/// nothing of a send); what was received and not yet sent is lost, and both sockets should be
/// closed. `ECANCELED` if the core shut down under it. The destination's refusal (a send's
/// `EPIPE`: the destination's peer closed, while the source may still be fine; or a send the
/// kernel took nothing of) is told apart by [`is_refusal`]: it reads "sending: " and the
/// kernel's error, keeps its kind, and has no `raw_os_error` of its own (the kernel's error is
/// its `source()`).
///
/// # Cancel safety
///
/// Dropping it cancels both requests: bytes received and not yet sent are lost (a prefix of a
/// chunk may have gone), so the sockets should be closed. The chunks waiting go back to the
/// ring at once; the sockets stay open, and the chunk in flight out of the ring, until the
/// kernel is done with both requests. Nothing leaks.
#[must_use = "futures do nothing unless polled"]
pub struct Relay {
    home: Home,
    /// `from` and `to`, kept until the relay ended.
    fds: Option<[SharedFd; 2]>,
    /// Set once the ring ran dry (boxed: rare, and every idle connection holds this future).
    dry: Option<Box<DryRing>>,
}

/// A relay's back-off while the core's ring is dry.
struct DryRing {
    /// Waiting for the ring to refill before re-arming; `None` between two dry spells.
    wait: Option<Sleep>,
    /// The next wait: it doubles while the ring stays dry.
    next: Duration,
    /// The relay's progress when the ring last ran dry (the wait starts over after progress).
    progress: u32,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("ended", &self.fds.is_none())
            .finish()
    }
}

impl Relay {
    /// A count that changes whenever the relay moves bytes (a chunk received or sent), for an
    /// owner that closes idle connections: the relay moved nothing between two looks that
    /// read the same count. 0 once it ended.
    pub fn progress(&self) -> u64 {
        if self.fds.is_none() {
            return 0;
        }
        let key = self.home.key;
        self.home.with(|found| match found {
            Found::Home(driver) => u64::from(driver.relay_progress(key)),
            Found::Away | Found::Gone => 0,
        })
    }
}

impl Future for Relay {
    type Output = io::Result<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = &mut *self;
        assert!(this.fds.is_some(), "a relay polled after it ended");
        let key = this.home.key;
        loop {
            if let Some(wait) = this.dry.as_mut().and_then(|dry| dry.wait.as_mut()) {
                if Pin::new(wait).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let rearmed = this.home.with(|found| match found {
                    Found::Home(driver) => {
                        driver.relay_rearm(key);
                        true
                    }
                    Found::Away => false,
                    // The poll below reads the relay as cancelled.
                    Found::Gone => true,
                });
                if let Some(dry) = &mut this.dry {
                    if !rearmed {
                        // Under a nested core nothing else wakes this task (the ring's running
                        // dry took the relay's waker): look again after another wait.
                        let mut wait = crate::time::sleep(dry.next);
                        let _ = Pin::new(&mut wait).poll(cx);
                        dry.wait = Some(wait);
                        return Poll::Pending;
                    }
                    dry.wait = None;
                }
            }
            let polled = this.home.with(|found| match found {
                Found::Home(driver) => driver.poll_relay(key, cx.waker()),
                // Under a nested core: its own core wakes the task later.
                Found::Away => RelayPoll::Pending,
                // Its core ended; the shutdown cancelled both requests.
                Found::Gone => RelayPoll::Done(Err(-libc::ECANCELED)),
            });
            match polled {
                RelayPoll::Pending => return Poll::Pending,
                RelayPoll::Dry(progress) => {
                    let dry = this.dry.get_or_insert_with(|| {
                        Box::new(DryRing {
                            wait: None,
                            next: DRY_BACKOFF,
                            progress,
                        })
                    });
                    if progress != dry.progress {
                        dry.next = DRY_BACKOFF;
                        dry.progress = progress;
                    }
                    dry.wait = Some(crate::time::sleep(dry.next));
                    dry.next = (dry.next * 2).min(DRY_BACKOFF_MAX);
                }
                RelayPoll::Done(outcome) => {
                    // The sockets go here, outside the driver's borrow.
                    this.fds = None;
                    return Poll::Ready(outcome.map_err(relay_error));
                }
            }
        }
    }
}

/// Whether a relay's error is its destination's refusal: a send failed with `EPIPE` (the
/// destination's peer closed; a reset after its end reads so too) or the kernel took nothing,
/// and the source may still be fine. A proxy's other direction, which reads from that
/// destination, may then still have bytes to deliver (an answer sent before the close).
/// Other relay errors end the connection: the source's (its receive failed), a reset with no
/// end before it, a local error, or a stop (`ECANCELED`).
pub fn is_refusal(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<Refused>().is_some())
}

/// The payload of a relay's refusal error (see [`is_refusal`]).
#[derive(Debug)]
struct Refused(io::Error);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sending: {}", self.0)
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A relay's error from its failure code.
fn relay_error(code: i32) -> io::Error {
    match decode_failure(code) {
        (true, 0) => io::Error::new(
            io::ErrorKind::WriteZero,
            Refused(io::Error::new(
                io::ErrorKind::WriteZero,
                "the kernel took none of a relayed chunk",
            )),
        ),
        (true, errno) => {
            let cause = io::Error::from_raw_os_error(errno);
            io::Error::new(cause.kind(), Refused(cause))
        }
        (false, errno) => io::Error::from_raw_os_error(errno),
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let Some(fds) = self.fds.take() else {
            return;
        };
        let key = self.home.key;
        let back = self.home.with(|found| match found {
            Found::Home(driver) => driver.orphan_relay(key, fds),
            // Its core lives, further up this thread's stack: the requests may still be in
            // flight there, so the sockets stay open (leaked).
            Found::Away => {
                std::mem::forget(fds);
                None
            }
            // Its core ended, and its shutdown settled both requests.
            Found::Gone => Some(fds),
        });
        // Outside the driver's borrow: dropping an fd may unregister it.
        drop(back);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_failure_is_told_apart_and_keeps_its_kind() {
        use crate::driver::relay::encode_send_failure;
        let refused = relay_error(encode_send_failure(libc::EPIPE));
        assert_eq!(refused.raw_os_error(), None);
        let cause = std::error::Error::source(&refused)
            .and_then(|c| c.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        assert_eq!(cause, Some(libc::EPIPE));
        assert!(is_refusal(&refused));
        assert_eq!(refused.kind(), io::ErrorKind::BrokenPipe);
        assert!(refused.to_string().starts_with("sending: "), "{refused}");
        let nothing_taken = relay_error(encode_send_failure(0));
        assert!(is_refusal(&nothing_taken));
        assert_eq!(nothing_taken.kind(), io::ErrorKind::WriteZero);
        let reset = relay_error(-libc::ECONNRESET);
        assert!(!is_refusal(&reset));
        assert_eq!(reset.raw_os_error(), Some(libc::ECONNRESET));
        let stopped = relay_error(-libc::ECANCELED);
        assert!(!is_refusal(&stopped));
        assert!(!is_refusal(&io::Error::other("unrelated")));
    }
}
