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
//! A log is untrusted input: [`read`] and [`merge`] answer a bad one with an error naming the
//! line, never a panic, and a line costs a bounded amount of memory whatever it claims.
//! - Lines are parsed here, times exactly (in nanoseconds). An `Interval_Length` over a day,
//!   or a time past the year 9999, is refused; a length of 0 (older percore wrote a run of a
//!   fraction of a millisecond so) is read as 1 ms.
//! - As by HdrHistogram's Java reader, interval timestamps are relative to `BaseTime` when the
//!   log gives one; else the first interval decides: relative to `StartTime` if it lies more
//!   than a year before it, absolute otherwise.
//! - A histogram must be V2 + DEFLATE. hdrhistogram's decoder sizes its buffers from the
//!   lengths the bytes claim (a 289-byte log made it take 266 MB), so the bytes are checked
//!   first: the compressed length against the bytes there; then, inflating only the V2
//!   header, its value range and significant digits must make at most [`MAX_COUNTERS`]
//!   counters (5 digits up to 2^63 would make 6 million) and its payload length no more than
//!   those counters can take; the payload is inflated that far, no further, and must all be
//!   there; every count in it must land inside the array. Only then does hdrhistogram decode
//!   it. A line thus costs at most a few times 32 MiB, for as long as it is decoded.
//!
//! # Merging
//!
//! [`merge`] adds the histograms of several logs (several generator machines), never
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

use std::io::{self, Read as _, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use flate2::read::ZlibDecoder;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

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

/// Cookies of HdrHistogram's V2 encoding, plain and compressed (the base `| 0x10`).
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// The V2 header: cookie, payload length, normalizing offset, significant digits (u32 each),
/// lowest and highest trackable values (u64), integer-to-double ratio (f64).
const V2_HEADER: usize = 40;

/// Writes an interval log.
pub struct HlogWriter<'a> {
    out: &'a mut dyn Write,
    serializer: V2DeflateSerializer,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for HlogWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlogWriter").finish_non_exhaustive()
    }
}

impl<'a> HlogWriter<'a> {
    /// Writes the header: format version, start and base time (`start`), the legend.
    ///
    /// # Errors
    ///
    /// Writing to `out` failed.
    pub fn begin(out: &'a mut dyn Write, start: SystemTime, comment: &str) -> io::Result<Self> {
        let secs = Seconds(
            start
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        writeln!(out, "#[{comment}]")?;
        writeln!(out, "#[Histogram log format version 1.3]")?;
        writeln!(
            out,
            "#[StartTime: {secs} (seconds since epoch), {}]",
            utc_date(start)
        )?;
        writeln!(out, "#[BaseTime: {secs} (seconds since epoch)]")?;
        writeln!(
            out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        Ok(HlogWriter {
            out,
            serializer: V2DeflateSerializer::new(),
            bytes: Vec::new(),
        })
    }

    /// Writes one interval starting `start` after the base time: latency (untagged) and
    /// service time (tagged).
    ///
    /// # Errors
    ///
    /// Writing or encoding failed.
    pub fn interval(
        &mut self,
        start: Duration,
        length: Duration,
        latency: &Histogram<u64>,
        service: &Histogram<u64>,
    ) -> io::Result<()> {
        self.line(None, start, length, latency)?;
        self.line(Some(SERVICE_TAG), start, length, service)
    }

    fn line(
        &mut self,
        tag: Option<&str>,
        start: Duration,
        length: Duration,
        h: &Histogram<u64>,
    ) -> io::Result<()> {
        self.bytes.clear();
        self.serializer
            .serialize(h, &mut self.bytes)
            .map_err(|e| io::Error::other(format!("encoding a histogram: {e}")))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&self.bytes);
        if let Some(tag) = tag {
            write!(self.out, "Tag={tag},")?;
        }
        writeln!(
            self.out,
            "{},{},{:.3},{encoded}",
            Seconds(start.as_nanos()),
            Seconds(length.as_nanos()),
            h.max() as f64 / 1e6
        )
    }

    /// Flushes the output.
    ///
    /// # Errors
    ///
    /// The output's error.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Nanoseconds shown as seconds, exactly, with at least three decimals (`1.000`, `0.0004`).
struct Seconds(u128);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fraction = format!("{:09}", self.0 % NS_PER_S);
        let digits = fraction.trim_end_matches('0').len().max(3);
        write!(f, "{}.{}", self.0 / NS_PER_S, &fraction[..digits])
    }
}

/// A `Duration` of `ns` nanoseconds (at most [`MAX_TIME_NS`] plus a little, here).
fn duration(ns: u128) -> Duration {
    let secs = u64::try_from(ns / NS_PER_S).unwrap_or(u64::MAX);
    Duration::new(secs, (ns % NS_PER_S) as u32)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time (UTC).
fn utc_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One interval read from a log, on absolute time.
#[derive(Debug)]
pub struct LoggedInterval {
    /// The tag (`None` for latency lines).
    pub tag: Option<String>,
    /// Absolute start, seconds since the epoch.
    pub start_unix_s: f64,
    /// Length in seconds.
    pub length_s: f64,
    /// The histogram.
    pub histogram: Histogram<u64>,
}

/// Reads every interval of a log, on absolute time. Every histogram is decoded and kept:
/// memory grows with the log (each histogram is bounded, see the [module](self) notes).
///
/// # Errors
///
/// A line that is not a valid interval log line, or a histogram that does not decode: the
/// message names the line (`line 7: ...`).
pub fn read(log: &[u8]) -> Result<Vec<LoggedInterval>, String> {
    parse(log)?
        .into_iter()
        .map(|line| {
            let histogram =
                decode(line.histogram).map_err(|e| format!("line {}: {e}", line.number))?;
            Ok(LoggedInterval {
                tag: line.tag.map(str::to_string),
                start_unix_s: seconds_f64(line.start),
                length_s: seconds_f64(line.length),
                histogram,
            })
        })
        .collect()
}

fn seconds_f64(ns: u128) -> f64 {
    (ns / NS_PER_S) as f64 + (ns % NS_PER_S) as f64 / 1e9
}

/// One interval line of a log, its histogram still encoded.
#[derive(Debug)]
struct Line<'a> {
    /// Its line number, from 1.
    number: usize,
    tag: Option<&'a str>,
    /// Absolute start, nanoseconds since the epoch.
    start: u128,
    /// Nanoseconds, at least 1 ms if the log said 0.
    length: u128,
    /// Base64 of the V2 + DEFLATE histogram.
    histogram: &'a str,
}

