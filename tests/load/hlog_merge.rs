//! `percore load merge` on logs made here: how intervals of several runs are lined up (read
//! back by HdrHistogram's Java `HistogramLogProcessor`), refusals that name the file and the
//! line, the `--out` file left alone when a merge fails, and hostile histograms decoded within
//! a memory limit.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::{Serializer, V2Serializer};
use hdrhistogram::Histogram;
use percore::loadtest::hlog::{read, HlogWriter};

use crate::helpers::temp_dir;
use crate::hlog_java::java_intervals;

/// Some second, in milliseconds since the epoch.
const T_MS: u64 = 1_700_000_000_000;

/// Writes a log whose base time is `base_ms` (ms since the epoch) and whose intervals are
/// `(start_ms, length_ms, values)` (start relative to the base); every value is 1 ms.
fn write_log(path: &Path, base_ms: u64, intervals: &[(u64, u64, u64)]) {
    let mut out = Vec::new();
    let mut w = HlogWriter::begin(
        &mut out,
        UNIX_EPOCH + Duration::from_millis(base_ms),
        "made by a test",
    )
    .unwrap();
    for &(start, length, values) in intervals {
        let mut h = Histogram::<u64>::new_with_max(1_000_000_000, 3).unwrap();
        h.record_n(1_000_000, values).unwrap();
        w.interval(
            Duration::from_millis(start),
            Duration::from_millis(length),
            &h,
            &h,
        )
        .unwrap();
    }
    drop(w);
    std::fs::write(path, out).unwrap();
}

/// `n` intervals `length_ms` long from `base_ms` on, holding `values[i]` values each.
fn even(length_ms: u64, values: &[u64]) -> Vec<(u64, u64, u64)> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u64 * length_ms, length_ms, v))
        .collect()
}

