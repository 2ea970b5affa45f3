//! The byte-stream driver (TCP echo, HTTP): requests written in batches up to the pipeline
//! window, responses parsed from the chunks the multishot receive lends (copied only when one
//! straddles two chunks).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use percore_engine::ops::Send;
use percore_engine::time::{sleep_until, turn_instant};
use percore_engine::{first, First};
use percore_net::tcp::TcpStream;

use super::{Backoff, ConnCtx, Ended, InFlight};
use crate::protocol::{Parsed, ProtocolError};
use crate::record::ErrorKind;
use crate::schedule::{Next, Schedule};

/// Runs one connection slot until its schedule is over, reconnecting when it is lost.
///
/// # Cancel safety
///
/// Dropped at an await point, the socket is closed and a send in flight is cancelled (its
/// buffer kept until the kernel lets go); the requests in flight are neither answered nor
/// failed, and what was unsent is not counted: dropping it is for tearing a shard down.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold `schedule` twice
pub(crate) fn drive_stream(ctx: Rc<ConnCtx>, mut schedule: Schedule) -> impl Future<Output = ()> {
    // Not an `async fn`: one keeps each by-value argument in its future beside the binding
    // its body moves it to (per connection, for the whole run).
    async move {
        let mut backoff = Backoff::new();
        let mut opened_before = false;
        let mut down_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if ctx.stopped(&mut schedule)
                || schedule.peek(now) == Next::Done
                || ctx.end.is_some_and(|end| now >= end)
            {
                break;
            }
            let stream = match TcpStream::connect_timeout(ctx.addr, ctx.timeout).await {
                Ok(stream) => stream,
                Err(e) => {
                    let now = Instant::now();
                    ctx.recorder.borrow_mut().connect_failed(&e, now);
                    if ctx.gives_up(*down_since.get_or_insert(now), now) {
                        break;
                    }
                    backoff.wait(&ctx).await;
                    continue;
                }
            };
            if opened_before {
                ctx.recorder.borrow_mut().reconnected(Instant::now());
            }
            opened_before = true;
            down_since = None;
            backoff.reset();
            if run_connection(&ctx, stream, &mut schedule).await == Ended::Finished {
                break;
            }
        }
        let unsent = schedule.unsent(Instant::now());
        ctx.recorder.borrow_mut().unsent(unsent);
    }
}

