//! Merging logs: [`merge`] and the grid of absolute time it places intervals on.

use std::time::{Duration, UNIX_EPOCH};

use super::decode::decode;
use super::parse::{parse, Line};
use super::write::{HlogWriter, Seconds};
use super::{MAX_LENGTH_NS, NS_PER_S};

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
    /// The cells' length (see the [module](super) notes).
    pub cell: Duration,
}

/// Merges logs on one grid of absolute time (the rule is in the [module](super) notes): the
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

/// A `Duration` of `ns` nanoseconds (at most [`MAX_TIME_NS`](super::MAX_TIME_NS) plus a
/// little, here).
fn duration(ns: u128) -> Duration {
    let secs = u64::try_from(ns / NS_PER_S).unwrap_or(u64::MAX);
    Duration::new(secs, (ns % NS_PER_S) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlog::read;
    use crate::hlog::write::tests::{histogram, log, T};
    use hdrhistogram::Histogram;

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
