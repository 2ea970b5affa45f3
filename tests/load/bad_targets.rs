//! Bad targets and options: clear errors, never a panic, never a run full of noise.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

use crate::helpers::{load_fails, percore_serve};

/// A TCP port held by a bound socket that does not listen: connecting is refused, and no
/// other process can be handed the port meanwhile.
fn refusing_port() -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

#[test]
fn refused_silent_and_foreign_targets_are_named_clearly() {
    let (_held, refused) = refusing_port();
    let err = load_fails(&[&format!("tcp://{refused}"), "--rate", "100", "-d", "1s"]);
    assert!(
        err.contains("bad target") && err.contains("refused"),
        "{err}"
    );

    // A UDP port held by a socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = load_fails(&[
        &format!("udp://{}", silent.local_addr().unwrap()),
        "--closed-loop",
        "--timeout",
        "300ms",
    ]);
    assert!(err.contains("no answer"), "{err}");

    // HTTP spoken to an echo server: the echo is not an HTTP response.
    let echo = percore_serve("echo");
    let err = load_fails(&[&format!("http://{}/", echo.addr), "--closed-loop"]);
    assert!(err.contains("not the protocol expected"), "{err}");

    // Echo spoken to a server that answers something else.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let answer = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = other.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = conn.read(&mut buf);
        let _ =
            conn.write_all(b"-ERR unknown command\r\n more bytes to fill the payload length\r\n");
    });
    let err = load_fails(&[&format!("tcp://{addr}"), "--closed-loop"]);
    assert!(
        err.contains("not the protocol expected") && err.contains("echo mismatch"),
        "{err}"
    );
    answer.join().unwrap();
}

