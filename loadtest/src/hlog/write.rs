//! Writing an interval log: [`HlogWriter`], and times in seconds written exactly.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::{NS_PER_S, SERVICE_TAG};

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

    pub(super) fn line(
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
pub(super) struct Seconds(pub(super) u128);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fraction = format!("{:09}", self.0 % NS_PER_S);
        let digits = fraction.trim_end_matches('0').len().max(3);
        write!(f, "{}.{}", self.0 / NS_PER_S, &fraction[..digits])
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

#[cfg(test)]
pub(super) mod tests {
    //! Also home to the helpers the other `hlog` tests build their logs with (`T`,
    //! `histogram`, `log`).

    use super::*;
    use crate::hlog::parse::seconds;
    use crate::hlog::read;

    pub(crate) const T: u64 = 1_700_000_000;

    pub(crate) fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = crate::record::new_histogram();
        for v in values {
            h.record(*v).unwrap();
        }
        h
    }

    pub(crate) fn log(start: SystemTime, seconds: &[&[u64]]) -> Vec<u8> {
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
}
