//! UDP echo targets against `percore serve udp-echo`, and `percore bench`.

use std::process::Command;

use crate::helpers::{load, percore_serve, temp_dir};

#[test]
fn udp_echo_closed_and_open_loop() {
    let server = percore_serve("udp-echo");
    let dir = temp_dir("udp");
    let target = format!("udp://{}", server.addr);
    let run = load(
        &dir,
        &[
            &target,
            "--closed-loop",
            "--requests",
            "5000",
            "-c",
            "8",
            "--cpus",
            "1",
        ],
    );
    assert_eq!(run.u64("responses"), 5000);
    run.assert_exact_accounting();
    let run = load(
        &dir,
        &[
            &target,
            "--rate",
            "2000",
            "--arrival",
            "poisson",
            "-d",
            "1500ms",
            "-c",
            "8",
            "--cpus",
            "1",
            "--payload",
            "0",
        ],
    );
    run.assert_exact_accounting();
    let sent = run.u64("requests") as f64;
    assert!((sent - 3000.0).abs() < 300.0, "poisson arrivals: {sent}");
    assert_eq!(run.json["arrival"], "poisson");
}

#[test]
fn percore_bench_runs_the_demo_and_writes_its_report() {
    let dir = temp_dir("bench");
    let svg = dir.join("report.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_percore"))
        .args(["bench", "--duration", "3s", "--connections", "8", "--plot"])
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in [
        "closed loop (capacity)",
        "open loop at",
        "latency (from intended time)",
        "service   ",
    ] {
        assert!(stdout.contains(phase), "missing {phase:?} in {stdout}");
    }
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("percentile"),
        "{}",
        &svg[..200.min(svg.len())]
    );
}
