//! Reading a log's lines: their fields, their times exactly (in nanoseconds), and [`read`],
//! which decodes their histograms too.

use hdrhistogram::Histogram;

use super::decode::decode;
use super::write::Seconds;
use super::{MAX_LENGTH_NS, MAX_TIME_NS, NS_PER_S};

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
/// memory grows with the log (each histogram is bounded, see the [module](super) notes).
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
pub(super) struct Line<'a> {
    /// Its line number, from 1.
    pub(super) number: usize,
    pub(super) tag: Option<&'a str>,
    /// Absolute start, nanoseconds since the epoch.
    pub(super) start: u128,
    /// Nanoseconds, at least 1 ms if the log said 0.
    pub(super) length: u128,
    /// Base64 of the V2 + DEFLATE histogram.
    pub(super) histogram: &'a str,
}

/// Parses a log's lines (see the [module](super) notes); errors say `line N: ...`.
pub(super) fn parse(log: &[u8]) -> Result<Vec<Line<'_>>, String> {
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
pub(super) fn seconds(text: &str) -> Option<u128> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlog::write::tests::{log, T};
    use std::time::{Duration, UNIX_EPOCH};

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
}