#[test]
fn bad_options_are_refused_before_anything_runs() {
    for (args, says) in [
        (vec!["tcp://127.0.0.1:9", "-d", "1s"], "--rate"),
        (vec!["ftp://127.0.0.1:9", "--closed-loop"], "unknown scheme"),
        (
            vec!["tcp://no-such-host.invalid:9", "--closed-loop"],
            "cannot resolve",
        ),
        (
            vec!["tcp://127.0.0.1:9", "--closed-loop", "--pipeline", "0"],
            "--pipeline",
        ),
        (vec!["tcp://127.0.0.1:9", "--rate=-5"], "--rate"),
        (
            vec!["udp://127.0.0.1:9", "--closed-loop", "--pipeline", "4"],
            "pipeline",
        ),
        (
            vec!["tcp://127.0.0.1:9", "--closed-loop", "-H", "no colon"],
            "--header",
        ),
        // Values that would overflow a clock or an allocation, and empty runs.
        (
            vec![T, "--closed-loop", "-d", "99999999999999999999999"],
            "out of range",
        ),
        (
            vec![T, "--closed-loop", "--timeout", "18446744073709551616s"],
            "out of range",
        ),
        (
            vec![T, "--closed-loop", "--warmup", "99999999m"],
            "out of range",
        ),
        (vec![T, "--closed-loop", "-d", "0"], "--duration"),
        (vec![T, "--rate", "1e-20"], "--rate"),
        (vec![T, "--rate", "1e-17", "-c", "100"], "--rate"),
        (vec![T, "--rate", "inf"], "--rate"),
        (
            vec![T, "--closed-loop", "--cpus", "0-18446744073709551615"],
            "CPU",
        ),
        (vec![T, "--closed-loop", "--cpus", "0-999999999"], "CPU"),
        (
            vec![T, "--closed-loop", "--pipeline", "18446744073709551615"],
            "--pipeline",
        ),
        (
            vec![T, "--closed-loop", "-c", "4000000000"],
            "--connections",
        ),
        (vec![T, "--closed-loop", "-c", "0"], "--connections"),
        (vec![T, "--closed-loop", "--payload", "0"], "payload"),
        (
            vec![T, "--closed-loop", "--max-response", "99999999999999"],
            "--max-response",
        ),
        (vec![T, "--closed-loop", "--requests", "0"], "--requests"),
        (
            vec![
                T,
                "--closed-loop",
                "--payload",
                "1073741824",
                "--max-response",
                "1073741824",
                "--pipeline",
                "4096",
            ],
            "in flight on one connection",
        ),
        // What would be written into a request line or a header as given.
        (
            vec![H, "--closed-loop", "-X", "GET /x HTTP/1.1\r\n"],
            "--method",
        ),
        (
            vec![H, "--closed-loop", "-H", "X-A: 1\r\nX-Injected: 2"],
            "--header",
        ),
        (vec![H, "--closed-loop", "-H", "Bad Name: 1"], "--header"),
        (
            vec![
                H,
                "--closed-loop",
                "-H",
                "Content-Length: 0",
                "--body",
                "GET /x HTTP/1.1",
            ],
            "not the body's length",
        ),
        (
            vec![H, "--closed-loop", "-H", "Transfer-Encoding: chunked"],
            "--header",
        ),
        (
            vec![
                H,
                "--closed-loop",
                "-H",
                "Content-Length: +3",
                "--body",
                "abc",
            ],
            "not the body's length",
        ),
        (
            vec![H, "--closed-loop", "-H", "Host: a", "-H", "host: b"],
            "at most once",
        ),
        (
            vec!["http://127.0.0.1:9/a b", "--closed-loop"],
            "visible ASCII",
        ),
    ] {
        let err = load_fails(&args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// Targets nothing is asked of: the options are refused before they are contacted.
const T: &str = "tcp://127.0.0.1:9";
const H: &str = "http://127.0.0.1:9/";

/// A run refused (a bad option, a target that refuses) leaves the outputs of an earlier run
/// as they were.
#[test]
fn a_refused_run_leaves_earlier_outputs_alone() {
    let dir = crate::helpers::temp_dir("outputs-kept");
    let (_held, refused) = refusing_port();
    for (flag, name) in [
        ("--json", "run.json"),
        ("--plot", "run.svg"),
        ("--hlog", "run.hlog"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, "an earlier run").unwrap();
        let path_text = path.to_str().unwrap();
        let target = format!("tcp://{refused}");
        for extra in [&["--pipeline", "0"][..], &[]] {
            let mut args = vec![target.as_str(), "--closed-loop", flag, path_text];
            args.extend_from_slice(extra);
            let _ = load_fails(&args);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                "an earlier run",
                "{args:?}"
            );
        }
        assert!(!dir.join(format!("{name}.partial")).exists());
    }
}

/// Outputs that are links or devices stay what they are: a log through a symbolic link lands
/// in the link's target, one to `/dev/null` leaves the device alone, a refused run leaves a
/// dangling link in place, and a run killed during its probe leaves no `.partial` behind.
#[test]
fn links_devices_and_killed_runs_keep_their_outputs() {
    use std::os::unix::fs::{symlink, FileTypeExt};
    let dir = crate::helpers::temp_dir("outputs-special");
    let echo = crate::helpers::percore_serve("echo");
    let target = format!("tcp://{}", echo.addr);
    let real = dir.join("real.hlog");
    let link = dir.join("link.hlog");
    symlink(&real, &link).unwrap();
    for log in [link.to_str().unwrap(), "/dev/null"] {
        let _ = crate::helpers::load(
            &dir,
            &[
                &target,
                "--closed-loop",
                "-c",
                "1",
                "--cpus",
                "1",
                "-d",
                "1s",
                "--hlog",
                log,
            ],
        );
    }
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert!(std::fs::read_to_string(&real)
        .unwrap()
        .contains("Histogram log format"));
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    let dangling = dir.join("dangling.json");
    symlink(dir.join("not-yet.json"), &dangling).unwrap();
    let (_held, refused) = refusing_port();
    let _ = load_fails(&[
        &format!("tcp://{refused}"),
        "--closed-loop",
        "--json",
        dangling.to_str().unwrap(),
    ]);
    assert!(dangling
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!dir.join("not-yet.json").exists());

    // A server that accepts and never answers keeps the probe waiting; SIGTERM then.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let log = dir.join("killed.hlog");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_percore"))
        .args([
            "load",
            &format!("tcp://{}", silent.local_addr().unwrap()),
            "--closed-loop",
        ])
        .arg("--hlog")
        .arg(&log)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_conn, _) = silent.accept().unwrap();
    // SAFETY: kill(2) on our own child's pid, which stays ours until it is waited for.
    let killed = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(killed, 0);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(!log.exists() && !dir.join("killed.hlog.partial").exists());
}

/// An output that cannot be written is refused before the run, not after it.
#[test]
fn unwritable_outputs_fail_before_the_run() {
    let echo = percore_serve("echo");
    let target = format!("tcp://{}", echo.addr);
    for flag in ["--json", "--plot", "--hlog"] {
        let started = std::time::Instant::now();
        let err = load_fails(&[
            &target,
            "--closed-loop",
            "-c",
            "1",
            "--cpus",
            "1",
            "-d",
            "60s",
            flag,
            "/nonexistent-dir/out",
        ]);
        assert!(err.contains("/nonexistent-dir/out"), "{flag}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{flag}: refused only after the 60 s run"
        );
    }
}