/// One connection's life.
///
/// # Cancel safety
///
/// As [`drive_stream`]'s: dropped, the stream closes and its requests go unrecorded.
///
/// Its one timer stands for the oldest request's expiry (and, with room in the window, the
/// next request's intended time, whichever is first). It is moved only to make it earlier: a
/// timer that is due later than it is armed fires early, is looked at, and re-armed, so a
/// closed loop sets it about once per request timeout rather than once per request.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold `stream` twice
fn run_connection<'a>(
    ctx: &'a ConnCtx,
    mut stream: TcpStream,
    schedule: &'a mut Schedule,
) -> impl Future<Output = Ended> + 'a {
    async move {
        // A load connection carries many requests: its sends name the socket by a registered-file
        // slot (no fd lookup and reference count per send). Without a slot, they name the fd.
        stream.fd().register();
        let mut session = ctx.protocol.session();
        // Grown as a deep window fills (it is at most `--pipeline` long), not reserved up front.
        let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(ctx.pipeline.min(16));
        let mut out: Vec<u8> = Vec::new();
        // Bytes of a response that straddles chunks.
        let mut pending: Vec<u8> = Vec::new();
        // The requests' bytes on their way out: a send of `out`'s last contents. The next waits
        // for it to complete (it is normally long over by then), watched beside the receive and
        // the timer, never awaited alone.
        let mut sending: Option<Send<Vec<u8>>> = None;
        let mut now = Instant::now();
        let mut timer = sleep_until(now + ctx.timeout);
        loop {
            // Fill the window with the requests that are due. `now` is the time of the last event
            // (the completion just parsed, or a fresh reading after any other wait).
            ctx.stopped(schedule);
            while inflight.len() < ctx.pipeline {
                let Some(intended) = schedule.take_due(now) else {
                    break;
                };
                session.write_request(&mut out);
                inflight.push_back(ctx.send(intended, now));
            }
            if !out.is_empty() {
                // One send at a time keeps the bytes in order. The previous one is normally over
                // by now (its answer came): its result and buffer are taken without suspending.
                // If it is not (a server that reads slowly, or not until it is read from), the new
                // requests wait in `out` and go when it completes: the wait below watches it.
                // Waiting for it alone would stop reading, and a server blocked writing answers
                // nobody reads stops reading too: both would wait for good, timeouts unseen.
                let mut spare = Vec::new();
                if let Some(send) = sending.as_mut() {
                    let noop = &mut Context::from_waker(Waker::noop());
                    if let Poll::Ready(done) = Pin::new(send).poll(noop) {
                        sending = None;
                        match settle(done) {
                            Ok(buf) => spare = buf,
                            Err(kind) => {
                                ctx.fail_all(&mut inflight, kind);
                                return Ended::Lost;
                            }
                        }
                    }
                }
                if sending.is_none() {
                    let mut send = stream.send_whole(std::mem::replace(&mut out, spare));
                    // Submitted without a wake-up for its completion: the task wakes for the
                    // answer (or the deadline) and looks at the send's result then.
                    let unwatched =
                        Pin::new(&mut send).poll(&mut Context::from_waker(Waker::noop()));
                    match unwatched {
                        Poll::Pending => sending = Some(send),
                        Poll::Ready(done) => match settle(done) {
                            Ok(buf) => out = buf,
                            Err(kind) => {
                                ctx.fail_all(&mut inflight, kind);
                                return Ended::Lost;
                            }
                        },
                    }
                }
            }
            let Some(oldest) = inflight.front().copied() else {
                now = Instant::now();
                match schedule.peek(now) {
                    Next::Done => return Ended::Finished,
                    Next::Now => continue,
                    Next::At(at) => {
                        // Idle until the next request is due, but listening: bytes that come
                        // now answer nothing, and a close now loses nothing.
                        let heard = {
                            let recv = std::pin::pin!(stream.recv_chunk());
                            let pause = std::pin::pin!(ctx.pause_until(at));
                            match first(recv, pause).await {
                                First::A(heard, _) => Some(heard),
                                First::B((), _) => None,
                            }
                        };
                        let lost = match heard {
                            None => {
                                now = Instant::now();
                                continue;
                            }
                            // Filler between responses: dropped.
                            Some(Ok(Some(chunk))) if session.filler(&chunk) => {
                                now = Instant::now();
                                continue;
                            }
                            Some(Ok(Some(_))) => Some(ErrorKind::Protocol(UNASKED)),
                            Some(Ok(None)) => None,
                            Some(Err(e)) => Some(ErrorKind::Io(e.kind())),
                        };
                        if let Some(kind) = lost {
                            ctx.fail_all(&mut inflight, kind);
                        }
                        // The next connection is opened when there is a request for it: a server
                        // that closes (or talks out of turn on) every connection it accepts gets
                        // one connection per request, not a connect loop.
                        drop(stream);
                        ctx.pause_until(at).await;
                        return Ended::Lost;
                    }
                }
            };
            // Wait for bytes until the oldest request times out or, with room in the window, the
            // next one is due.
            let expires = oldest.sent + ctx.timeout;
            let mut deadline = expires;
            if inflight.len() < ctx.pipeline {
                if let Next::At(at) = schedule.peek(now) {
                    deadline = deadline.min(at);
                }
            }
            if deadline < timer.deadline() {
                timer.reset(deadline);
            }
            // One wait for bytes (or the stream's end or error) and the timer, and for the send in
            // flight when requests wait behind it (its completion lets them go).
            let mut recv = std::pin::pin!(stream.recv_chunk());
            let mut blocking = sending.as_mut().filter(|_| !out.is_empty());
            let woke = std::future::poll_fn(|cx| {
                if let Poll::Ready(received) = recv.as_mut().poll(cx) {
                    return Poll::Ready(Woke::Received(received));
                }
                if Pin::new(&mut timer).poll(cx).is_ready() {
                    return Poll::Ready(Woke::Timer);
                }
                match blocking.as_mut().map(|send| Pin::new(send).poll(cx)) {
                    Some(Poll::Ready(done)) => Poll::Ready(Woke::Sent(done)),
                    _ => Poll::Pending,
                }
            })
            .await;
            let woke = match woke {
                Woke::Received(received) => Some(received),
                Woke::Timer => None,
                Woke::Sent(done) => {
                    sending = None;
                    match settle(done) {
                        Ok(buf) => {
                            // `out` goes out at the top of the loop, in this buffer's stead.
                            drop(buf);
                            now = Instant::now();
                            continue;
                        }
                        Err(kind) => {
                            ctx.fail_all(&mut inflight, kind);
                            return Ended::Lost;
                        }
                    }
                }
            };
            let received = match woke {
                Some(received) => received,
                None => {
                    now = Instant::now();
                    if now >= expires {
                        ctx.fail_all(&mut inflight, ErrorKind::Timeout);
                        return Ended::Lost;
                    }
                    // Early (re-armed lazily) or the next request is due: arm it for the expiry;
                    // the top of the loop moves it earlier if the schedule needs that.
                    timer.reset(expires);
                    continue;
                }
            };
            let chunk = match received {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    // The server closed: a close-delimited response may end here.
                    if !inflight.is_empty() {
                        match session.parse_at_eof(&pending) {
                            Ok(Parsed::Complete(resp)) => {
                                if let Some(req) = inflight.pop_front() {
                                    ctx.answered(req, resp.error_status, Instant::now());
                                }
                            }
                            Ok(Parsed::Incomplete) => {}
                            Err(p) => {
                                ctx.fail_all(&mut inflight, ErrorKind::Protocol(p));
                            }
                        }
                    }
                    ctx.fail_all(&mut inflight, ErrorKind::Closed);
                    return match schedule.peek(Instant::now()) {
                        Next::Done => Ended::Finished,
                        _ => Ended::Lost,
                    };
                }
                Err(e) => {
                    ctx.fail_all(&mut inflight, ErrorKind::Io(e.kind()));
                    return Ended::Lost;
                }
            };
            // The turn's clock: every response reaped in this turn gets the same completion time
            // (taken after the ring returned them), one clock read per turn instead of per response.
            now = turn_instant();
            let parsed = if pending.is_empty() {
                let outcome = parse_responses(ctx, &mut *session, &chunk, &mut inflight, now);
                if let Ok((used, _)) = outcome {
                    pending.extend_from_slice(&chunk[used..]);
                }
                outcome
            } else {
                pending.extend_from_slice(&chunk);
                let outcome = parse_responses(ctx, &mut *session, &pending, &mut inflight, now);
                if let Ok((used, _)) = outcome {
                    pending.drain(..used);
                }
                outcome
            };
            drop(chunk);
            match parsed {
                Err(p) => {
                    ctx.fail_all(&mut inflight, ErrorKind::Protocol(p));
                    return Ended::Lost;
                }
                Ok((_, true)) => {
                    // The server said it closes after that response.
                    ctx.fail_all(&mut inflight, ErrorKind::Closed);
                    return Ended::Lost;
                }
                Ok((_, false)) if pending.len() > ctx.max_response => {
                    ctx.fail_all(
                        &mut inflight,
                        ErrorKind::Protocol(ProtocolError("response larger than --max-response")),
                    );
                    return Ended::Lost;
                }
                Ok((_, false)) => {}
            }
        }
    }
}

