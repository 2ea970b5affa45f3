//! The UDP service: a handler per datagram on this core's sharded socket.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::rc::Rc;

use percore_engine::sync::Semaphore;
use percore_engine::{first, shutdown, First};

use crate::udp::{datagram_ring, Datagram, UdpSocket};

/// What a UDP service counted on this core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpServiceStats {
    /// Datagrams received (truncated ones included).
    pub received: u64,
    /// Datagrams longer than the service's maximum, dropped (never handed on cut).
    pub truncated: u64,
    /// Handlers that returned `Ok`.
    pub completed: u64,
    /// Handlers that returned an error.
    pub failed: u64,
    /// Handlers that panicked.
    pub panicked: u64,
    /// Receive errors (the receive is re-armed after each).
    pub receive_errors: u64,
}

/// A per-datagram UDP service; see the module docs.
#[derive(Debug, Clone)]
pub struct UdpService {
    max_datagram: usize,
    buffers: u16,
    max_in_flight: usize,
}

impl Default for UdpService {
    fn default() -> Self {
        UdpService {
            max_datagram: 2048,
            buffers: 512,
            max_in_flight: 256,
        }
    }
}

/// Counts, and reports the first of each kind of trouble on stderr (the counts carry the rest).
struct Counters {
    stats: Cell<UdpServiceStats>,
    name: String,
}

impl Counters {
    /// Adds one to the counter `field` picks; returns its new value.
    fn count(&self, field: impl FnOnce(&mut UdpServiceStats) -> &mut u64) -> u64 {
        let mut stats = self.stats.get();
        let counter = field(&mut stats);
        *counter += 1;
        let now = *counter;
        self.stats.set(stats);
        now
    }

    /// Counts a trouble and reports the first of its kind.
    fn trouble(
        &self,
        field: impl FnOnce(&mut UdpServiceStats) -> &mut u64,
        what: impl FnOnce() -> String,
    ) {
        if self.count(field) == 1 {
            crate::log::line(format_args!(
                "percore-net: {}: {} (further ones are only counted)",
                self.name,
                what()
            ));
        }
    }
}

impl UdpService {
    /// A service with the defaults: datagrams up to 2048 bytes, 512 receive buffers and at
    /// most 256 handlers at a time per core.
    pub fn new() -> UdpService {
        UdpService::default()
    }

    /// The longest datagram handled (longer ones are counted as truncated and dropped).
    pub fn max_datagram(mut self, bytes: usize) -> Self {
        self.max_datagram = bytes.max(1);
        self
    }

    /// Receive buffers per core (each `max_datagram` plus a small header).
    pub fn buffers(mut self, n: u16) -> Self {
        self.buffers = n.max(1);
        self
    }

    /// Handlers running at once per core at most; at the cap no datagram is taken until one
    /// ends. Keep it below [`UdpService::buffers`]: each running handler holds one.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Serves `socket` (bind it with [`UdpSocket::bind_sharded`] on every core) until a
    /// graceful shutdown is requested and every running handler ended. `handler` gets the
    /// socket (to answer on) and each datagram; a handler's error or panic is counted and
    /// reported, and ends only its datagram.
    ///
    /// # Errors
    ///
    /// Setting up the receive ring (off a percore core, or a kernel without buffer rings).
    /// Receive errors are counted and the receive re-armed, never returned.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels every running handler; datagrams received but not handled
    /// are dropped (their buffers go back to the ring).
    pub async fn serve<H, Fut>(&self, socket: UdpSocket, handler: H) -> io::Result<UdpServiceStats>
    where
        H: Fn(Rc<UdpSocket>, Datagram) -> Fut + 'static,
        Fut: Future<Output = io::Result<()>> + 'static,
    {
        let ring = datagram_ring(self.max_datagram, self.buffers)?;
        let mut datagrams = socket.datagrams(&ring)?;
        let counters = Rc::new(Counters {
            stats: Cell::new(UdpServiceStats::default()),
            name: format!("udp {}", socket.local_addr()),
        });
        let socket = Rc::new(socket);
        let limit = Rc::new(Semaphore::new(self.max_in_flight));
        let handler = Rc::new(handler);
        let c2 = counters.clone();
        let result = percore_engine::scope(|s| async move {
            loop {
                if !super::room_or_shutdown(&limit).await? {
                    break;
                }
                let next = Box::pin(datagrams.next());
                let datagram = match first(shutdown::requested(), next).await {
                    First::A((), _) => {
                        limit.add_permits(1);
                        break;
                    }
                    First::B(datagram, _) => datagram,
                };
                let datagram = match datagram {
                    Ok(d) => d,
                    Err(e) => {
                        limit.add_permits(1);
                        c2.trouble(|s| &mut s.receive_errors, || format!("receive failed: {e}"));
                        // Never spin on a persistent error.
                        percore_engine::time::sleep(std::time::Duration::from_millis(1)).await;
                        continue;
                    }
                };
                c2.count(|s| &mut s.received);
                if datagram.truncated {
                    limit.add_permits(1);
                    c2.trouble(
                        |s| &mut s.truncated,
                        || {
                            format!(
                                "dropped a {}-byte datagram from {:?}: longer than the maximum",
                                datagram.len, datagram.source
                            )
                        },
                    );
                    continue;
                }
                let (handler, counters, limit, socket) =
                    (handler.clone(), c2.clone(), limit.clone(), socket.clone());
                let source = datagram.source;
                s.spawn_isolated(handler(socket, datagram), move |outcome| {
                    limit.add_permits(1);
                    match outcome {
                        Ok(Ok(())) => {
                            counters.count(|s| &mut s.completed);
                        }
                        Ok(Err(e)) => counters.trouble(
                            |s| &mut s.failed,
                            || format!("handler for a datagram from {source:?} failed: {e}"),
                        ),
                        Err(join) => counters.trouble(
                            |s| &mut s.panicked,
                            || format!("handler for a datagram from {source:?} failed: {join}"),
                        ),
                    }
                    Ok::<(), io::Error>(())
                });
            }
            Ok::<(), io::Error>(())
        })
        .await;
        super::outcome(result, counters.stats.get())
    }
}
