//! `percore engine-bench` (the engine's self-benchmark) runs, prints its table and ends by
//! itself. (`percore bench`, the README's demo, is tested with the load generator.) `percore
//! bench` and `engine-bench` refuse bad options before they run, say why their service failed,
//! and never leave their service running.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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

/// Runs `percore ARGS` to its end, within `limit`: a run still going then is killed, and the
/// test fails saying so.
fn run_within(args: &[&str], limit: Duration) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_percore"));
    command.args(args);
    common::output_within(command, limit)
        .unwrap_or_else(|| panic!("percore {args:?} did not end within {limit:?}"))
}

/// Regression: `engine-bench --rounds 0` panicked (the median of no samples), and `--ops`
/// below 20 printed inf and NaN (the timer-fire case ran `ops / 20` operations: none).
#[test]
fn engine_bench_refuses_zero_rounds_and_too_few_ops() {
    for (args, option) in [
        (["--rounds", "0", "--ops", "2000"], "--rounds"),
        (["--ops", "10", "--rounds", "1"], "--ops"),
        (["--ops", "0", "--rounds", "1"], "--ops"),
    ] {
        let out = run_within(
            &[&["engine-bench"][..], &args[..]].concat(),
            Duration::from_secs(20),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}\n{stdout}");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
        assert!(
            !stdout.contains("inf") && !stdout.contains("NaN"),
            "{stdout}"
        );
    }
}

/// Regression: `bench` checked its `--json` and `--plot` paths only after the whole run, and
/// took a directory for a file.
#[test]
fn bench_refuses_an_output_it_cannot_write_before_it_runs() {
    let dir = env!("CARGO_TARGET_TMPDIR");
    let missing = format!("{dir}/no-such-dir/report.json");
    for (args, expected) in [
        (["--json", missing.as_str()], "no-such-dir/report.json"),
        (["--plot", dir], "is a directory"),
    ] {
        let out = run_within(
            &[
                &["bench", "--duration", "2s", "--connections", "2"][..],
                &args[..],
            ]
            .concat(),
            Duration::from_secs(20),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stdout}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stdout.contains("percore bench:"),
            "{args:?}: refused before the service starts and the run, not after:\n{stdout}"
        );
    }
}

/// Regression: when its service failed to start, `bench` said only "the service did not say
/// where it listens": the service's own words and exit status are now in the error. Too few
/// file descriptors (`ulimit -n`) make the service fail; the lowest limit `bench` itself
/// starts it under depends on how processes are spawned, so the limits are tried upwards.
#[test]
fn bench_says_why_its_service_failed() {
    for limit in 6..=12 {
        let script = format!(
            "ulimit -n {limit} && exec \"$0\" bench --duration 2s --connections 2 \
             --plot {}/never-written.svg",
            env!("CARGO_TARGET_TMPDIR")
        );
        let out = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_percore")])
            .stdin(Stdio::null())
            .output()
            .expect("running sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("starting percore serve") || stderr.contains("cannot write") {
            // `bench` itself had too few descriptors: a higher limit.
            continue;
        }
        assert!(!out.status.success(), "limit {limit}: {stderr}");
        assert!(
            stderr.contains("service failed: Too many open files"),
            "limit {limit}: the service's own words: {stderr}"
        );
        assert!(stderr.contains("exit status: 1"), "limit {limit}: {stderr}");
        return;
    }
    panic!("no file limit from 6 to 12 let bench start its service");
}

/// The pid of `parent`'s child process named `comm`, from `/proc`.
fn child_named(parent: u32, comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent && name == comm).then_some(pid)
        })
}

/// Whether the process behind `pidfd` ends within `limit` (it is then a zombie or gone).
fn ends_within(pidfd: libc::c_int, limit: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let ready = unsafe { libc::poll(&mut poll, 1, limit.as_millis() as libc::c_int) };
    ready == 1
}

/// Starts `bench`, waits until its service runs, sends `signal` to `bench` alone, and checks
/// that the service ends too (it used to be killed only when `bench` dropped it, so any signal
/// that ended `bench` left it running).
fn bench_signalled_stops_its_service(signal: libc::c_int) {
    let plot = format!(
        "{}/bench-signalled-{signal}.svg",
        env!("CARGO_TARGET_TMPDIR")
    );
    let mut bench = Command::new(env!("CARGO_BIN_EXE_percore"))
        .args(["bench", "--duration", "2s", "--connections", "2", "--plot"])
        .arg(&plot)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running percore bench");
    // The first line comes once the service listens.
    let mut stdout = BufReader::new(bench.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("service on CPU"), "{line}");
    let service = child_named(bench.id(), "percore").expect("bench's service process");
    // SAFETY: pidfd_open(2) of a live process (the service, which bench has not waited for).
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, service, 0) } as libc::c_int;
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: kill(2) on our own child, not yet waited for.
    assert_eq!(unsafe { libc::kill(bench.id() as libc::pid_t, signal) }, 0);
    let status = bench.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    let ended = ends_within(pidfd, Duration::from_secs(3));
    if !ended {
        // SAFETY: the service is still running (its pidfd said so), so its pid is its own.
        unsafe { libc::kill(service as libc::pid_t, libc::SIGKILL) };
    }
    // SAFETY: our own pidfd, closed once.
    unsafe { libc::close(pidfd) };
    assert!(
        ended,
        "bench ended ({status:?}) and left its service running"
    );
    let _ = std::fs::remove_file(&plot);
}

#[test]
fn bench_stopped_by_sigterm_stops_its_service() {
    bench_signalled_stops_its_service(libc::SIGTERM);
}

#[test]
fn bench_stopped_by_sigint_stops_its_service() {
    bench_signalled_stops_its_service(libc::SIGINT);
}

#[test]
fn bench_killed_outright_stops_its_service() {
    bench_signalled_stops_its_service(libc::SIGKILL);
}