/// Parses a log's lines (see the [module](self) notes); errors say `line N: ...`.
fn parse(log: &[u8]) -> Result<Vec<Line<'_>>, String> {
    let mut start_time: Option<u128> = None;
    let mut base_time: Option<u128> = None;
    let mut lines = Vec::new();
    for (i, raw) in log.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        let at = |e: String| format!("line {number}: {e}");
        let text = std::str::from_utf8(raw)
            .map_err(|_| at("expected a line of text, got bytes that are not UTF-8".into()))?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() || text.starts_with("\"StartTimestamp\"") {
            continue;
        }
        if let Some(comment) = text.strip_prefix('#') {
            if let Some(rest) = comment.strip_prefix("[StartTime: ") {
                start_time = Some(header_time(rest, "StartTime").map_err(at)?);
            } else if let Some(rest) = comment.strip_prefix("[BaseTime: ") {
                base_time = Some(header_time(rest, "BaseTime").map_err(at)?);
            }
            continue;
        }
        let (tag, rest) = match text.strip_prefix("Tag=") {
            Some(tagged) => match tagged.split_once(',') {
                Some((tag, rest)) => (Some(tag), rest),
                None => {
                    return Err(at(format!(
                        "expected `Tag=name,` then an interval, got {}",
                        shorten(text)
                    )))
                }
            },
            None => (None, text),
        };
        let mut fields = rest.split(',');
        let (Some(start), Some(length), Some(max), Some(histogram), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(at(format!(
                "expected `[Tag=name,]StartTimestamp,Interval_Length,Interval_Max,Interval_Compressed_Histogram`, got {}",
                shorten(text)
            )));
        };
        let ts = time(start, "a StartTimestamp").map_err(at)?;
        let length = match seconds(length) {
            Some(0) => NS_PER_S / 1000,
            Some(ns) if ns <= MAX_LENGTH_NS => ns,
            _ => {
                return Err(at(format!(
                    "expected an Interval_Length in seconds, at most a day (86400), got {}",
                    shorten(length)
                )))
            }
        };
        if max.parse::<f64>().is_err() {
            return Err(at(format!(
                "expected an Interval_Max in milliseconds, got {}",
                shorten(max)
            )));
        }
        // HdrHistogram's Java reader: an interval before any StartTime sets it; the first
        // interval without a BaseTime decides it.
        let start_time = *start_time.get_or_insert(ts);
        let base =
            *base_time.get_or_insert(if ts.saturating_add(365 * 86_400 * NS_PER_S) < start_time {
                start_time
            } else {
                0
            });
        let start = base + ts;
        if start > MAX_TIME_NS {
            return Err(at(format!(
                "expected an interval before the year 10000, got one starting {} s after 1970",
                Seconds(start)
            )));
        }
        lines.push(Line {
            number,
            tag,
            start,
            length,
            histogram,
        });
    }
    Ok(lines)
}

/// `text` for an error message, cut if long.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// The time at the start of a `#[StartTime: ` or `#[BaseTime: ` line's rest.
fn header_time(rest: &str, name: &str) -> Result<u128, String> {
    let end = rest.find([' ', ']']).unwrap_or(rest.len());
    time(&rest[..end], name)
}

/// Seconds since the epoch (or since a base), at most the year 9999.
fn time(text: &str, what: &str) -> Result<u128, String> {
    match seconds(text) {
        Some(ns) if ns <= MAX_TIME_NS => Ok(ns),
        Some(_) => Err(format!(
            "expected {what} before the year 10000, got {} s",
            shorten(text)
        )),
        None => Err(format!(
            "expected {what} in seconds such as 12.345, got {}",
            shorten(text)
        )),
    }
}

/// Seconds written as a plain decimal (`12`, `12.345`) in nanoseconds, exactly (digits past
/// the ninth decimal dropped); `None` if it is not one or is past 10^29 ns.
fn seconds(text: &str) -> Option<u128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let mut ns: u128 = 0;
    for b in whole.bytes() {
        ns = ns.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
    }
    let mut ns = ns.checked_mul(NS_PER_S)?;
    let mut scale = NS_PER_S / 10;
    for b in fraction.bytes().take(9) {
        ns += u128::from(b - b'0') * scale;
        scale /= 10;
    }
    Some(ns)
}

/// Decodes one histogram of a log (base64 of V2 + DEFLATE) within bounded memory: what is
/// inflated and allocated is bounded by the counters its header may claim.
fn decode(encoded: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("expected a base64 histogram: {e}"))?;
    let v2 = inflate(&bytes)?;
    Deserializer::new()
        .deserialize(&mut v2.as_slice())
        .map_err(|e| format!("bad histogram: {e}"))
}

