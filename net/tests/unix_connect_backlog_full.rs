//! A Unix connect to a listener whose backlog is full and which does not accept: the connect
//! waits without blocking the core (a timer task on the same core keeps ticking), a deadline
//! cancels it and its socket closes, and a connect waiting when the listener makes room
//! completes and carries bytes.
//!
//! The sequence: a listener with backlog 0 (one queued connection fills it) is filled by
//! non-blocking connects from the test thread until the kernel says EAGAIN. On the core, a
//! ticker task counts 1 ms ticks while `UnixStream::connect` runs under `move_on_after`.
//! Before the fix the connect was a blocking connect(2) on the core's thread: it slept in the
//! kernel until someone accepted, freezing every task of the core. The core runs on its own
//! thread here, so that such a freeze fails the test (the test thread then accepts to let the
//! frozen core go) instead of hanging it.
//!
//! Such a connect waits in a kernel worker thread of the core's ring (io-wq): the last test
//! checks that the runtime caps them, and that connects past the cap queue and still obey
//! their deadlines.

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use percore_engine::scope::move_on_after;
use percore_engine::time::sleep;
use percore_net::unix::UnixStream;
use socket2::{Domain, SockAddr, Socket, Type};

/// A listener that never accepts on its own, its backlog filled; and the connections filling it.
fn full_listener(path: &std::path::Path) -> (Socket, Vec<Socket>) {
    let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    listener.bind(&SockAddr::unix(path).unwrap()).unwrap();
    listener.listen(0).unwrap();
    let mut fillers = Vec::new();
    loop {
        let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        match s.connect(&SockAddr::unix(path).unwrap()) {
            Ok(()) => fillers.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the backlog: {e}"),
        }
        assert!(fillers.len() < 64, "the backlog never filled");
    }
    (listener, fillers)
}

/// Counts 1 ms ticks on the current core until dropped.
fn spawn_ticker() -> (Rc<Cell<u64>>, percore_engine::JoinHandle<()>) {
    let ticks = Rc::new(Cell::new(0u64));
    let t = ticks.clone();
    let task = percore_engine::spawn(async move {
        loop {
            sleep(Duration::from_millis(1)).await;
            t.set(t.get() + 1);
        }
    });
    (ticks, task)
}

/// Waits (ticking the core) until `ticks` has moved `n` past `from`.
async fn ticks_past(ticks: &Cell<u64>, from: u64, n: u64) {
    while ticks.get() < from + n {
        sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn connect_to_a_full_backlog_waits_off_the_core_and_is_cancellable() {
    let path = std::env::temp_dir().join(format!("percore-{}-full.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (listener, fillers) = full_listener(&path);
    let core_listener = listener.try_clone().unwrap();
    let core_path = path.clone();
    let (done_tx, done_rx) = mpsc::channel();
    let core = std::thread::spawn(move || {
        percore_engine::block_on(async move {
            let (ticks, ticker) = spawn_ticker();
            let fds_before = percore_engine::open_fd_count().unwrap();

            // 1. Nobody accepts: the deadline cancels the connect, the core went on meanwhile.
            let at_start = ticks.get();
            let gave_up = move_on_after(Duration::from_millis(50), UnixStream::connect(&core_path))
                .await
                .map(|r| r.map(drop));
            assert!(gave_up.is_none(), "connect to a full backlog: {gave_up:?}");
            assert!(
                ticks.get() >= at_start + 3,
                "the ticker must run while the connect waits: {} ticks",
                ticks.get() - at_start
            );
            // The cancelled connect's socket closes once the kernel is done with it.
            while percore_engine::open_fd_count().unwrap() > fds_before {
                sleep(Duration::from_millis(1)).await;
            }

            // 2. The listener makes room while a connect waits: it completes.
            let waiting = percore_engine::spawn(UnixStream::connect(core_path.clone()));
            let before_room = ticks.get();
            ticks_past(&ticks, before_room, 5).await;
            // Taking one filler out of the queue makes room for the waiting connect.
            drop(core_listener.accept().unwrap());
            let conn = waiting.await.unwrap().unwrap();
            let (mut ours, _) = core_listener.accept().unwrap();
            let (sent, _) = conn.write_all(b"through".to_vec()).await;
            sent.unwrap();
            let mut got = [0u8; 7];
            ours.read_exact(&mut got).unwrap();
            ours.write_all(b"back").unwrap();
            drop(ticker);
            got
        })
    });
    // Report the core's end, whatever it is, so a frozen core is noticed rather than waited on.
    let watcher = std::thread::spawn(move || done_tx.send(core.join()));
    match done_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(result) => {
            let got = result.unwrap_or_else(|p| std::panic::resume_unwind(p));
            assert_eq!(&got, b"through");
        }
        Err(_) => {
            // Let a core stuck in a blocking connect go, so the test ends (and fails).
            listener.set_nonblocking(true).unwrap();
            for _ in 0..4 {
                let _ = listener.accept();
            }
            let _ = watcher.join();
            panic!("the core froze in UnixStream::connect");
        }
    }
    drop(fillers);
    let _ = std::fs::remove_file(&path);
}

/// The io-wq worker threads serving one thread's rings are named `iou-wrk-<its tid>`
/// (truncated to 15 bytes, as every thread name is).
fn io_workers_of(tid: i32) -> usize {
    let name = format!("iou-wrk-{tid}");
    let name = &name[..name.len().min(15)];
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Eight connects to a full backlog on a core whose ring may use 2 worker threads: no more
/// than 2 threads serve them, the ones past the cap wait in the kernel's queue, and every
/// connect still ends at its deadline, its socket closed.
#[test]
fn connects_to_a_full_backlog_use_no_more_worker_threads_than_the_cap() {
    const CONNECTS: usize = 8;
    let path = std::env::temp_dir().join(format!("percore-{}-capped.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (listener, fillers) = full_listener(&path);
    let core_path = path.clone();
    let outcome = percore_engine::Runtime::builder()
        .cpus(vec![0])
        .pin(false)
        .io_workers(2)
        .build()
        .unwrap()
        .run(move |_| {
            let path = core_path.clone();
            async move {
                // SAFETY: gettid(2) has no preconditions.
                let tid = unsafe { libc::gettid() };
                let fds_before = percore_engine::open_fd_count().unwrap();
                let started = std::time::Instant::now();
                let connects: Vec<_> = (0..CONNECTS)
                    .map(|_| {
                        let path = path.clone();
                        percore_engine::spawn(async move {
                            move_on_after(Duration::from_millis(600), UnixStream::connect(path))
                                .await
                                .map(|r| r.map(drop))
                        })
                    })
                    .collect();
                sleep(Duration::from_millis(300)).await;
                let workers = io_workers_of(tid);
                let mut outcomes = Vec::new();
                for c in connects {
                    outcomes.push(c.await.unwrap());
                }
                let took = started.elapsed();
                while percore_engine::open_fd_count().unwrap() > fds_before {
                    sleep(Duration::from_millis(1)).await;
                }
                (workers, outcomes, took)
            }
        })
        .unwrap();
    let (workers, outcomes, took) = outcome.into_iter().next().unwrap();
    assert!(
        (1..=2).contains(&workers),
        "{workers} worker threads for {CONNECTS} waiting connects (cap 2)"
    );
    assert!(
        outcomes.iter().all(Option::is_none),
        "every connect gave up at its deadline: {outcomes:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the queued connects were cancelled too: {took:?}"
    );
    drop((listener, fillers));
    let _ = std::fs::remove_file(&path);
}
