//! Zero-copy sends (`SEND_ZC`) above a stream's threshold, plain sends below: both paths carry
//! the bytes intact, and a write dropped mid zero-copy send leaks nothing and corrupts nothing
//! (the engine keeps the buffer until the kernel's notification). Its own test binary, because
//! it counts the process's open fds.

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use percore_net::tcp::{TcpListener, TcpStream};

/// The fd-counting test must not overlap with the other one.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

/// A percore stream and the std socket at the other end.
async fn pair() -> (TcpStream, std::net::TcpStream) {
    let mut listener = TcpListener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
    let (conn, _) = listener.accept().await.unwrap();
    (conn, client)
}

#[test]
fn writes_above_and_below_the_threshold_arrive_intact() {
    let _serial = serial();
    percore_engine::block_on(async {
        let zc = percore_engine::ring_features().send_zc;
        if !zc {
            eprintln!("skipped the zero-copy path: this kernel has no SEND_ZC");
        }
        for threshold in [None, Some(0), Some(64 * 1024)] {
            let (conn, mut client) = pair().await;
            conn.set_send_zc_threshold(threshold);
            assert_eq!(conn.send_zc_threshold(), threshold);
            let sizes = [100usize, 64 * 1024, 1 << 20];
            let total: usize = sizes.iter().sum();
            let reader = std::thread::spawn(move || {
                let mut got = vec![0u8; total];
                client.read_exact(&mut got).unwrap();
                got
            });
            let mut expected = Vec::new();
            for size in sizes {
                let data = pattern(size);
                expected.extend_from_slice(&data);
                let before = percore_engine::stats::current().zero_copy_sends;
                let (res, back) = conn.write_all(data).await;
                res.unwrap();
                assert!(back.is_empty());
                // The path taken, seen from the engine's counter of SEND_ZC submissions.
                let zero_copy = percore_engine::stats::current().zero_copy_sends - before;
                if zc && threshold.is_some_and(|t| size >= t) {
                    assert!(
                        zero_copy >= 1,
                        "{size} B, threshold {threshold:?}: no SEND_ZC"
                    );
                } else {
                    assert_eq!(zero_copy, 0, "{size} B, threshold {threshold:?}: SEND_ZC");
                }
            }
            let got = reader.join().unwrap();
            assert!(got == expected, "bytes differ with threshold {threshold:?}");
            if zc {
                assert_eq!(
                    conn.send_zc_threshold(),
                    threshold,
                    "zero-copy stayed on (the kernel took it)"
                );
            }
        }
    });
}

#[test]
fn a_write_dropped_mid_zero_copy_send_leaks_nothing_and_corrupts_nothing() {
    let _serial = serial();
    percore_engine::block_on(async {
        let fds = percore_engine::open_fd_count().unwrap();
        let ops = percore_engine::stats::current().ops_in_flight;
        let (conn, mut client) = pair().await;
        conn.set_send_zc_threshold(Some(0));
        // The peer does not read yet: 8 MiB cannot all be sent, so the send is in flight.
        let data = pattern(8 << 20);
        let write = percore_engine::scope::move_on_after(
            Duration::from_millis(50),
            conn.write_all(data.clone()),
        )
        .await;
        assert!(write.is_none(), "the write was dropped mid-way");
        // Memory freed early would likely be reused by these and show up in what is sent.
        let scribble: Vec<Vec<u8>> = (0..8).map(|_| vec![0xee; 1 << 20]).collect();
        drop(conn);
        let received = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        // The engine must keep running to finish the cancelled send and close the fd.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !received.is_finished() {
            assert!(Instant::now() < deadline, "the peer never saw the end");
            percore_engine::time::sleep(Duration::from_millis(1)).await;
        }
        let got = received.join().unwrap();
        drop(scribble);
        assert!(!got.is_empty() && got.len() <= data.len());
        assert!(
            got[..] == data[..got.len()],
            "what arrived is a prefix of what was written"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = (
                percore_engine::open_fd_count().unwrap(),
                percore_engine::stats::current().ops_in_flight,
            );
            if now == (fds, ops) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "did not settle: {now:?}, baseline {:?}",
                (fds, ops)
            );
            percore_engine::time::sleep(Duration::from_millis(1)).await;
        }
    });
}