/// The V2 histogram inside a compressed one (cookie, length, zlib stream), inflated as far
/// as its checked header says, and checked (see [`check_v2_header`], [`scan_counts`]).
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let cookie = be_u32(bytes, 0);
    if cookie != Some(V2_COMPRESSED_COOKIE) {
        return Err(match cookie {
            Some(c) => format!(
                "expected a V2 + DEFLATE histogram (cookie {V2_COMPRESSED_COOKIE:#010x}), got cookie {c:#010x}"
            ),
            None => format!("expected a V2 + DEFLATE histogram, got {} bytes", bytes.len()),
        });
    }
    let there = bytes.len().saturating_sub(8);
    let claimed = be_u32(bytes, 4).map_or(usize::MAX, |n| n as usize);
    let Some(zlib) = bytes.get(8..8usize.saturating_add(claimed)) else {
        return Err(format!(
            "the histogram claims {claimed} compressed bytes, {there} are there"
        ));
    };
    let mut inflater = ZlibDecoder::new(zlib);
    let mut v2 = vec![0; V2_HEADER];
    let mut got = 0;
    while got < V2_HEADER {
        match inflater.read(&mut v2[got..]) {
            Ok(0) => {
                return Err(format!(
                    "the histogram is {got} bytes, shorter than its {V2_HEADER}-byte header"
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("bad compressed histogram: {e}")),
        }
    }
    let (counters, payload) = check_v2_header(&v2)?;
    inflater
        .take(payload)
        .read_to_end(&mut v2)
        .map_err(|e| format!("bad compressed histogram: {e}"))?;
    let there = v2.len() - V2_HEADER;
    if (there as u64) < payload {
        return Err(format!(
            "the histogram claims {payload} bytes of counts, {there} are there"
        ));
    }
    scan_counts(&v2[V2_HEADER..], counters)?;
    Ok(v2)
}

/// Checks what hdrhistogram's decoder would trust in a V2 header: the cookie, the counter
/// array's size (at most [`MAX_COUNTERS`]), the payload length against what that many
/// counters take. The number of counters, and the payload length.
fn check_v2_header(v2: &[u8]) -> Result<(u64, u64), String> {
    let header = (
        be_u32(v2, 0),
        be_u32(v2, 4),
        be_u32(v2, 12),
        be_u64(v2, 16),
        be_u64(v2, 24),
    );
    let (Some(cookie), Some(payload), Some(digits), Some(low), Some(high)) = header else {
        return Err(format!(
            "the histogram is {} bytes, shorter than its {V2_HEADER}-byte header",
            v2.len()
        ));
    };
    if cookie != V2_COOKIE {
        return Err(format!(
            "expected a V2 histogram (cookie {V2_COOKIE:#010x}) inside the compressed one, got cookie {cookie:#010x}"
        ));
    }
    if digits > 5 || low == 0 || high < low.saturating_mul(2) || high > i64::MAX as u64 {
        return Err(format!(
            "expected 0 to 5 significant digits and a value range within 1..2^63 (highest at least twice the lowest), got {digits} digits, {low}..{high}"
        ));
    }
    let Some(counters) = counters(low, high, digits).filter(|&n| n <= MAX_COUNTERS) else {
        return Err(format!(
            "a histogram of {low}..{high} at {digits} significant digits has more than the {MAX_COUNTERS} counters taken"
        ));
    };
    // A count, or a run of empty counters, takes at most 9 bytes.
    let payload = u64::from(payload);
    if payload > 9 * counters {
        return Err(format!(
            "the histogram claims {payload} bytes of counts, more than its {counters} counters take"
        ));
    }
    Ok((counters, payload))
}

/// The number of counters hdrhistogram gives a histogram of `low..=high` at `digits`
/// significant digits (as its `new_with_bounds`); `None` if it refuses them.
fn counters(low: u64, high: u64, digits: u32) -> Option<u64> {
    // Unit resolution up to 2 × 10^digits: a power-of-two sub-bucket count covering it.
    let largest = 2 * 10u32.checked_pow(digits)?;
    let sub_bucket_magnitude = (largest - 1).ilog2() + 1;
    let unit_magnitude = low.checked_ilog2()?;
    if unit_magnitude + sub_bucket_magnitude > 63 {
        return None;
    }
    let mut smallest_untrackable = 1u64 << (unit_magnitude + sub_bucket_magnitude);
    let mut buckets = 1u64;
    while smallest_untrackable <= high {
        if smallest_untrackable > u64::MAX / 2 {
            buckets += 1;
            break;
        }
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    Some((buckets + 1) << (sub_bucket_magnitude - 1))
}

/// Walks a V2 payload's counts (zig-zag LEB128, at most 9 bytes; a negative number is a run
/// of empty counters) and checks each lands among `counters`.
fn scan_counts(mut payload: &[u8], counters: u64) -> Result<(), String> {
    let mut index = 0u64;
    while !payload.is_empty() {
        let (value, used) = varint(payload).ok_or("the histogram's counts end inside a number")?;
        payload = payload.get(used..).unwrap_or_default();
        let n = ((value >> 1) as i64) ^ -((value & 1) as i64);
        if n < 0 {
            let zeros = n.unsigned_abs();
            if zeros > counters {
                return Err(format!(
                    "the histogram skips {zeros} counters, more than its {counters}"
                ));
            }
            index = index.saturating_add(zeros);
        } else {
            if n > 0 && index >= counters {
                return Err(format!(
                    "the histogram has counts past its {counters} counters"
                ));
            }
            index += 1;
        }
    }
    Ok(())
}

/// HdrHistogram's LEB128: 7 bits a byte, low first, the ninth byte whole; the value and the
/// bytes it took, `None` if `bytes` end inside it.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(9) {
        if i == 8 {
            return Some((value | u64::from(b) << 56, 9));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// One log to [`merge`]: its text, and the name its errors give it (its path).
#[derive(Debug, Clone, Copy)]
pub struct MergeInput<'a> {
    /// Named in errors: `NAME line 7: ...`.
    pub name: &'a str,
    /// The log's bytes.
    pub log: &'a [u8],
}

/// A merged log and what the merge did.
#[derive(Debug)]
pub struct Merged {
    /// The merged log, whole.
    pub log: Vec<u8>,
    /// What went in and out.
    pub summary: MergeSummary,
}

/// What [`merge`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeSummary {
    /// Intervals read from all inputs.
    pub intervals_in: usize,
    /// Intervals written.
    pub intervals_out: usize,
    /// Values recorded in the untagged (latency) histograms, all inputs.
    pub latency_count: u64,
    /// The cells' length (see the [module](self) notes).
    pub cell: Duration,
}

/// Merges logs on one grid of absolute time (the rule is in the [module](self) notes): the
/// histograms of a cell and a tag are added.
///
/// # Errors
///
/// An input that does not read (`NAME line N: ...`), has no intervals, or whose step does
/// not divide the others'; a histogram that does not decode or add. Nothing is written then.
pub fn merge(inputs: &[MergeInput<'_>]) -> Result<Merged, String> {
    let mut parsed = Vec::with_capacity(inputs.len());
    for input in inputs {
        let lines = parse(input.log).map_err(|e| format!("{} {e}", input.name))?;
        if lines.is_empty() {
            return Err(format!("no intervals in {}", input.name));
        }
        parsed.push(lines);
    }
    let grid = Grid::of(inputs, &parsed)?;
    // (cell, tag, input, line): sorted by cell and tag, inputs and lines in order within.
    let mut placed: Vec<(u128, Option<&str>, usize, usize)> = Vec::new();
    for (input, lines) in parsed.iter().enumerate() {
        for (i, line) in lines.iter().enumerate() {
            placed.push((grid.cell(line), line.tag, input, i));
        }
    }
    placed.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));

    let mut log = Vec::new();
    let origin = UNIX_EPOCH
        .checked_add(duration(grid.origin))
        .ok_or("the merged log starts past what this system's clock holds")?;
    let mut writer = HlogWriter::begin(&mut log, origin, "percore load merge")
        .map_err(|e| format!("writing the merged log: {e}"))?;
    let mut summary = MergeSummary {
        intervals_in: placed.len(),
        intervals_out: 0,
        latency_count: 0,
        cell: duration(grid.length),
    };
    for group in placed.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let (cell, tag) = (group[0].0, group[0].1);
        let cell_start = grid.origin + cell * grid.length;
        let mut end = cell_start;
        let mut sum = crate::record::new_histogram();
        for &(_, _, input, i) in group {
            let line = &parsed[input][i];
            let at = |e: String| format!("{} line {}: {e}", inputs[input].name, line.number);
            let h = decode(line.histogram).map_err(at)?;
            if tag.is_none() {
                summary.latency_count = summary.latency_count.saturating_add(h.len());
            }
            sum.add(&h)
                .map_err(|e| at(format!("adding its histogram: {e}")))?;
            end = end.max(line.start + line.length);
        }
        let length = (end - cell_start).min(grid.length);
        writer
            .line(tag, duration(cell * grid.length), duration(length), &sum)
            .map_err(|e| format!("writing the merged log: {e}"))?;
        summary.intervals_out += 1;
    }
    drop(writer);
    Ok(Merged { log, summary })
}

