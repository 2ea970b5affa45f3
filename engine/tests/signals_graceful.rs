//! SIGTERM and SIGINT start a graceful shutdown.
//!
//! No libtest harness here: a process-directed signal goes to any thread that does not block
//! it, and libtest's own threads would not. So this binary re-executes itself as a child whose
//! only threads are the runtime's; the parent signals the child and checks that its main
//! future saw the shutdown request and returned normally. Ends with the plain
//! "N passed, N failed" line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "PERCORE_SIGNAL_CHILD";

fn child() -> ! {
    let rt = percore_engine::Runtime::builder()
        .cpus([0])
        .pin(false)
        .handle_signals(true)
        .grace_period(Duration::from_secs(5))
        .build()
        .expect("runtime");
    let out = rt.run(|_| async {
        println!("ready");
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        percore_engine::shutdown::requested().await;
        println!("graceful");
    });
    std::process::exit(if out.is_ok() { 0 } else { 3 });
}

fn signal_child(sig: libc::c_int) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut kid = Command::new(exe)
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = kid.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next()
        .ok_or("child said nothing")?
        .map_err(|e| e.to_string())?;
    if first != "ready" {
        return Err(format!("child said {first:?}"));
    }
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(kid.id() as libc::pid_t, sig) };
    if rc != 0 {
        return Err("kill failed".into());
    }
    let second = lines
        .next()
        .ok_or("child ended without a word")?
        .map_err(|e| e.to_string())?;
    let status = kid.wait().map_err(|e| e.to_string())?;
    if second != "graceful" || !status.success() {
        return Err(format!("child said {second:?} and exited {status}"));
    }
    Ok(())
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
    }
    let cases = [
        ("sigterm_is_graceful", libc::SIGTERM),
        ("sigint_is_graceful", libc::SIGINT),
    ];
    let mut failed = 0;
    for (name, sig) in cases {
        match signal_child(sig) {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    println!("{} passed, {} failed", cases.len() - failed, failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
