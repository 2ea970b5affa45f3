//! HdrHistogram interval logs (`.hlog`, format 1.3): written as a run goes, read back and
//! merged across runs.
//!
//! Each interval is written as two lines: the latency from the intended send time (untagged,
//! what HdrHistogram's tools process by default) and the service time (`Tag=service`). Values
//! are nanoseconds; histograms are encoded V2 + DEFLATE, base64 (the form HdrHistogram's Java
//! `HistogramLogProcessor` reads); the `Interval_Max` column is in milliseconds, as the Java
//! writer puts it. Timestamps are seconds relative to `BaseTime`, which equals `StartTime`.
//!
//! [`merge`] adds the histograms of several logs (several generator machines) second by second
//! on absolute time, never averaging percentiles.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// The tag of service-time lines.
pub const SERVICE_TAG: &str = "service";

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
        let secs = start
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        writeln!(out, "#[{comment}]")?;
        writeln!(out, "#[Histogram log format version 1.3]")?;
        writeln!(
            out,
            "#[StartTime: {secs:.3} (seconds since epoch), {}]",
            utc_date(start)
        )?;
        writeln!(out, "#[BaseTime: {secs:.3} (seconds since epoch)]")?;
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
            .map_err(|e| io::Error::other(format!("encoding a histogram: {e:?}")))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&self.bytes);
        if let Some(tag) = tag {
            write!(self.out, "Tag={tag},")?;
        }
        writeln!(
            self.out,
            "{:.3},{:.3},{:.3},{encoded}",
            start.as_secs_f64(),
            length.as_secs_f64(),
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

/// Reads every interval of a log, on absolute time.
///
/// # Errors
///
/// A line that is not a valid interval log line, or a histogram that does not decode.
pub fn read(log: &[u8]) -> Result<Vec<LoggedInterval>, String> {
    let mut start_time: Option<f64> = None;
    let mut base_time: Option<f64> = None;
    let mut out = Vec::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(log) {
        match entry.map_err(|e| format!("not an interval log: {e:?}"))? {
            LogEntry::StartTime(t) => start_time = Some(t.as_secs_f64()),
            LogEntry::BaseTime(t) => base_time = Some(t.as_secs_f64()),
            LogEntry::Interval(i) => {
                let ts = i.start_timestamp().as_secs_f64();
                // As HdrHistogram's reader: relative to BaseTime if given; else relative to
                // StartTime when the stamp is too small to be absolute.
                let start = match (base_time, start_time) {
                    (Some(base), _) => base + ts,
                    (None, Some(st)) if ts < st - 365.0 * 86_400.0 => st + ts,
                    _ => ts,
                };
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(i.encoded_histogram())
                    .map_err(|e| format!("bad base64 in an interval: {e}"))?;
                let histogram: Histogram<u64> = deserializer
                    .deserialize(&mut bytes.as_slice())
                    .map_err(|e| format!("bad histogram in an interval: {e:?}"))?;
                out.push(LoggedInterval {
                    tag: i.tag().map(|t| t.as_str().to_string()),
                    start_unix_s: start,
                    length_s: i.duration().as_secs_f64(),
                    histogram,
                });
            }
        }
    }
    Ok(out)
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
}

/// Merges logs: intervals are placed on the whole second (absolute time) they start in, and the
/// histograms of one second and one tag are added.
///
/// # Errors
///
/// An input that does not read, or the output failing.
pub fn merge(inputs: &[Vec<u8>], out: &mut dyn Write) -> Result<MergeSummary, String> {
    let mut buckets: BTreeMap<(i64, Option<String>), (f64, Histogram<u64>)> = BTreeMap::new();
    let mut intervals_in = 0;
    let mut latency_count = 0;
    for (n, log) in inputs.iter().enumerate() {
        let intervals = read(log).map_err(|e| format!("input {}: {e}", n + 1))?;
        intervals_in += intervals.len();
        for i in intervals {
            if i.tag.is_none() {
                latency_count += i.histogram.len();
            }
            let second = i.start_unix_s.floor() as i64;
            let slot = buckets
                .entry((second, i.tag))
                .or_insert_with(|| (0.0, crate::record::new_histogram()));
            slot.0 = slot.0.max(i.length_s);
            slot.1
                .add(&i.histogram)
                .map_err(|e| format!("adding histograms: {e:?}"))?;
        }
    }
    let first = buckets.keys().map(|(s, _)| *s).min().unwrap_or(0);
    let start = UNIX_EPOCH + Duration::from_secs(first.max(0) as u64);
    let mut writer = HlogWriter::begin(out, start, "percore load merge")
        .map_err(|e| format!("writing the merged log: {e}"))?;
    for ((second, tag), (length, h)) in &buckets {
        writer
            .line(
                tag.as_deref(),
                Duration::from_secs((second - first) as u64),
                Duration::from_secs_f64(*length),
                h,
            )
            .map_err(|e| format!("writing the merged log: {e}"))?;
    }
    writer
        .flush()
        .map_err(|e| format!("writing the merged log: {e}"))?;
    Ok(MergeSummary {
        intervals_in,
        intervals_out: buckets.len(),
        latency_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn writes_the_header_the_java_reader_expects_and_reads_back() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
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

    #[test]
    fn merge_adds_histograms_on_absolute_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // B started one second after A: its first second lines up with A's second.
        let a = log(t, &[&[10, 20], &[30]]);
        let b = log(t + Duration::from_millis(1200), &[&[40], &[50, 60, 70]]);
        let mut out = Vec::new();
        let summary = merge(&[a, b], &mut out).unwrap();
        assert_eq!(summary.latency_count, 7);
        let merged = read(&out).unwrap();
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
        assert!(merge(&[b"garbage".to_vec()], &mut Vec::new()).is_err());
    }

    /// Cuts and byte flips of a valid log: reading never panics.
    #[test]
    fn fuzz_reading_never_panics() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let valid = log(start, &[&[1000, 2000, 3_000_000], &[5, 6]]);
        let mut rng = crate::schedule::SplitMix64(9);
        for _ in 0..3000 {
            let mut input = valid.clone();
            for _ in 0..(1 + rng.next_u64() % 3) {
                let i = (rng.next_u64() as usize) % input.len();
                match rng.next_u64() % 3 {
                    0 => input[i] = rng.next_u64() as u8,
                    1 => input.truncate(i),
                    _ => input.insert(i, b"0A,=+/\n."[(rng.next_u64() % 8) as usize]),
                }
                if input.is_empty() {
                    break;
                }
            }
            let _ = read(&input);
        }
    }
}