/// The cells of a merge: `origin + k × length` for k = 0, 1, ...
#[derive(Debug)]
struct Grid {
    origin: u128,
    length: u128,
}

impl Grid {
    fn of(inputs: &[MergeInput<'_>], parsed: &[Vec<Line<'_>>]) -> Result<Grid, String> {
        let mut steps = Vec::new();
        // The cell length, and the input it comes from.
        let mut length = (0, "");
        for (input, lines) in inputs.iter().zip(parsed) {
            match step(lines) {
                Some(step) if step > MAX_LENGTH_NS => {
                    return Err(format!(
                        "{}: expected intervals at most a day apart, got them {} s apart",
                        input.name,
                        Seconds(step)
                    ))
                }
                Some(step) => {
                    steps.push((step, input.name));
                    length = length.max((step, input.name));
                }
                None => {
                    let longest = lines.iter().map(|l| l.length).max().unwrap_or(1);
                    length = length.max((longest, input.name));
                }
            }
        }
        let (length, longest_name) = length;
        for (step, name) in steps {
            let times = (length + step / 2) / step;
            if (times * step).abs_diff(length) * 100 > length {
                return Err(format!(
                    "{name}: its intervals are {} s apart, which does not divide the {} s of {longest_name}; expected interval lengths that divide one another (such as 0.5 s, 1 s and 5 s)",
                    Seconds(step),
                    Seconds(length)
                ));
            }
        }
        let origin = parsed.iter().flatten().map(|l| l.start).min().unwrap_or(0);
        Ok(Grid {
            origin,
            length: length.max(1),
        })
    }

    /// The cell holding `line`'s midpoint.
    fn cell(&self, line: &Line<'_>) -> u128 {
        (2 * (line.start - self.origin) + line.length) / (2 * self.length)
    }
}