fn merge(inputs: &[&Path], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_percore"))
        .args(["load", "merge"])
        .args(inputs)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn merged_ok(inputs: &[&Path], out: &Path) {
    let output = merge(inputs, out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A merge that failed as it should: exit status 1 with a message, no panic. Its stderr.
fn merge_fails(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The merged log's untagged intervals: (start after the first, in ms; length in ms; count).
fn latency_cells(merged: &Path) -> Vec<(u64, u64, u64)> {
    let intervals = read(&std::fs::read(merged).unwrap()).unwrap();
    let latency: Vec<_> = intervals.iter().filter(|i| i.tag.is_none()).collect();
    let first = latency[0].start_unix_s;
    latency
        .iter()
        .map(|i| {
            (
                ((i.start_unix_s - first) * 1e3).round() as u64,
                (i.length_s * 1e3).round() as u64,
                i.histogram.len(),
            )
        })
        .collect()
}

/// The merged log's untagged intervals as the Java processor reads it: (end in ms after the
/// log's start, count).
fn java_cells(merged: &Path) -> Vec<(u64, u64)> {
    java_intervals(merged)
        .iter()
        .map(|i| ((i.end_s * 1e3).round() as u64, i.count))
        .collect()
}

/// Two runs started 20 ms apart across a second boundary (x.990 and x+1.010): second k of one
/// goes with second k of the other (they overlap by 980 ms), not with its k-1. The cells start
/// where the earlier run started.
#[test]
fn runs_started_across_a_second_boundary_pair_their_seconds() {
    let dir = temp_dir("merge-phase");
    let (a, b, m) = (dir.join("a.hlog"), dir.join("b.hlog"), dir.join("m.hlog"));
    write_log(&a, T_MS + 990, &even(1000, &[1, 2, 4]));
    write_log(&b, T_MS + 1010, &even(1000, &[8, 16, 32]));
    merged_ok(&[&a, &b], &m);
    assert_eq!(
        latency_cells(&m),
        [(0, 1000, 9), (1000, 1000, 18), (2000, 1000, 36)]
    );
    let first = read(&std::fs::read(&m).unwrap()).unwrap()[0].start_unix_s;
    assert!((first - (T_MS + 990) as f64 / 1e3).abs() < 1e-6, "{first}");
    assert_eq!(java_cells(&m), [(1000, 9), (2000, 18), (3000, 36)]);
}

/// Logs of half-second intervals stay half-second intervals (the two halves of a second are
/// not added into one interval labelled 0.5 s); with a log of whole seconds beside them, both
/// halves go in the second they lie in.
#[test]
fn half_second_intervals_keep_their_length_or_join_their_second() {
    let dir = temp_dir("merge-half");
    let (h1, h2, s, m) = (
        dir.join("h1.hlog"),
        dir.join("h2.hlog"),
        dir.join("s.hlog"),
        dir.join("m.hlog"),
    );
    write_log(&h1, T_MS, &even(500, &[1, 2, 4, 8]));
    write_log(&h2, T_MS, &even(500, &[16, 32, 64, 128]));
    merged_ok(&[&h1, &h2], &m);
    assert_eq!(
        latency_cells(&m),
        [
            (0, 500, 17),
            (500, 500, 34),
            (1000, 500, 68),
            (1500, 500, 136)
        ]
    );
    assert_eq!(
        java_cells(&m),
        [(500, 17), (1000, 34), (1500, 68), (2000, 136)]
    );

    write_log(&s, T_MS, &even(1000, &[256, 512]));
    merged_ok(&[&h1, &s], &m);
    assert_eq!(latency_cells(&m), [(0, 1000, 259), (1000, 1000, 524)]);
}

/// A log of 5 s intervals with one of 1 s intervals: the 1 s intervals are added into the 5 s
/// ones they lie in (no overlapping intervals of mixed lengths); the last interval of a run,
/// shorter than the others, goes where it lies and keeps its end.
#[test]
fn one_second_intervals_join_the_five_second_intervals_they_lie_in() {
    let dir = temp_dir("merge-five");
    let (five, one, m) = (dir.join("5.hlog"), dir.join("1.hlog"), dir.join("m.hlog"));
    write_log(&five, T_MS, &even(5000, &[1, 2]));
    let mut ones = even(1000, &[10; 8]);
    ones.push((8000, 300, 100));
    write_log(&one, T_MS, &ones);
    merged_ok(&[&five, &one], &m);
    assert_eq!(latency_cells(&m), [(0, 5000, 51), (5000, 5000, 132)]);
    assert_eq!(java_cells(&m), [(5000, 51), (10000, 132)]);

    // A run of 2.3 s alone: its last interval stays 0.3 s long.
    let short = dir.join("short.hlog");
    write_log(
        &short,
        T_MS,
        &[(0, 1000, 1), (1000, 1000, 2), (2000, 300, 4)],
    );
    merged_ok(&[&short], &m);
    assert_eq!(
        latency_cells(&m),
        [(0, 1000, 1), (1000, 1000, 2), (2000, 300, 4)]
    );
}

/// Intervals whose lengths do not divide one another (0.3 s and 1 s) cannot share a grid:
/// refused, naming the file.
#[test]
fn intervals_that_do_not_divide_one_another_are_refused() {
    let dir = temp_dir("merge-odd");
    let (odd, one, m) = (
        dir.join("odd.hlog"),
        dir.join("one.hlog"),
        dir.join("m.hlog"),
    );
    write_log(&odd, T_MS, &even(300, &[1, 2, 3, 4]));
    write_log(&one, T_MS, &even(1000, &[1, 2]));
    let stderr = merge_fails(&merge(&[&odd, &one], &m));
    assert!(stderr.contains(&odd.display().to_string()), "{stderr}");
    assert!(!m.exists());
}

/// A log line claiming an interval of 2^64 s (it parses as a `Duration`; the merge panicked
/// turning it into seconds and back), a garbage file, and a log with no intervals: each is
/// refused with an error naming the file (and the line), Display-formatted.
#[test]
fn bad_logs_are_refused_naming_the_file_and_line() {
    let dir = temp_dir("merge-bad");
    let m = dir.join("m.hlog");
    let good = dir.join("good.hlog");
    write_log(&good, T_MS, &even(1000, &[1, 2]));
    let text = std::fs::read_to_string(&good).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Line 6 is the first interval (after four header lines and the legend).
    assert!(lines[5].starts_with("0.000,1.000,"), "{text}");

    let huge = dir.join("huge.hlog");
    let bad_line = lines[5].replacen("0.000,1.000,", "0.000,18446744073709551615.999999999,", 1);
    let mut bad = lines.clone();
    bad[5] = &bad_line;
    std::fs::write(&huge, bad.join("\n") + "\n").unwrap();
    let stderr = merge_fails(&merge(&[&good, &huge], &m));
    assert!(
        stderr.contains(&format!("{} line 6", huge.display())),
        "{stderr}"
    );

    let garbage = dir.join("garbage.hlog");
    std::fs::write(&garbage, "not a log\n").unwrap();
    let stderr = merge_fails(&merge(&[&good, &garbage], &m));
    assert!(
        stderr.contains(&format!("{} line 1", garbage.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("ParseError"), "{stderr}");

    let empty = dir.join("empty.hlog");
    write_log(&empty, T_MS, &[]);
    let stderr = merge_fails(&merge(&[&good, &empty], &m));
    assert!(
        stderr.contains(&format!("no intervals in {}", empty.display())),
        "{stderr}"
    );
    assert!(!m.exists(), "a failed merge created its output");
}

/// A merge that fails leaves `--out` as it was, even when it is one of the inputs.
#[test]
fn a_failed_merge_leaves_its_output_alone() {
    let dir = temp_dir("merge-keep");
    let (keep, bad) = (dir.join("keep.hlog"), dir.join("bad.hlog"));
    write_log(&keep, T_MS, &even(1000, &[1, 2]));
    let before = std::fs::read_to_string(&keep).unwrap();
    std::fs::write(&bad, "not a log\n").unwrap();
    merge_fails(&merge(&[&keep, &bad], &keep));
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), before);

    // It succeeds in place, and leaves no temporary file behind.
    merged_ok(&[&keep], &keep);
    assert_eq!(latency_cells(&keep), [(0, 1000, 1), (1000, 1000, 2)]);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["bad.hlog", "keep.hlog"]);
}

/// Hostile histograms, each a few hundred bytes of log: one whose V2 header claims a 4 GiB
/// payload, and 5-digit histograms up to 2^63 (6 million counters, 49 MB each) on 40 lines.
/// The merge, run with 512 MiB of address space, refuses each naming the file and line (it
/// allocated what the header claimed, and kept every decoded histogram).
#[test]
fn hostile_histograms_are_refused_within_a_memory_limit() {
    let dir = temp_dir("merge-bomb");
    let m = dir.join("m.hlog");
    let mut v2 = Vec::new();
    let mut small = Histogram::<u64>::new_with_max(1000, 3).unwrap();
    small.record(5).unwrap();
    V2Serializer::new().serialize(&small, &mut v2).unwrap();
    // The V2 header: cookie, payload length, normalizing offset, significant digits, lowest,
    // highest (u64 at 20), int-to-double ratio; then the payload.
    let mut claims = v2.clone();
    claims[4..8].copy_from_slice(&0xffff_fff0_u32.to_be_bytes());
    let mut wide = v2.clone();
    wide[12..16].copy_from_slice(&5_u32.to_be_bytes());
    wide[20..28].copy_from_slice(&(i64::MAX as u64).to_be_bytes());

    for (name, v2, lines) in [("claims", claims, 1), ("wide", wide, 40)] {
        let path = dir.join(format!("{name}.hlog"));
        let mut text = String::from(
            "#[Histogram log format version 1.3]\n#[StartTime: 1700000000.000 (seconds since epoch)]\n",
        );
        for i in 0..lines {
            text += &format!("{i}.000,1.000,0.000,{}\n", base64(&compressed(&v2)));
        }
        std::fs::write(&path, &text).unwrap();
        assert!(text.len() < 6000, "{}", text.len());
        let output = merge_limited(&path, &m, 512 << 20);
        let stderr = merge_fails(&output);
        assert!(
            stderr.contains(&format!("{} line 3", path.display())),
            "{name}: {stderr}"
        );
    }
}

/// `percore load merge INPUT --out OUT` with its address space limited to `bytes`.
fn merge_limited(input: &Path, out: &Path, bytes: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_percore"));
    command
        .args(["load", "merge"])
        .arg(input)
        .arg("--out")
        .arg(out);
    // SAFETY: setrlimit(2) is async-signal-safe, and is all the child does before exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command.output().unwrap()
}

/// HdrHistogram's compressed form of a V2 histogram: cookie, length, then a zlib stream (one
/// stored block, so the test needs no compressor).
fn compressed(v2: &[u8]) -> Vec<u8> {
    let mut zlib = vec![0x78, 0x01, 0x01];
    let len = v2.len() as u16;
    zlib.extend_from_slice(&len.to_le_bytes());
    zlib.extend_from_slice(&(!len).to_le_bytes());
    zlib.extend_from_slice(v2);
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in v2 {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = 0x1c84_9314_u32.to_be_bytes().to_vec();
    out.extend_from_slice(&(zlib.len() as u32).to_be_bytes());
    out.extend_from_slice(&zlib);
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An `--out` that is not a regular file (a FIFO here; `/dev/stdout` on a pipe is the
/// common case) is written in place once the merge succeeded: renaming a new file over it
/// would have replaced the FIFO (or the device's name) with a regular file.
#[test]
fn a_merge_into_a_fifo_writes_it_in_place() {
    let dir = temp_dir("merge-fifo");
    let a = dir.join("a.hlog");
    write_log(&a, T_MS, &even(1000, &[3, 4]));
    let fifo = dir.join("out.fifo");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = merge(&[&a], &fifo);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Checked before the reader is joined: had the FIFO been renamed over, the reader would
    // wait on it for good.
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&kind),
        "still a FIFO"
    );
    let merged = reader.join().unwrap();
    let regular = dir.join("m.hlog");
    merged_ok(&[&a], &regular);
    assert_eq!(
        read(&merged).unwrap().len(),
        read(&std::fs::read(&regular).unwrap()).unwrap().len(),
        "the whole log came through the FIFO"
    );
}