/// What ended a connection's wait.
enum Woke<R, S> {
    /// The receive: bytes, the stream's end, or its error.
    Received(R),
    /// The timer: the oldest request's expiry, or the next request's time.
    Timer,
    /// The send in flight, with requests waiting behind it.
    Sent(S),
}

/// Bytes from the server beyond the answers to every request in flight. They are caught when
/// they come with the last answer or while the connection waits for its next request; bytes
/// that come after the next request went out cannot be told from its answer.
const UNASKED: ProtocolError = ProtocolError("bytes received with no request outstanding");

/// A whole-buffer send's outcome: its buffer, emptied for reuse, or why the connection failed.
fn settle((res, mut buf): (std::io::Result<usize>, Vec<u8>)) -> Result<Vec<u8>, ErrorKind> {
    match res {
        Ok(n) if n == buf.len() => {
            buf.clear();
            Ok(buf)
        }
        // `MSG_WAITALL` stops short only when the connection failed mid-way.
        Ok(_) => Err(ErrorKind::Io(std::io::ErrorKind::WriteZero)),
        Err(e) => Err(ErrorKind::Io(e.kind())),
    }
}

/// Parses every complete response at the front of `data`, answering requests in order.
/// Returns the bytes used and whether the server announced it closes.
fn parse_responses(
    ctx: &ConnCtx,
    session: &mut dyn crate::protocol::Session,
    data: &[u8],
    inflight: &mut VecDeque<InFlight>,
    now: Instant,
) -> Result<(usize, bool), ProtocolError> {
    let mut used = 0;
    while used < data.len() {
        if inflight.is_empty() {
            if session.filler(&data[used..]) {
                // Dropped: nothing is kept for it (a flood of it costs nothing).
                return Ok((data.len(), false));
            }
            return Err(UNASKED);
        }
        match session.parse(&data[used..])? {
            Parsed::Incomplete => break,
            Parsed::Complete(resp) => {
                used += resp.len;
                if let Some(req) = inflight.pop_front() {
                    ctx.answered(req, resp.error_status, now);
                }
                if resp.close {
                    return Ok((used, true));
                }
            }
        }
    }
    Ok((used, false))
}
