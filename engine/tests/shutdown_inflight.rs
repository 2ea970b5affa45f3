//! Shutdown with ops in flight: when a runtime's main future returns, tasks still blocked in
//! the kernel are cancelled, the ring waits for the kernel to finish every op, and every fd and
//! buffer is released. Runs under AddressSanitizer too (`.ci/asan-cancel`).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use percore_engine::buf::ring::BufRing;
use percore_engine::ops;
use percore_engine::scope::move_on_after;

#[test]
fn runtime_end_cancels_blocked_ops_and_frees_everything() {
    let _serial = serial();
    let before = percore_engine::open_fd_count().unwrap();
    let (listener, addr) = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    };
    let (peer_a, peer_b) = std::os::unix::net::UnixStream::pair().unwrap();
    percore_engine::block_on(async move {
        let listener = shared(listener);
        let ring = BufRing::new(16, 512).unwrap();
        let sock = shared(peer_a);
        // Tasks blocked in the kernel: accept, recv, multishot recv, a long sleep.
        // Tasks blocked in the kernel: accept, recv, multishot recv, a long sleep. Detached,
        // so nothing cancels them before the runtime's end does.
        let l2 = listener.clone();
        percore_engine::spawn(async move { ops::accept(&l2).await.map(drop) }).detach(|_| {});
        let s2 = sock.clone();
        percore_engine::spawn(async move {
            ops::recv(&s2, Vec::with_capacity(4096), 0)
                .await
                .0
                .map(drop)
        })
        .detach(|_| {});
        let s3 = sock.clone();
        let r2 = ring.clone();
        percore_engine::spawn(async move {
            let mut stream = ops::recv_multishot(&s3, &r2).unwrap();
            let _ = stream.next().await;
            std::future::pending::<()>().await;
        })
        .detach(|_| {});
        percore_engine::spawn(percore_engine::time::sleep(Duration::from_secs(3600)))
            .detach(|_| {});
        let_kernel_work().await;
        assert!(in_flight() >= 4, "ops should be in flight: {}", in_flight());
    });
    drop(peer_b);
    // A connection arriving after the runtime ended must not be accepted by a ghost.
    let _ = TcpStream::connect(addr);
    assert_eq!(
        percore_engine::open_fd_count().unwrap(),
        before,
        "every fd (ring, eventfd, listener, sockets, accepted) closed after the runtime ended"
    );
}

#[test]
fn runtime_end_with_unsent_data_in_a_full_socket() {
    let _serial = serial();
    let before = percore_engine::open_fd_count().unwrap();
    let (full, mut drain) = full_unix_pair_std();
    percore_engine::block_on(async move {
        let full = shared(full);
        percore_engine::spawn(
            async move { ops::send(&full, vec![3u8; 1 << 20], 0).await.0.map(drop) },
        )
        .detach(|_| {});
        let_kernel_work().await;
    });
    drain.set_nonblocking(true).unwrap();
    let mut sink = vec![0u8; 1 << 20];
    while matches!(std::io::Read::read(&mut drain, &mut sink), Ok(n) if n > 0) {}
    drop(drain);
    assert_eq!(percore_engine::open_fd_count().unwrap(), before);
}

fn full_unix_pair_std() -> (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
) {
    let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while a.write(&chunk).is_ok() {}
    a.set_nonblocking(false).unwrap();
    (a, b)
}

#[test]
fn a_runtime_reused_many_times_keeps_no_ring_or_eventfd() {
    let _serial = serial();
    let rt = percore_engine::Runtime::builder()
        .pin(false)
        .build()
        .unwrap();
    rt.block_on(async {});
    let before = percore_engine::open_fd_count().unwrap();
    for _ in 0..20 {
        rt.block_on(async {
            percore_engine::ops::nop().await.unwrap();
        });
        rt.run(|_| async {
            percore_engine::time::sleep(Duration::from_micros(10)).await;
        })
        .unwrap();
    }
    assert_eq!(
        percore_engine::open_fd_count().unwrap(),
        before,
        "each finished core must release its ring and eventfd"
    );
}

