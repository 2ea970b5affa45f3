//! HdrHistogram interval logs (`.hlog`, format 1.3): written as a run goes, read back and
//! merged across runs.
//!
//! # Writing
//!
//! Each interval is written as two lines: the latency from the intended send time (untagged,
//! what HdrHistogram's tools process by default) and the service time (`Tag=service`). Values
//! are nanoseconds; histograms are encoded V2 + DEFLATE, base64 (the form HdrHistogram's Java
//! `HistogramLogProcessor` reads); the `Interval_Max` column is in milliseconds, as the Java
//! writer puts it. Timestamps are seconds relative to `BaseTime`, which equals `StartTime`;
//! every time is written exactly, with at least three decimals (`1.000`, `0.000412`).
//!
//! # Reading
//!
//! A log is untrusted input: [`read`] and [`merge`](fn@merge) answer a bad one with an error
//! naming the line, never a panic, and a line costs a bounded amount of memory whatever it
//! claims.
//! - Lines are parsed in `parse`, times exactly (in nanoseconds). An `Interval_Length` over a day,
//!   or a time past the year 9999, is refused; a length of 0 (older percore wrote a run of a
//!   fraction of a millisecond so) is read as 1 ms.
//! - As by HdrHistogram's Java reader, interval timestamps are relative to `BaseTime` when the
//!   log gives one; else the first interval decides: relative to `StartTime` if it lies more
//!   than a year before it, absolute otherwise.
//! - A histogram must be V2 + DEFLATE. hdrhistogram's decoder sizes its buffers from the
//!   lengths the bytes claim (a 289-byte log made it take 266 MB), so the bytes are checked
//!   first, in `decode`: the compressed length against the bytes there; then, inflating only
//!   the V2 header, its value range and significant digits must make at most
//!   [`MAX_COUNTERS`] counters (5 digits up to 2^63 would make 6 million) and its payload
//!   length no more than those counters can take; the payload is inflated that far, no
//!   further, and must all be there; every count in it must land inside the array. Only then
//!   does hdrhistogram decode it. A line thus costs at most a few times 32 MiB, for as long as
//!   it is decoded.
//!
//! # Merging
//!
//! [`merge`](fn@merge) adds the histograms of several logs (several generator machines), never
//! averaging percentiles, on one grid of absolute time:
//! - *Cell length.* An input's step is the median gap between its consecutive interval
//!   starts (1 s for percore's logs). The cell length is the largest step of the inputs, or
//!   the longest interval of a log of one interval if that is longer (such a log has no
//!   step: a short run is not refused for it); every step must divide it a whole number of
//!   times, within 1 % (for writers whose intervals jitter). So 0.5 s and 1 s logs merge into
//!   1 s cells, 1 s and 5 s logs into 5 s cells; 0.3 s and 1 s logs are refused.
//! - *Origin.* The cells start at the earliest interval start of all inputs, so runs started
//!   at about the same moment are in phase with the grid wherever the wall-clock second falls.
//! - *Placement.* An interval goes whole into the cell that holds its midpoint: the cell that
//!   covers the most of it. Runs started 20 ms apart across a second boundary pair their
//!   seconds k; the two halves of a second of a 0.5 s log share a cell; a run's short last
//!   interval joins the cell it lies in. (Runs out of phase by exactly half a cell are a
//!   tie: the later cell takes it.)
//! - *Output.* A cell's histograms of one tag are added (into one of 3 significant digits, as
//!   percore records) and written as one line starting at the origin plus k cell lengths
//!   (`BaseTime` and `StartTime` are the origin); its length is the cell length, cut short
//!   where its latest interval ends if that is earlier (a run's last, partial second stays
//!   partial). Lines are in time order, untagged first.
//!
//! The merge holds the inputs' text and one cell's histograms at a time, never every decoded
//! histogram, and builds the merged log in memory: the caller writes it only once it is whole.
//!
//! # Layout
//!
//! - `write`: [`HlogWriter`] and the exact time format.
//! - `parse`: a log's lines and their times, and [`read`].
//! - `decode`: a histogram's bytes checked, then decoded.
//! - `merge`: [`merge`](fn@merge) and its grid.

mod decode;
mod merge;
mod parse;
mod write;

pub use merge::{merge, MergeInput, MergeSummary, Merged};
pub use parse::{read, LoggedInterval};
pub use write::HlogWriter;

/// The tag of service-time lines.
pub const SERVICE_TAG: &str = "service";

/// The most counters a histogram read from a log may have (32 MiB of `u64`): 4 significant
/// digits over any range HdrHistogram's Java version has (up to 2^63 − 1) fit, and 5 over
/// three days of nanoseconds; 5 up to 2^63 (6 million) do not.
pub const MAX_COUNTERS: u64 = 1 << 22;

const NS_PER_S: u128 = 1_000_000_000;
/// The longest `Interval_Length` (and step between intervals) read.
const MAX_LENGTH_NS: u128 = 86_400 * NS_PER_S;
/// The latest time read: 9999-12-31T23:59:59Z.
const MAX_TIME_NS: u128 = 253_402_300_799 * NS_PER_S;
