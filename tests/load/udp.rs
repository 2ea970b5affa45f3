//! UDP echo targets against `percore serve udp-echo`, and `percore bench`.

use std::process::Command;

use crate::helpers::{load, load_with, percore_serve, temp_dir};

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

/// A UDP server that answers in turn: the echo, the same length of garbage, a datagram larger
/// than `--max-response`, and the echo twice (the copy arrives while the next request waits,
/// and is told apart as a late answer). Its first answer (the generator's probe) is the echo.
#[test]
fn udp_garbage_oversize_and_duplicates_are_counted_not_fatal() {
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let addr = server.local_addr().unwrap();
    let answering = std::thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        let mut k = 0u64;
        while let Ok((n, peer)) = server.recv_from(&mut buf) {
            let echo = &buf[..n];
            let sent = match k % 4 {
                _ if k == 0 => server.send_to(echo, peer),
                0 => server.send_to(echo, peer),
                1 => server.send_to(&vec![b'?'; n], peer),
                2 => server.send_to(&[b'!'; 2000], peer),
                _ => server
                    .send_to(echo, peer)
                    .and_then(|_| server.send_to(echo, peer)),
            };
            sent.unwrap();
            k += 1;
        }
        k
    });
    let dir = temp_dir("udp-bad");
    let run = load(
        &dir,
        &[
            &format!("udp://{addr}"),
            "--rate",
            "400",
            "-d",
            "1s",
            "-c",
            "2",
            "--cpus",
            "1",
            "--payload",
            "64",
            "--max-response",
            "1000",
            "--timeout",
            "300ms",
        ],
    );
    run.assert_exact_accounting();
    let answered = answering.join().unwrap();
    assert!(answered >= 300, "{answered}");
    let kinds = run.json["error_kinds"].as_object().unwrap();
    let count = |what: &str| -> u64 {
        kinds
            .iter()
            .filter(|(k, _)| k.contains(what))
            .map(|(_, v)| v.as_u64().unwrap())
            .sum()
    };
    assert!(count("echo mismatch") >= 50, "{}", run.stdout());
    assert!(
        count("larger than --max-response") >= 50,
        "{}",
        run.stdout()
    );
    // Echoes and echoes sent twice are answers; the copies were recognised as late, not
    // counted as mismatches.
    assert!(run.u64("responses") >= 150, "{}", run.stdout());
    assert_eq!(count("timeout"), 0, "{}", run.stdout());
}

/// Out of file descriptors (the generator's `RLIMIT_NOFILE` set below what 150 sockets
/// need): the sockets that cannot be opened are retried with back-off and their failures
/// named (`EMFILE`) and counted; what they were due to send goes out late if a socket opens
/// before the end (its lag counted), or is counted unsent.
#[test]
fn udp_sockets_that_cannot_be_opened_are_retried_and_counted() {
    use std::os::unix::process::CommandExt;
    let server = percore_serve("udp-echo");
    let dir = temp_dir("udp-emfile");
    let mut command = Command::new(env!("CARGO_BIN_EXE_percore"));
    // SAFETY: setrlimit(2) is async-signal-safe, and is all the child does before exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 100,
                rlim_max: 100,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let run = load_with(
        &dir,
        &[
            &format!("udp://{}", server.addr),
            "--rate",
            "1500",
            "-d",
            "1s",
            "-c",
            "150",
            "--cpus",
            "1",
        ],
        command,
    );
    run.assert_exact_accounting();
    let emfile: u64 = run.json["connect_errors"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("EMFILE"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert!(emfile > 0, "{}", run.stdout());
    assert!(run.u64("responses") > 100, "{}", run.stdout());
    assert!(run.u64("unsent") > 100, "{}", run.stdout());
    // Each of the 1500 intended times was sent or counted unsent.
    assert_eq!(
        run.u64("requests") + run.u64("unsent"),
        1500,
        "{}",
        run.stdout()
    );
}

/// A UDP target that dies mid-run: each refused request is counted, and the connection stops
/// once the target has been unreachable for the request timeout, counting the rest of its
/// quota as unsent (it went on, one refusal and back-off at a time, for minutes). A duration
/// run against a dead target ends at its end.
#[test]
fn a_dead_udp_target_is_given_up_on() {
    for stop in [["--requests", "300"], ["-d", "2s"]] {
        // Dies on a count, not after a sleep (so at the same point however slowly the run
        // starts): the probe's datagram and 50 of the run's are answered, then the socket
        // closes and every later datagram is refused.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = format!("udp://{}", socket.local_addr().unwrap());
        let killer = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for _ in 0..51 {
                let (n, from) = socket.recv_from(&mut buf).unwrap();
                socket.send_to(&buf[..n], from).unwrap();
            }
        });
        let started = std::time::Instant::now();
        let mut command = Command::new("timeout");
        command.args(["60", env!("CARGO_BIN_EXE_percore")]);
        let run = load_with(
            &temp_dir("udp-dead"),
            &[
                &target,
                "--rate",
                "100",
                stop[0],
                stop[1],
                "-c",
                "1",
                "--timeout",
                "500ms",
                "--cpus",
                "1",
            ],
            command,
        );
        killer.join().unwrap();
        let took = started.elapsed();
        run.assert_exact_accounting();
        assert!(run.u64("errors") >= 1, "{}", run.stdout());
        assert!(
            took < std::time::Duration::from_secs(5),
            "{stop:?}: took {took:?}: {}",
            run.stdout()
        );
        if stop[0] == "--requests" {
            assert_eq!(
                run.u64("requests") + run.u64("unsent"),
                300,
                "{}",
                run.stdout()
            );
        }
    }
}

/// Datagrams too short to carry a sequence number cannot tell a late answer from the next
/// request's: after a timeout the socket is replaced, so the late answer finds it closed. The
/// server answers the third request late and sees the requests after it from a new port.
#[test]
fn short_datagrams_move_to_a_new_socket_after_a_timeout() {
    use std::net::UdpSocket;
    use std::sync::{Arc, Mutex};
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The server's thread ends once nothing comes for a while (it must not outlive the test).
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let ports = Arc::new(Mutex::new(Vec::new()));
    {
        let ports = ports.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                n += 1;
                ports.lock().unwrap().push(from.port());
                // The first datagram is the probe's; the run's third is answered late.
                if n == 4 {
                    let late = socket.try_clone().unwrap();
                    let datagram = buf[..len].to_vec();
                    std::thread::spawn(move || {
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        let _ = late.send_to(&datagram, from);
                    });
                } else {
                    let _ = socket.send_to(&buf[..len], from);
                }
            }
        });
    }
    let run = load(
        &temp_dir("udp-short"),
        &[
            &format!("udp://{addr}"),
            "--closed-loop",
            "--requests",
            "10",
            "-c",
            "1",
            "--payload",
            "4",
            "--timeout",
            "100ms",
            "--cpus",
            "1",
        ],
    );
    run.assert_exact_accounting();
    assert_eq!(run.json["error_kinds"]["timeout"], 1, "{}", run.stdout());
    assert_eq!(run.u64("responses"), 9, "{}", run.stdout());
    let ports = ports.lock().unwrap().clone();
    // Probe, then requests 1-3 from one socket, requests 4-10 from another.
    assert_eq!(ports.len(), 11, "{ports:?}");
    assert!(ports[1..4].iter().all(|&p| p == ports[1]), "{ports:?}");
    assert!(ports[4..].iter().all(|&p| p == ports[4]), "{ports:?}");
    assert_ne!(
        ports[1], ports[4],
        "a new socket after the timeout: {ports:?}"
    );
}
