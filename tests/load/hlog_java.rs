//! Interval logs as HdrHistogram's own Java `HistogramLogProcessor` reads them, and
//! `percore load merge`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::{load, percore_serve, temp_dir};

/// Runs the Java processor on `hlog` (`extra` arguments added), writing `hlog`.java and
/// `hlog`.java.hgrm.
fn java_processor(hlog: &Path, extra: &[&str]) -> PathBuf {
    let out_base = hlog.with_extension("java");
    let output = Command::new("java")
        .args(["-cp", "/usr/share/java/hdrhistogram.jar"])
        .arg("org.HdrHistogram.HistogramLogProcessor")
        .args(extra)
        .arg("-i")
        .arg(hlog)
        .arg("-o")
        .arg(&out_base)
        .output()
        .expect("java (default-jre-headless, libhdrhistogram-java) is installed by .ci/test-all");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out_base
}

/// One interval of a log as the Java processor read it.
#[derive(Debug)]
pub(crate) struct JavaInterval {
    /// Its end, seconds after the log's `StartTime`.
    pub(crate) end_s: f64,
    /// Values in it.
    pub(crate) count: u64,
}

/// The untagged intervals of `hlog` as the Java processor reads them (its CSV output).
pub(crate) fn java_intervals(hlog: &Path) -> Vec<JavaInterval> {
    let out_base = java_processor(hlog, &["-csv"]);
    let csv = std::fs::read_to_string(&out_base).unwrap();
    csv.lines()
        .filter(|l| !l.starts_with(['#', '"']))
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            JavaInterval {
                end_s: cols[0].parse().unwrap(),
                count: cols[1].parse().unwrap(),
            }
        })
        .collect()
}

/// Runs the Java processor on `hlog`; returns the total count it read.
fn java_total_count(hlog: &Path) -> u64 {
    let out_base = java_processor(hlog, &[]);
    let hgrm = std::fs::read_to_string(out_base.with_extension("java.hgrm")).unwrap();
    let line = hgrm
        .lines()
        .find(|l| l.contains("Total count"))
        .unwrap_or_else(|| panic!("no total in {hgrm}"));
    line.rsplit('=')
        .next()
        .unwrap()
        .trim()
        .trim_end_matches(']')
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_java_processor_reads_runs_and_their_merge() {
    let server = percore_serve("echo");
    let dir = temp_dir("hlog");
    let target = format!("tcp://{}", server.addr);
    let mut counts = Vec::new();
    let mut logs = Vec::new();
    for name in ["a", "b"] {
        let hlog = dir.join(format!("{name}.hlog"));
        let run = load(
            &dir,
            &[
                &target,
                "--rate",
                "1500",
                "-d",
                "2s",
                "-c",
                "4",
                "--cpus",
                "1",
                "--hlog",
                hlog.to_str().unwrap(),
            ],
        );
        let text = std::fs::read_to_string(&hlog).unwrap();
        assert!(
            text.contains("#[Histogram log format version 1.3]"),
            "{text}"
        );
        assert_eq!(java_total_count(&hlog), run.u64("responses"));
        counts.push(run.u64("responses"));
        logs.push(hlog);
    }
    let merged = dir.join("merged.hlog");
    let out = Command::new(env!("CARGO_BIN_EXE_percore"))
        .args(["load", "merge"])
        .args(&logs)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(java_total_count(&merged), counts.iter().sum::<u64>());

    let garbage = dir.join("garbage.hlog");
    std::fs::write(&garbage, "not a log\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_percore"))
        .args(["load", "merge"])
        .arg(&garbage)
        .arg("--out")
        .arg(dir.join("never.hlog"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} line 1: expected", garbage.display())),
        "{stderr}"
    );
}