/// The median gap between a log's distinct interval starts (the upper one of two).
fn step(lines: &[Line<'_>]) -> Option<u128> {
    let mut starts: Vec<u128> = lines.iter().map(|l| l.start).collect();
    starts.sort_unstable();
    starts.dedup();
    let mut gaps: Vec<u128> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::V2Serializer;

    const T: u64 = 1_700_000_000;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = crate::record::new_histogram();
        for v in values {
            h.record(*v).unwrap();
        }
        h
    }

    fn log(start: SystemTime, seconds: &[&[u64]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = HlogWriter::begin(&mut out, start, "test").unwrap();
        for (i, values) in seconds.iter().enumerate() {
            let h = histogram(values);
            w.interval(
                Duration::from_secs(i as u64),
                Duration::from_secs(1),
                &h,
                &h,
            )
            .unwrap();
        }
        out
    }

    /// A log based `base_ms` after `T` whose intervals are `(start_ms, length_ms, count)`.
    fn log_ms(base_ms: u64, intervals: &[(u64, u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        let base = UNIX_EPOCH + Duration::from_secs(T) + Duration::from_millis(base_ms);
        let mut w = HlogWriter::begin(&mut out, base, "test").unwrap();
        for &(start, length, count) in intervals {
            let mut h = histogram(&[]);
            h.record_n(1000, count).unwrap();
            w.interval(
                Duration::from_millis(start),
                Duration::from_millis(length),
                &h,
                &h,
            )
            .unwrap();
        }
        out
    }

    fn merge_logs(logs: &[&[u8]]) -> Result<Merged, String> {
        let names: Vec<String> = (1..=logs.len()).map(|n| format!("log{n}")).collect();
        let inputs: Vec<_> = logs
            .iter()
            .zip(&names)
            .map(|(log, name)| MergeInput { name, log })
            .collect();
        merge(&inputs)
    }

    /// The untagged intervals of a merge: (start ms after `T`, length ms, count).
    fn cells(logs: &[&[u8]]) -> Vec<(u64, u64, u64)> {
        let merged = merge_logs(logs).unwrap();
        read(&merged.log)
            .unwrap()
            .iter()
            .filter(|i| i.tag.is_none())
            .map(|i| {
                (
                    ((i.start_unix_s - T as f64) * 1e3).round() as u64,
                    (i.length_s * 1e3).round() as u64,
                    i.histogram.len(),
                )
            })
            .collect()
    }

    /// `(start_ms, length_ms, count)` for `counts.len()` intervals of `length_ms`.
    fn even(length_ms: u64, counts: &[u64]) -> Vec<(u64, u64, u64)> {
        let at = |i: usize| i as u64 * length_ms;
        counts
            .iter()
            .enumerate()
            .map(|(i, &c)| (at(i), length_ms, c))
            .collect()
    }

    #[test]
    fn writes_the_header_the_java_reader_expects_and_reads_back() {
        let start = UNIX_EPOCH + Duration::from_secs(T);
        let text = log(start, &[&[1000, 2000], &[3_000_000]]);
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(s.contains("#[Histogram log format version 1.3]"));
        assert!(
            s.contains("#[StartTime: 1700000000.000 (seconds since epoch), 2023-11-14T22:13:20Z]")
        );
        assert!(s.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""));
        assert!(s.contains("\n1.000,1.000,3.000,"), "{s}");
        let intervals = read(&text).unwrap();
        assert_eq!(intervals.len(), 4);
        assert_eq!(intervals[0].tag, None);
        assert_eq!(intervals[1].tag.as_deref(), Some(SERVICE_TAG));
        assert_eq!(intervals[2].start_unix_s, 1_700_000_001.0);
        assert_eq!(intervals[2].histogram.len(), 1);
    }

    /// A run of a fraction of a millisecond, started at a time with nanoseconds: its length
    /// and start are written to the nanosecond (`{:.3}` wrote the length as `0.000`).
    #[test]
    fn times_are_written_exactly() {
        let start = UNIX_EPOCH + Duration::new(T, 123_456_789);
        let mut out = Vec::new();
        let mut w = HlogWriter::begin(&mut out, start, "test").unwrap();
        let h = histogram(&[5]);
        w.interval(Duration::ZERO, Duration::from_micros(400), &h, &h)
            .unwrap();
        w.interval(Duration::new(1, 5), Duration::from_nanos(1), &h, &h)
            .unwrap();
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(
            s.contains("#[BaseTime: 1700000000.123456789 (seconds"),
            "{s}"
        );
        assert!(s.contains("\n0.000,0.0004,0.000,"), "{s}");
        assert!(s.contains("\n1.000000005,0.000000001,0.000,"), "{s}");
        let read = read(&out).unwrap();
        assert_eq!(read[0].length_s, 0.0004);
        assert!((read[2].start_unix_s - 1_700_000_001.123_456_8).abs() < 1e-6);
        for (ns, text) in [
            (0, "0.000"),
            (1_000_000_000, "1.000"),
            (1_500_000_000, "1.500"),
            (1_234_500_000, "1.2345"),
            (86_400_000_000_001, "86400.000000001"),
        ] {
            assert_eq!(Seconds(ns).to_string(), text);
            assert_eq!(seconds(text), Some(ns));
        }
    }

    /// Bad lines are refused naming the line, and saying what was expected; a huge
    /// `Interval_Length` (it parsed as a `Duration`, and the merge panicked converting it)
    /// among them.
    #[test]
    fn bad_lines_are_refused_naming_the_line() {
        let good = log(UNIX_EPOCH + Duration::from_secs(T), &[&[1000]]);
        let good = String::from_utf8(good).unwrap();
        let interval = good.lines().nth(5).unwrap();
        let (_, histogram) = interval.rsplit_once(',').unwrap();
        for (line, expected) in [
            (
                "0.000,18446744073709551615.999999999,1.0,H",
                "at most a day",
            ),
            ("0.000,86400.000000001,1.0,H", "at most a day"),
            (
                "0.000,99999999999999999999999999999999,1.0,H",
                "at most a day",
            ),
            ("0.000,-1.000,1.0,H", "Interval_Length"),
            ("0.000,1e3,1.0,H", "Interval_Length"),
            ("253402300800.000,1.000,1.0,H", "before the year 10000"),
            ("x,1.000,1.0,H", "StartTimestamp in seconds"),
            ("0.000,1.000,max,H", "Interval_Max"),
            ("0.000,1.000,1.0", "StartTimestamp,Interval_Length"),
            ("0.000,1.000,1.0,H,extra", "StartTimestamp,Interval_Length"),
            ("Tag=0.000", "Tag=name,"),
            ("0.000,1.000,1.0,not base64!", "base64"),
            (
                "#[StartTime: soon (seconds since epoch)]",
                "StartTime in seconds",
            ),
            ("#[BaseTime: 1e9]", "BaseTime in seconds"),
        ] {
            let line = line.replace(",H", &format!(",{histogram}"));
            let text = format!("#[Histogram log format version 1.3]\n{interval}\n{line}\n");
            let e = read(text.as_bytes()).unwrap_err();
            assert!(e.starts_with("line 3: expected "), "{line}: {e}");
            assert!(e.contains(expected), "{line}: {e}");
        }
        let e = read(b"ok\n\xff\n").unwrap_err();
        assert!(e.starts_with("line 1: expected `[Tag=name,]"), "{e}");
        let e = read(b"#\n\xff\n").unwrap_err();
        assert!(e.starts_with("line 2: expected a line of text"), "{e}");
        // CRLF, blank lines and a last line without its newline are fine.
        let crlf = good.replace('\n', "\r\n\r\n");
        assert_eq!(read(crlf.trim_end().as_bytes()).unwrap().len(), 2);
    }

    /// Timestamps are placed as HdrHistogram's Java reader places them.
    #[test]
    fn timestamps_follow_base_time_as_the_java_reader_does() {
        let good = log(UNIX_EPOCH + Duration::from_secs(T), &[&[1000]]);
        let good = String::from_utf8(good).unwrap();
        let (_, histogram) = good.lines().nth(5).unwrap().rsplit_once(',').unwrap();
        let starts = |header: &str, stamps: &[&str]| -> Vec<f64> {
            let mut text = header.to_string();
            for s in stamps {
                text += &format!("{s},1.000,1.0,{histogram}\n");
            }
            read(text.as_bytes())
                .unwrap()
                .iter()
                .map(|i| i.start_unix_s)
                .collect()
        };
        let start = "#[StartTime: 1700000000.500 (seconds since epoch), x]\n";
        let base = "#[BaseTime: 1000.000 (seconds since epoch)]\n";
        // BaseTime given: relative to it.
        assert_eq!(starts(&format!("{start}{base}"), &["2.000"]), [1002.0]);
        // No BaseTime: a small first stamp is relative to StartTime (and so are the later).
        assert_eq!(
            starts(start, &["2.000", "1700000000.000"]),
            [1_700_000_002.5, 3_400_000_000.5]
        );
        // ... a first stamp near StartTime is absolute.
        assert_eq!(
            starts(start, &["1700000001.000", "2.000"]),
            [1_700_000_001.0, 2.0]
        );
        // No header at all: absolute.
        assert_eq!(starts("", &["5.000"]), [5.0]);
    }

    #[test]
    fn merge_adds_histograms_on_absolute_time() {
        let t = UNIX_EPOCH + Duration::from_secs(T);
        // B started 1.2 s after A: its first second lies mostly in A's second one.
        let a = log(t, &[&[10, 20], &[30]]);
        let b = log(t + Duration::from_millis(1200), &[&[40], &[50, 60, 70]]);
        let merged = merge_logs(&[&a, &b]).unwrap();
        assert_eq!(merged.summary.latency_count, 7);
        assert_eq!(merged.summary.intervals_in, 8);
        assert_eq!(merged.summary.intervals_out, 6);
        assert_eq!(merged.summary.cell, Duration::from_secs(1));
        let merged = read(&merged.log).unwrap();
        let latency: Vec<_> = merged.iter().filter(|i| i.tag.is_none()).collect();
        assert_eq!(latency.len(), 3);
        assert_eq!(
            latency
                .iter()
                .map(|i| i.histogram.len())
                .collect::<Vec<_>>(),
            [2, 2, 3]
        );
        assert_eq!(latency[1].start_unix_s, 1_700_000_001.0);
        assert_eq!(latency[1].histogram.max(), histogram(&[40]).max());
        assert!(merge_logs(&[b"garbage"]).is_err());
    }

    /// The grid: cells of the longest step, from the earliest start, an interval in the cell
    /// of its midpoint.
    #[test]
    fn merge_places_intervals_on_one_grid() {
        // 20 ms apart across a second boundary: seconds k pair up, cells from the earlier.
        let a = log_ms(990, &even(1000, &[1, 2, 4]));
        let b = log_ms(1010, &even(1000, &[8, 16, 32]));
        assert_eq!(
            cells(&[&a, &b]),
            [(990, 1000, 9), (1990, 1000, 18), (2990, 1000, 36)]
        );
        // Half a cell out of phase: a tie, the later cell takes it.
        let a0 = log_ms(0, &even(1000, &[1, 2, 4]));
        let c = log_ms(500, &even(1000, &[8, 16]));
        assert_eq!(
            cells(&[&a0, &c]),
            [(0, 1000, 1), (1000, 1000, 10), (2000, 1000, 20)]
        );
        // 0.5 s alone stays 0.5 s; beside 1 s it joins its second; 5 s takes 1 s.
        let half = log_ms(0, &even(500, &[1, 2, 4, 8]));
        assert_eq!(
            cells(&[&half]),
            [(0, 500, 1), (500, 500, 2), (1000, 500, 4), (1500, 500, 8)]
        );
        let one = log_ms(0, &even(1000, &[16, 32, 64, 128, 256, 512]));
        assert_eq!(
            cells(&[&half, &one]),
            [
                (0, 1000, 19),
                (1000, 1000, 44),
                (2000, 1000, 64),
                (3000, 1000, 128),
                (4000, 1000, 256),
                (5000, 1000, 512)
            ]
        );
        let five = log_ms(0, &even(5000, &[1000]));
        assert_eq!(cells(&[&five, &one]), [(0, 5000, 1496), (5000, 1000, 512)]);
        // A run's short last interval keeps its end; a zero length reads as 1 ms.
        let short = log_ms(0, &[(0, 1000, 1), (1000, 300, 2)]);
        assert_eq!(cells(&[&short]), [(0, 1000, 1), (1000, 300, 2)]);
        let tiny = log_ms(0, &[(0, 0, 1)]);
        assert_eq!(cells(&[&tiny]), [(0, 1, 1)]);
        // Steps that jitter within 1 % divide; 0.3 s does not divide 1 s.
        let jitter = log_ms(3, &[(0, 1007, 1), (1007, 995, 2), (2002, 1001, 4)]);
        assert_eq!(cells(&[&one, &jitter]).len(), 6);
        let odd = log_ms(0, &even(300, &[1, 2, 3, 4]));
        let e = merge_logs(&[&one, &odd]).unwrap_err();
        assert!(
            e.starts_with(
                "log2: its intervals are 0.300 s apart, which does not divide the 1.000 s of log1"
            ),
            "{e}"
        );
        // A log of one interval has no step: it joins the others' grid.
        let single = log_ms(1700, &[(0, 300, 1)]);
        assert_eq!(cells(&[&one, &single])[1], (1000, 1000, 33));
        // Intervals more than a day apart, and logs without any, are refused.
        let apart = log_ms(0, &[(0, 1000, 1), (100_000_000, 1000, 1)]);
        let e = merge_logs(&[&apart]).unwrap_err();
        assert!(e.contains("expected intervals at most a day apart"), "{e}");
        let empty = log_ms(0, &[]);
        assert_eq!(
            merge_logs(&[&one, &empty]).unwrap_err(),
            "no intervals in log2"
        );
        let e = merge_logs(&[&one, b"1.000,x"]).unwrap_err();
        assert!(e.starts_with("log2 line 1: expected "), "{e}");
    }

    /// `v2` compressed as a log holds it: cookie, length, zlib stream.
    fn compressed(v2: &[u8]) -> Vec<u8> {
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(v2).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut out = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        out.extend_from_slice(&(zlib.len() as u32).to_be_bytes());
        out.extend_from_slice(&zlib);
        out
    }

    fn log_of(histogram: &[u8]) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(histogram);
        format!("#[Histogram log format version 1.3]\n0.000,1.000,0.000,{encoded}\n").into_bytes()
    }

    /// A V2 encoding of a histogram of 1..1000 at 3 digits holding 5, patched by `patch`.
    fn v2(patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut h = Histogram::<u64>::new_with_max(1000, 3).unwrap();
        h.record(5).unwrap();
        let mut v2 = Vec::new();
        V2Serializer::new().serialize(&h, &mut v2).unwrap();
        patch(&mut v2);
        v2
    }

    fn set_payload(v2: &mut Vec<u8>, payload: &[u8]) {
        v2.truncate(V2_HEADER);
        v2[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        v2.extend_from_slice(payload);
    }

    /// Histograms built to make the decoder allocate what they claim, or to trip it: each is
    /// refused naming its line, without a panic and without the allocation.
    #[test]
    fn hostile_histograms_are_refused() {
        let counters = counters(1, 1000, 3).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "4 GiB payload claimed",
                compressed(&v2(|v| {
                    v[4..8].copy_from_slice(&0xffff_fff0_u32.to_be_bytes())
                })),
                "claims 4294967280 bytes of counts, more than",
            ),
            (
                "more payload claimed than there",
                compressed(&v2(|v| v[4..8].copy_from_slice(&100u32.to_be_bytes()))),
                "claims 100 bytes of counts, 2 are there",
            ),
            (
                "5 digits up to 2^63 (6 million counters)",
                compressed(&v2(|v| {
                    v[12..16].copy_from_slice(&5u32.to_be_bytes());
                    v[16..24].copy_from_slice(&1u64.to_be_bytes());
                    v[24..32].copy_from_slice(&(i64::MAX as u64).to_be_bytes());
                })),
                "more than the 4194304 counters",
            ),
            (
                "values past 2^63",
                compressed(&v2(|v| v[24..32].copy_from_slice(&u64::MAX.to_be_bytes()))),
                "within 1..2^63",
            ),
            (
                "6 digits",
                compressed(&v2(|v| v[12..16].copy_from_slice(&6u32.to_be_bytes()))),
                "0 to 5 significant digits",
            ),
            (
                "lowest 0",
                compressed(&v2(|v| v[16..24].copy_from_slice(&0u64.to_be_bytes()))),
                "within 1..2^63",
            ),
            // zig-zag of u64::MAX is i64::MIN, which hdrhistogram negates (a panic in debug).
            (
                "a run of 2^63 zeros",
                compressed(&v2(|v| set_payload(v, &[0xff; 9]))),
                "skips 9223372036854775808 counters",
            ),
            (
                "a count past the array",
                compressed(&v2(|v| {
                    // Skip every counter (zig-zag of -counters, LEB128), then a count of 1.
                    let mut payload = Vec::new();
                    let mut z = (counters << 1) - 1;
                    while z >= 0x80 {
                        payload.push((z as u8) | 0x80);
                        z >>= 7;
                    }
                    payload.push(z as u8);
                    payload.push(2);
                    set_payload(v, &payload);
                })),
                "counts past its",
            ),
            (
                "a count cut short",
                compressed(&v2(|v| set_payload(v, &[0x80]))),
                "end inside a number",
            ),
            (
                "a short header",
                compressed(&v2(|v| v.truncate(30))),
                "shorter than its 40-byte header",
            ),
            ("plain V2", v2(|_| ()), "expected a V2 + DEFLATE histogram"),
            (
                "compressed length claimed",
                {
                    let mut c = compressed(&v2(|_| ()));
                    c[4..8].copy_from_slice(&0x7fff_ffff_u32.to_be_bytes());
                    c
                },
                "claims 2147483647 compressed bytes",
            ),
            (
                "a zlib bomb",
                {
                    let mut bomb = v2(|v| v.truncate(V2_HEADER));
                    bomb[4..8].copy_from_slice(&(20u32 << 20).to_be_bytes());
                    bomb.resize(20 << 20, 0);
                    compressed(&bomb)
                },
                "claims 20971520 bytes of counts, more than",
            ),
            (
                "corrupt zlib",
                {
                    let mut c = compressed(&v2(|_| ()));
                    c[8] ^= 0xff;
                    c
                },
                "bad compressed histogram",
            ),
            (
                "not V2 inside",
                compressed(&v2(|v| v[0] ^= 1)),
                "expected a V2 histogram",
            ),
            (
                "a normalizing offset",
                compressed(&v2(|v| v[8..12].copy_from_slice(&1u32.to_be_bytes()))),
                "bad histogram",
            ),
        ];
        for (what, bytes, expected) in cases {
            let e = read(&log_of(&bytes)).unwrap_err();
            assert!(e.starts_with("line 2: "), "{what}: {e}");
            assert!(e.contains(expected), "{what}: {e}");
        }
        // Within the bounds, unusual histograms decode: 4 digits up to 2^63 - 1, 5 digits
        // over an hour, a lowest value of 1000.
        for (low, high, digits) in [
            (1, i64::MAX as u64, 4),
            (1, 3_600_000_000_000, 5),
            (1000, 1 << 40, 3),
            (1, 2, 0),
        ] {
            let mut h = Histogram::<u64>::new_with_bounds(low, high, digits).unwrap();
            h.record(high / 2).unwrap();
            h.record(low).unwrap();
            let mut bytes = Vec::new();
            V2DeflateSerializer::new()
                .serialize(&h, &mut bytes)
                .unwrap();
            let read = read(&log_of(&bytes)).unwrap();
            assert_eq!(read[0].histogram, h);
        }
    }

    /// The bound on counters is hdrhistogram's own count.
    #[test]
    fn counters_are_counted_as_hdrhistogram_does() {
        for digits in 0..=5u8 {
            for low in [1, 2, 3, 1000, 1 << 20, 1 << 40] {
                for high in [
                    2 * low,
                    1000 * low,
                    1 << 41,
                    1 << 62,
                    i64::MAX as u64,
                    u64::MAX,
                ] {
                    let Ok(h) = Histogram::<u64>::new_with_bounds(low, high, digits) else {
                        assert_eq!(counters(low, high, u32::from(digits)), None);
                        continue;
                    };
                    if high <= i64::MAX as u64 {
                        assert_eq!(
                            counters(low, high, u32::from(digits)),
                            Some(h.distinct_values() as u64),
                            "{low}..{high} at {digits}"
                        );
                    }
                }
            }
        }
    }

    /// Cuts and byte flips of valid logs: reading and merging never panic.
    #[test]
    fn fuzz_reading_and_merging_never_panics() {
        let start = UNIX_EPOCH + Duration::from_secs(T);
        let valid = log(
            start,
            &[&[1000, 2000, 3_000_000], &[5, 6], &[u64::MAX >> 2]],
        );
        let mut rng = crate::schedule::SplitMix64(9);
        for n in 0..3000 {
            let mut input = valid.clone();
            for _ in 0..(1 + rng.next_u64() % 3) {
                let i = (rng.next_u64() as usize) % input.len();
                match rng.next_u64() % 3 {
                    0 => input[i] = rng.next_u64() as u8,
                    1 => input.truncate(i),
                    _ => input.insert(i, b"0A,=+/\n.9"[(rng.next_u64() % 9) as usize]),
                }
                if input.is_empty() {
                    break;
                }
            }
            let _ = read(&input);
            if n % 4 == 0 {
                let _ = merge_logs(&[&valid, &input]);
            }
        }
        // Histograms of all shapes merge (into 3 digits), counts kept.
        let mut logs = Vec::new();
        let mut total = 0;
        for i in 0..16u64 {
            let digits = (rng.next_u64() % 5) as u8;
            let low = 1 << (rng.next_u64() % 12);
            let high = (2 * low).max(rng.next_u64() >> (1 + rng.next_u64() % 40));
            let mut h = Histogram::<u64>::new_with_bounds(low, high, digits).unwrap();
            for _ in 0..5 {
                h.record(low + rng.next_u64() % (high - low)).unwrap();
            }
            h.record(high).unwrap();
            total += h.len();
            let mut out = Vec::new();
            let mut w = HlogWriter::begin(&mut out, start, "test").unwrap();
            w.interval(Duration::from_secs(i % 3), Duration::from_secs(1), &h, &h)
                .unwrap();
            logs.push(out);
        }
        let logs: Vec<&[u8]> = logs.iter().map(Vec::as_slice).collect();
        let merged = merge_logs(&logs).unwrap();
        assert_eq!(merged.summary.latency_count, total);
        let back: u64 = read(&merged.log)
            .unwrap()
            .iter()
            .filter(|i| i.tag.is_none())
            .map(|i| i.histogram.len())
            .sum();
        assert_eq!(back, total);
    }
}
