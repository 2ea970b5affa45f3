//! The datagram driver (UDP echo): one request in flight per connected socket; a late answer
//! to a timed-out request is recognised and ignored; a datagram larger than the receive buffer
//! (`--max-response`) is a protocol error, never silently cut.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use percore_engine::time::timeout_at;
use percore_net::udp::UdpSocket;

use super::{Backoff, ConnCtx};
use crate::protocol::{DatagramCheck, ProtocolError};
use crate::record::ErrorKind;
use crate::schedule::{Next, Schedule};

/// Largest datagram a receive buffer holds (the UDP maximum).
const MAX_DATAGRAM: usize = 65_536;

/// Runs one UDP "connection" (a connected socket) until its schedule is over. A socket that
/// cannot be opened (out of file descriptors, say) is retried with the doubling back-off,
/// each failure counted; when the target stays unreachable past the end (or the request
/// timeout), the requests it leaves are counted as unsent.
///
/// # Cancel safety
///
/// Dropped at an await point, the request in flight is neither answered nor failed (the
/// recorder, which goes with the shard, never sees it) and the socket is closed.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold `schedule` twice
pub(crate) fn drive_datagram(
    ctx: Rc<ConnCtx>,
    mut schedule: Schedule,
) -> impl std::future::Future<Output = ()> {
    // Not an `async fn`: see `drive_stream`.
    async move {
        let mut backoff = Backoff::new();
        let mut down_since: Option<Instant> = None;
        loop {
            let socket = match open(&ctx) {
                Ok(socket) => socket,
                Err(e) => {
                    let now = Instant::now();
                    ctx.recorder.borrow_mut().connect_failed(&e, now);
                    if ctx.stopped(&mut schedule)
                        || ctx.gives_up(*down_since.get_or_insert(now), now)
                    {
                        break;
                    }
                    backoff.wait(&ctx).await;
                    continue;
                }
            };
            down_since = None;
            // A socket opened only after the end (others' sockets freed as they finished) sends
            // nothing: what it was due to send is unsent, as for a stream that reconnects too
            // late.
            if ctx.end.is_some_and(|end| Instant::now() >= end) {
                break;
            }
            match exchange(&ctx, &socket, &mut schedule, &mut backoff).await {
                Exchanged::Over => break,
                Exchanged::TimedOut => continue,
            }
        }
        let unsent = schedule.unsent(Instant::now());
        ctx.recorder.borrow_mut().unsent(unsent);
    }
}

/// How [`exchange`] ended.
enum Exchanged {
    /// The schedule is over, or the target stayed unreachable: the connection stops.
    Over,
    /// A request timed out and the protocol cannot tell a late answer to it from the next
    /// request's: the socket is replaced (a late answer then finds it closed).
    TimedOut,
}

/// Sends the schedule's requests on `socket`, one at a time, until the schedule is over or
/// the target has been unreachable (every request refused) for longer than the request
/// timeout, or past the run's end.
async fn exchange(
    ctx: &ConnCtx,
    socket: &UdpSocket,
    schedule: &mut Schedule,
    backoff: &mut Backoff,
) -> Exchanged {
    let mut session = ctx.protocol.session();
    let buf_len = ctx.max_response.min(MAX_DATAGRAM) + 1;
    let mut out: Vec<u8> = Vec::new();
    let mut inbuf: Vec<u8> = Vec::with_capacity(buf_len);
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        ctx.stopped(schedule);
        let Some(intended) = schedule.take_due(now) else {
            match schedule.peek(now) {
                Next::Done => return Exchanged::Over,
                Next::Now => continue,
                Next::At(at) => {
                    ctx.pause_until(at).await;
                    continue;
                }
            }
        };
        session.write_request(&mut out);
        let req = ctx.send(intended, now);
        let (res, buf) = socket.send(std::mem::take(&mut out)).await;
        out = buf;
        out.clear();
        let mut failure = res.err().map(|e| ErrorKind::Io(e.kind()));
        let deadline = req.sent + ctx.timeout;
        while failure.is_none() {
            inbuf.clear();
            let received = timeout_at(deadline, socket.recv(std::mem::take(&mut inbuf))).await;
            let (res, buf) = match received {
                Ok(pair) => pair,
                Err(_elapsed) => {
                    // The receive and its buffer went with the timed-out future.
                    inbuf = Vec::with_capacity(buf_len);
                    failure = Some(ErrorKind::Timeout);
                    break;
                }
            };
            inbuf = buf;
            let meta = match res {
                Ok(meta) => meta,
                Err(e) => {
                    failure = Some(ErrorKind::Io(e.kind()));
                    break;
                }
            };
            if meta.truncated || meta.len >= buf_len {
                failure = Some(ErrorKind::Protocol(ProtocolError(
                    "datagram larger than --max-response",
                )));
                break;
            }
            match session.check_datagram(&inbuf[..meta.len]) {
                Ok(DatagramCheck::Answer) => {
                    ctx.answered(req, None, Instant::now());
                    backoff.reset();
                    unreachable_since = None;
                    break;
                }
                Ok(DatagramCheck::Stale) => continue,
                Err(p) => failure = Some(ErrorKind::Protocol(p)),
            }
        }
        let Some(kind) = failure else {
            continue;
        };
        let mut inflight = std::collections::VecDeque::from([req]);
        ctx.fail_all(&mut inflight, kind);
        match kind {
            ErrorKind::Io(_) => {
                // Refused (nothing listens) or unreachable: do not spin on it, and stop once
                // it has lasted as long as a connection is given to come back.
                let now = Instant::now();
                if ctx.gives_up(*unreachable_since.get_or_insert(now), now) {
                    return Exchanged::Over;
                }
                backoff.wait(ctx).await;
            }
            ErrorKind::Timeout if !ctx.protocol.tells_late_answers() => {
                return Exchanged::TimedOut;
            }
            _ => {}
        }
    }
}

/// A socket bound to an ephemeral port of the target's family and connected to the target, so
/// datagrams from anyone else are filtered by the kernel.
fn open(ctx: &ConnCtx) -> std::io::Result<UdpSocket> {
    let local = match ctx.addr {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(ctx.addr)?;
    Ok(socket)
}