#[test]
fn a_result_sink_that_panics_at_the_runtime_s_end_still_lets_the_ring_shut_down() {
    let _serial = serial();
    let before = percore_engine::open_fd_count().unwrap();
    let (peer_a, mut peer_b) = std::os::unix::net::UnixStream::pair().unwrap();
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        percore_engine::block_on(async move {
            let sock = shared(peer_a);
            // Blocked in the kernel on a buffer it owns; cancelled at the end, where its
            // result sink panics.
            percore_engine::spawn(async move {
                ops::recv(&sock, Vec::with_capacity(4096), 0)
                    .await
                    .0
                    .map(drop)
            })
            .detach(|_| panic!("sink panicked"));
            let_kernel_work().await;
            assert!(in_flight() >= 1);
        });
    }));
    let payload = ended.expect_err("the sink's panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"sink panicked"));
    // The ring was shut down first: its fd is closed, and bytes sent now land nowhere (a ring
    // left alive would write them into the freed receive buffer; ASan runs this too).
    let _ = peer_b.write_all(b"after the end");
    drop(peer_b);
    assert_eq!(
        percore_engine::open_fd_count().unwrap(),
        before,
        "the ring and its eventfd are closed even though cancelling panicked"
    );
}

/// A future that outlives its core, holding an op the kernel finished with (an unwatched send
/// whose result nobody read): the core's end waits for the kernel's ops only, not for that
/// future, and the future is dropped off the core later without harm. Before, the shutdown
/// waited for the slab to empty, spent its whole limit and leaked every op's memory.
#[test]
#[allow(clippy::async_yields_async)] // the send is handed out of the core on purpose
fn a_core_ends_at_once_when_a_finished_op_outlives_it() {
    let _serial = serial();
    let started = std::time::Instant::now();
    let send = percore_engine::block_on(async {
        let ring = BufRing::new(8, 256).unwrap();
        let (fd, mut peer) = unix_pair();
        let (out, _out_peer) = unix_pair();
        let mut stream = ops::recv_multishot(&fd, &ring).unwrap();
        peer.write_all(b"reply").unwrap();
        let ops::Received::Data(chunk) = stream.next().await.unwrap() else {
            panic!("expected data");
        };
        let send = ops::send_chunk(&out, chunk)
            .start_unwatched()
            .unwrap()
            .expect("in flight");
        let_kernel_work().await;
        send
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the core's end took {:?}",
        started.elapsed()
    );
    drop(send);
}

/// Op futures that outlived their core (recvs the core's shutdown cancelled), polled and
/// dropped under the next core on the same thread, whose first ops have the same keys: the
/// polled one reads cancelled and gives its buffer back; neither touches the new core's ops,
/// which go on to complete.
#[test]
fn ops_that_outlived_their_core_touch_nothing_of_the_next() {
    let _serial = serial();
    let (fd_a, _peer_a) = unix_pair();
    let (fd_b1, mut peer_b1) = unix_pair();
    let (fd_b2, mut peer_b2) = unix_pair();
    let (polled, dropped) = percore_engine::block_on(async {
        let polled = poll_once(Box::pin(ops::recv(&fd_a, Vec::with_capacity(64), 0))).await;
        let dropped = poll_once(Box::pin(ops::recv(&fd_a, Vec::with_capacity(64), 0))).await;
        (polled, dropped)
    });
    percore_engine::block_on(async {
        let first = poll_once(Box::pin(ops::recv(&fd_b1, Vec::with_capacity(64), 0))).await;
        let second = poll_once(Box::pin(ops::recv(&fd_b2, Vec::with_capacity(64), 0))).await;
        let (res, buf) = move_on_after(Duration::from_secs(5), polled)
            .await
            .expect("the old op stayed pending under the new core");
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
        assert!(buf.capacity() >= 64, "the buffer comes back");
        drop(dropped);
        let_kernel_work().await;
        peer_b1.write_all(b"one").unwrap();
        peer_b2.write_all(b"two").unwrap();
        let (res, buf) = move_on_after(Duration::from_secs(5), first)
            .await
            .expect("the new core's first op never completed");
        assert_eq!(
            (res.unwrap(), &buf[..]),
            (3, &b"one"[..]),
            "the new core's first op"
        );
        let (res, buf) = move_on_after(Duration::from_secs(5), second)
            .await
            .expect("the new core's second op never completed");
        assert_eq!(
            (res.unwrap(), &buf[..]),
            (3, &b"two"[..]),
            "the new core's second op"
        );
    });
}
