//! percore-loadtest: the load generator behind `percore load` and `percore bench`.
//!
//! # Design
//!
//! A run is planned once ([`LoadConfig`]) and executed by one *shard* per chosen CPU, each a
//! percore core with its share of the connections and of the rate. Every connection owns its
//! schedule: in open loop (the default) each request has an intended send time
//! fixed in advance (`t0 + offset + n / rate_per_connection`, or Poisson gaps), and latency is
//! measured from that time, so a stalled server shows up as the latency its users would have
//! seen (coordinated omission corrected, wrk2's method). The service time (completion minus
//! actual send) is kept beside it. A connection that falls behind sends the overdue requests as
//! soon as its pipeline window allows, never more than `--pipeline` at once, and the delay
//! between intended and actual send is reported as *schedule lag*. Nothing is sent after a
//! duration run's end: what was due and not sent by then is counted unsent. A `--requests`
//! quota is shared by a shard's connections.
//!
//! Each shard records into per-second interval histograms (HdrHistogram, nanoseconds), rolled
//! over by completion time and shipped to the aggregator thread, which merges the cores,
//! prints the live progress line, writes the interval log ([`hlog`]) as it goes and keeps the
//! totals and the per-second [timeline](result::TimelineEntry). Memory therefore stays flat
//! however long the run.
//!
//! Protocols are plug-ins ([`protocol::Protocol`]): a request writer and an incremental
//! response parser per connection, over a byte stream (TCP echo, HTTP/1.1) or datagrams (UDP
//! echo). Every response length is bounded; a malformed response is a counted error.
//!
//! Accounting is exact: every request counted as sent ends as exactly one response or one
//! error (a timeout, the server closing or resetting, a protocol violation, an error status),
//! including the requests still in flight when the run ends, which are waited for up to the
//! request timeout. Requests that were due but never sent (the target was unreachable) are
//! reported as `unsent`: every measured intended time of a duration run, and every request of
//! a `--requests` quota, is either sent or unsent. A connection that breaks with no measured
//! request outstanding is counted among the `connection_errors` (a reset, or bytes the server
//! sent beyond its answers, caught when they come with the last answer or while the
//! connection waits for its next request: after the next request went out they cannot be told
//! from its answer); the server closing an idle connection is not an error, and the next
//! request goes out on a new one.
//!
//! A run raises the process's soft limit on open files towards the hard one when its
//! connections would not fit under it ([`percore_engine::raise_fd_limit`]).

#![forbid(unsafe_code)]

mod aggregate;
pub mod config;
mod conn;
pub mod hlog;
pub mod plot;
mod preflight;
pub mod protocol;
mod record;
pub mod result;
mod run;
mod schedule;
mod shard;
pub mod target;

pub use config::{Arrival, LoadConfig, Mode, Stop};
pub use record::ErrorKind;
pub use result::{RunResult, Verdict};
pub use run::{run, LoadError, Sinks};
pub use target::Target;
