//! The demultiplexer: receive loops on the core's socket, each handing datagrams to the table.
//!
//! # Idle sweep
//!
//! One timer per core, not one per conversation, and no clock read per datagram: every eighth
//! of the idle timeout (at least 1 ms, at most 1 s) the sweep reads the clock once and looks at
//! each conversation's arrival counter, and signals the end of those whose counter has not
//! moved since a look at least `idle` ago. Time is counted from the first look that saw the
//! counter's latest value, which is after the datagram that moved it, so a conversation ends
//! between `idle` and `idle` plus two sweep periods after its peer's last datagram (a late tick
//! delays the verdict, never hastens it), and a conversation's task polls no timer.
//!
//! # One receive, in queue order
//!
//! The loop reads one multishot receive (see the `receive` seam): one op, re-armed whenever the
//! kernel ends it, that completes datagrams in the socket's queue order. Each datagram is
//! delivered as soon as it is taken, with no await in between, so datagrams reach inboxes in
//! that order. Several single receives in flight on one socket were tried before: the kernel
//! does not complete them in queue order under load (the ordering test caught it).
//!
//! The loop never waits for a handler: delivering copies the payload into the inbox (or drops
//! it, counted) and gives the ring buffer back at once.

use std::convert::Infallible;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use percore_engine::time::{interval, Instant};
use percore_engine::{first, shutdown, First};

use super::table::Table;
use crate::conversation::Shared;
use crate::receive::DatagramSource;

/// Starts the task of a conversation the table just admitted.
pub(crate) type Starter = Box<dyn Fn(Rc<Shared>)>;

/// Consecutive receive errors after which a loop gives up with the last one.
const MAX_RECEIVE_ERRORS_IN_A_ROW: u32 = 100;

/// Receives until a graceful shutdown is requested, then closes every conversation's input.
///
/// # Errors
///
/// The socket's error after 100 receive errors in a row (each is logged and counted).
///
/// # Cancel safety
///
/// Dropping it loses no datagram: the receive is cancel-safe, and delivery does not await.
pub(crate) async fn receive_loop(
    mut source: DatagramSource,
    table: Rc<Table>,
    start: Starter,
) -> io::Result<()> {
    let mut errors_in_a_row = 0u32;
    let mut ring_dry = 0u64;
    loop {
        let received = {
            let next = pin!(source.next());
            match first(pin!(shutdown::requested()), next).await {
                First::A((), _) => break,
                First::B(received, _) => received,
            }
        };
        if source.ring_dry() != ring_dry {
            table.counters.add_ring_dry(source.ring_dry() - ring_dry);
            ring_dry = source.ring_dry();
        }
        match received {
            Ok(datagram) => {
                errors_in_a_row = 0;
                // The ring buffer goes back when `datagram` drops, right after delivery.
                if let Some(shared) = table.deliver(&datagram) {
                    start(shared);
                }
            }
            Err(e) => {
                table.counters.receive_error();
                percore_net::log::line(format_args!(
                    "percore-udp-conversation: {}: receive failed: {e}",
                    table.local_addr()
                ));
                errors_in_a_row += 1;
                if errors_in_a_row >= MAX_RECEIVE_ERRORS_IN_A_ROW {
                    return Err(e);
                }
            }
        }
    }
    table.close_all();
    Ok(())
}

/// How often the idle sweep looks for an idle timeout: an eighth of it, within 1 ms ..= 1 s.
pub(crate) fn sweep_period(idle: Duration) -> Duration {
    (idle / 8).clamp(Duration::from_millis(1), Duration::from_secs(1))
}

/// Ends quiet conversations: every [`sweep_period`], those whose peer sent nothing for `idle`.
/// Never returns; it is dropped with the receive loop.
pub(crate) async fn sweep_idle(table: Rc<Table>, idle: Duration) -> Infallible {
    let mut tick = interval(sweep_period(idle));
    loop {
        tick.tick().await;
        table.sweep_idle(idle, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_looks_every_eighth_of_the_timeout_within_bounds() {
        let ms = Duration::from_millis;
        for (idle, period) in [
            (ms(150), ms(18) + Duration::from_micros(750)),
            (Duration::from_secs(60), Duration::from_secs(1)),
            (ms(2), ms(1)),
            (Duration::ZERO, ms(1)),
        ] {
            assert_eq!(sweep_period(idle), period, "{idle:?}");
        }
    }
}
