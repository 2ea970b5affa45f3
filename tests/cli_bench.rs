//! `percore engine-bench` (the engine's self-benchmark) runs, prints its table and ends by
//! itself. (`percore bench`, the README's demo, is tested with the load generator.)

use std::process::Command;

#[test]
fn percore_engine_bench_ends_by_itself_with_a_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_percore"))
        .args(["engine-bench", "--ops", "2000", "--rounds", "1"])
        .output()
        .expect("running percore engine-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for case in [
        "ring nop round trip",
        "spawn + join empty task",
        "yield round trip",
        "channel ping-pong",
        "timer insert + cancel",
        "timer fire",
    ] {
        assert!(stdout.contains(case), "missing {case:?} in:\n{stdout}");
    }
    assert!(stdout.contains("ring: io_uring"), "{stdout}");
}

#[test]
fn percore_without_a_command_explains_itself() {
    let out = Command::new(env!("CARGO_BIN_EXE_percore"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bench"), "{stderr}");
}
