//! Coordinated omission, proven with a frozen server: at a fixed rate the target is stopped
//! (SIGSTOP) for 1 s. Latency from the intended send time must show the stall; service time
//! (what a closed-loop tool reports) must not.

use std::time::{Duration, Instant};

use crate::helpers::{load, percore_serve, temp_dir};

#[test]
fn a_frozen_server_shows_in_corrected_latency_only() {
    let server = percore_serve("echo");
    let dir = temp_dir("frozen");
    let target = format!("tcp://{}", server.addr);
    let stall = Duration::from_secs(1);
    let run = std::thread::scope(|s| {
        let freezer = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(1600));
            let stopped = Instant::now();
            server.signal(libc::SIGSTOP);
            std::thread::sleep(stall);
            server.signal(libc::SIGCONT);
            stopped.elapsed()
        });
        let run = load(
            &dir,
            &[
                &target, "--rate", "2000", "-d", "5s", "-c", "8", "--cpus", "1",
            ],
        );
        (run, freezer.join().unwrap())
    });
    let (run, frozen) = run;
    run.assert_exact_accounting();
    assert_eq!(run.u64("errors"), 0, "{}", run.stdout());
    let corrected = run.json["latency_ns"]["p99"].as_u64().unwrap();
    let uncorrected = run.json["service_time_ns"]["p99"].as_u64().unwrap();
    let frozen_ns = frozen.as_nanos() as u64;
    // A fifth of the requests were due during the stall, with latencies spread from 0 to the
    // stall: the 99th percentile is the top twentieth of those, ~95% of the stall.
    assert!(
        corrected >= frozen_ns * 8 / 10,
        "corrected p99 {corrected} ns vs stall {frozen_ns} ns\n{}",
        run.stdout()
    );
    assert!(
        uncorrected < frozen_ns / 10,
        "service-time p99 {uncorrected} ns should not see the stall\n{}",
        run.stdout()
    );
    // The stall shows as schedule lag too, and the run caught up afterwards.
    assert!(run.json["schedule_lag_ns"]["max"].as_u64().unwrap() >= frozen_ns / 2);
    assert!(run.f64("achieved_rate") > 1900.0, "{}", run.stdout());
}
