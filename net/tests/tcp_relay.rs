//! Relays (`relay_back`, `relay_to`, `ops::relay`): the driver sends each received chunk on
//! from its ring buffer. Echo of 1 B .. 16 MiB, a proxy both ways, chunks received before the
//! relay started going first, a destination that does not read (the receive pauses; nothing is
//! lost), a dropped relay, a reset peer, a ring too small for the load (waited out), and a core
//! that ends with relays in flight. The suite runs under ASan in CI.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use percore_engine::buf::ring::BufRing;
use percore_engine::scope::move_on_after;
use percore_engine::time::sleep;
use percore_net::tcp::{TcpListener, TcpStream};

mod support;
use support::{
    assert_peer_gone, echo_until_closed, eventually, expect_refused, flood, loopback, tcp_pair,
};

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i + seed) * 31 % 251) as u8).collect()
}

fn ops_in_flight() -> u64 {
    percore_engine::stats::current().ops_in_flight
}

/// Writes `payload` from a second thread while this one reads `payload.len()` bytes back.
fn exchange(client: &mut std::net::TcpStream, payload: &[u8]) -> Vec<u8> {
    let mut writer = client.try_clone().unwrap();
    let sent = payload.to_vec();
    let writing = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut got = vec![0u8; payload.len()];
    client.read_exact(&mut got).unwrap();
    writing.join().unwrap();
    got
}

/// Every size comes back whole and in order, and the relay ends with the peer's end, counting
/// every byte; no ring buffer and no op is left.
#[test]
fn relay_back_echoes_1_byte_to_16_mib_and_counts_them() {
    percore_engine::block_on(async {
        let ring = BufRing::core_default().unwrap();
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let sizes = [1usize, 100, 4096, 65_537, 1 << 20, 16 << 20];
        let client = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            for (seed, size) in sizes.into_iter().enumerate() {
                let payload = pattern(size, seed);
                assert!(
                    exchange(&mut client, &payload) == payload,
                    "{size} B differ"
                );
            }
            client.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "{} bytes after the last echo", rest.len());
        });
        let (mut conn, _) = listener.accept().await.unwrap();
        let ops_base = ops_in_flight();
        let relayed = conn.relay_back().unwrap().await.unwrap();
        assert_eq!(relayed, sizes.iter().sum::<usize>() as u64);
        assert_eq!(ring.lent(), 0, "every buffer back");
        assert_eq!(ops_in_flight(), ops_base, "the relay's slot is gone");
        drop(conn);
        eventually("the client's end", || client.is_finished()).await;
        client.join().unwrap();
    });
}

/// A proxy (`relay_both`): what the client sends goes to an upstream echo server through two
/// relays, and back; each end is passed on with a half-close, and both relays end.
#[test]
fn relay_to_proxies_both_ways() {
    let upstream = std::net::TcpListener::bind(loopback()).unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let echo = std::thread::spawn(move || echo_until_closed(upstream.accept().unwrap().0));
    percore_engine::block_on(async move {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let payload = pattern(3 << 20, 7);
        let expected = payload.clone();
        let client = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            let got = exchange(&mut client, &payload);
            client.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            (got, rest)
        });
        let (mut down, _) = listener.accept().await.unwrap();
        let mut up = TcpStream::connect(upstream_addr).await.unwrap();
        // Forward ends with the client's half-close, which goes on to upstream; upstream then
        // closes, and that end goes back to the client.
        let relayed = percore_net::relay_both(&mut down, &mut up).await.unwrap();
        assert_eq!(relayed, (3 << 20, 3 << 20));
        eventually("the client's end", || client.is_finished()).await;
        let (got, rest) = client.join().unwrap();
        assert!(got == expected, "the proxied echo differs");
        assert!(rest.is_empty());
    });
    echo.join().unwrap();
}

/// `RelayBoth::progress` reads the same while nothing moves, and changes when bytes move
/// either way and when a direction ends: what a proxy's idle timeout compares. The client
/// runs on its own thread (the core's thread must stay free to relay).
#[test]
fn relay_both_progress_moves_with_the_bytes() {
    let upstream = std::net::TcpListener::bind(loopback()).unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let echo = std::thread::spawn(move || echo_until_closed(upstream.accept().unwrap().0));
    percore_engine::block_on(async move {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            go_rx.recv().unwrap();
            client.write_all(b"there and back").unwrap();
            let mut back = [0u8; 14];
            client.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"there and back");
            back_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            rest
        });
        let (mut down, _) = listener.accept().await.unwrap();
        let mut up = TcpStream::connect(upstream_addr).await.unwrap();
        let mut both = std::pin::pin!(percore_net::relay_both(&mut down, &mut up));
        // Runs the proxy for a moment (it must not end meanwhile).
        async fn run_a_while(both: &mut std::pin::Pin<&mut percore_net::RelayBoth<'_>>) {
            let ran = move_on_after(Duration::from_millis(20), both.as_mut()).await;
            assert!(ran.is_none(), "the proxy ended early: {ran:?}");
        }
        run_a_while(&mut both).await;
        let quiet = both.progress();
        run_a_while(&mut both).await;
        assert_eq!(both.progress(), quiet, "nothing moved");
        go_tx.send(()).unwrap();
        // Both ways: there, then the echo back (bounded: the client thread reads it back).
        while back_rx.try_recv().is_err() {
            run_a_while(&mut both).await;
        }
        let moved = both.progress();
        assert_ne!(moved.0, quiet.0, "the forward direction moved");
        assert_ne!(moved.1, quiet.1, "the echo came back");
        // The client's end: the forward direction ends, the upstream sees it, and so on back.
        go_tx.send(()).unwrap();
        let relayed = both.as_mut().await.unwrap();
        assert_eq!(relayed, (14, 14));
        assert!(client.join().unwrap().is_empty());
    });
    echo.join().unwrap();
}

/// An upstream that answers early (an HTTP server's 413): on its own thread, it reads the
/// first KiB of a request, sends `answer`, ends its side, and lingers, reading and dropping
/// the request's rest until the proxy's kernel has the whole answer (a reset would throw away
/// what this socket had not sent); then it closes, which resets the connection (the rest of
/// the request is unread), and says so on `closed`.
fn answer_early_and_close(
    upstream: std::net::TcpListener,
    answer: Vec<u8>,
    closed: Option<std::sync::mpsc::Sender<()>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut some = [0u8; 1024];
        s.read_exact(&mut some).unwrap();
        s.write_all(&answer).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let queue = percore_engine::fd::SharedFd::new(s.try_clone().unwrap().into());
        let mut sink = vec![0u8; 64 * 1024];
        let t0 = std::time::Instant::now();
        while queue.unsent_bytes().unwrap() > 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the proxy never took the answer"
            );
            let _ = s.read(&mut sink);
        }
        drop((queue, s));
        if let Some(closed) = closed {
            closed.send(()).unwrap();
        }
    })
}

/// An upstream on loopback that answers early and closes (see [`answer_early_and_close`]):
/// its address, word of its close, and its thread.
fn early_upstream(
    answer: Vec<u8>,
) -> (
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<()>,
    std::thread::JoinHandle<()>,
) {
    let upstream = std::net::TcpListener::bind(loopback()).unwrap();
    let addr = upstream.local_addr().unwrap();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
    (
        addr,
        closed_rx,
        answer_early_and_close(upstream, answer, Some(closed_tx)),
    )
}

/// Runs a proxy's two directions until they end, within `limit` (`waited`: what it means if
/// they do not), and returns their error, which must be a refusal: one direction's bytes could
/// not all go.
async fn ends_refused(
    limit: Duration,
    both: percore_net::RelayBoth<'_>,
    waited: &str,
) -> std::io::Error {
    let e = percore_engine::scope::fail_after(limit, both)
        .await
        .unwrap_or_else(|_| panic!("{waited}"))
        .expect_err("the bytes could not all go, and yet the proxy succeeded");
    assert!(percore_engine::ops::is_refusal(&e), "{e}");
    e
}

/// An upstream that answers before it read the whole request and closes (an HTTP server's
/// early 413) while its client, still sending, has not read the answer yet: the client's
/// direction fails on sending, the answer the upstream sent before it closed reaches the
/// client, whole, then its end (with a lingering close: see `TcpStream::linger`), and the
/// proxy fails with the refusal. (On loopback the answer has usually reached the client's
/// socket before the refusal; the test below forces the other order.)
#[test]
fn relay_both_delivers_an_early_answer_of_an_upstream_that_closed() {
    const ANSWER: usize = 300_000;
    let (upstream_addr, closed_rx, early) = early_upstream(pattern(ANSWER, 5));
    percore_engine::block_on(async move {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let client = std::thread::spawn(move || {
            let client = std::net::TcpStream::connect(addr).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            // Sending without end; the answer is read only once the upstream is gone.
            let mut writer = client.try_clone().unwrap();
            std::thread::spawn(move || {
                let chunk = vec![1u8; 16 * 1024];
                while writer.write_all(&chunk).is_ok() {}
            });
            closed_rx.recv().unwrap();
            let mut got = Vec::new();
            let end = (&client).read_to_end(&mut got);
            // Done: the sending stops too (the proxy drains it until then).
            client.shutdown(Shutdown::Both).unwrap();
            (got, end.map_err(|e| e.kind()))
        });
        let (mut down, _) = listener.accept().await.unwrap();
        let mut up = TcpStream::connect(upstream_addr).await.unwrap();
        let e = ends_refused(
            Duration::from_secs(10),
            percore_net::relay_both(&mut down, &mut up),
            "the proxy outlived its upstream",
        )
        .await;
        assert_peer_gone(&e);
        // Closed at once, the client's socket would reset with the client's bytes unread,
        // and the reset would throw away the answer's last bytes on their way.
        drop(up);
        down.linger(Duration::from_secs(10)).await.unwrap();
        drop(down);
        eventually("the client read its answer", || client.is_finished()).await;
        let (got, end) = client.join().unwrap();
        assert_eq!(end, Ok(ANSWER), "the whole answer, then the upstream's end");
        assert!(got == pattern(ANSWER, 5), "the answer, in order");
    });
    early.join().unwrap();
}

/// The same while the answer cannot all reach the client before the refusal: the client is
/// a Unix socket with a small buffer that reads only once the upstream is gone, so most of
/// the answer waits in the proxy (its relay's queue, the upstream socket) when the client's
/// direction fails. That direction stops; the other goes on and delivers it all.
#[test]
fn relay_both_finishes_the_other_direction_after_a_refusal() {
    const ANSWER: usize = 200_000;
    let (upstream_addr, closed_rx, early) = early_upstream(pattern(ANSWER, 9));
    let (client, proxy_end) = std::os::unix::net::UnixStream::pair().unwrap();
    // The proxy's end holds little in flight: the answer waits in the proxy.
    socket2::SockRef::from(&proxy_end)
        .set_send_buffer_size(4096)
        .unwrap();
    let client = std::thread::spawn(move || {
        let mut writer = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![1u8; 16 * 1024];
            while writer.write_all(&chunk).is_ok() {}
        });
        closed_rx.recv().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        // To the end, or the reset that a close with the client's bytes unread leaves after
        // the data (a Unix socket keeps what it delivered).
        loop {
            match (&client).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the client's read failed: {e}"),
            }
        }
        // Done: the sending stops too (the proxy drains it until then).
        let _ = client.shutdown(Shutdown::Both);
        got
    });
    percore_engine::block_on(async move {
        let mut down = percore_net::unix::UnixStream::from_std(proxy_end);
        let mut up = TcpStream::connect(upstream_addr).await.unwrap();
        ends_refused(
            Duration::from_secs(10),
            percore_net::relay_both(&mut down, &mut up),
            "the proxy outlived its upstream",
        )
        .await;
        // All of the answer is in the client's socket by now (the Unix socket keeps it past
        // the close).
    });
    let got = client.join().unwrap();
    assert_eq!(got.len(), ANSWER, "the whole answer");
    assert!(got == pattern(ANSWER, 9), "the answer, in order");
    early.join().unwrap();
}

/// After a refusal the other direction has a bounded time: here the client never reads the
/// answer (its socket holds little), so the answer cannot all go; the proxy still ends at
/// its refusal grace, with the refusal, rather than wait for good.
#[test]
fn relay_both_ends_at_its_refusal_grace() {
    let upstream = std::net::TcpListener::bind(loopback()).unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let early = answer_early_and_close(upstream, pattern(200_000, 3), None);
    let (client, proxy_end) = std::os::unix::net::UnixStream::pair().unwrap();
    socket2::SockRef::from(&proxy_end)
        .set_send_buffer_size(4096)
        .unwrap();
    // Sends without end and never reads.
    let mut writer = client.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let chunk = vec![1u8; 16 * 1024];
        while writer.write_all(&chunk).is_ok() {}
    });
    percore_engine::block_on(async move {
        let mut down = percore_net::unix::UnixStream::from_std(proxy_end);
        let mut up = TcpStream::connect(upstream_addr).await.unwrap();
        let t0 = std::time::Instant::now();
        ends_refused(
            Duration::from_secs(10),
            percore_net::relay_both(&mut down, &mut up).refusal_grace(Duration::from_millis(300)),
            "the proxy waited past its refusal grace",
        )
        .await;
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    });
    drop(client);
    early.join().unwrap();
    sending.join().unwrap();
}

/// A client that sends its whole request before it reads (an upload that got an early
/// answer): after the refusal the proxy reads and drops the rest of the request, so the
/// client finishes sending and reads its answer, and the proxy ends when the client closes
/// its side, long before its refusal grace (a minute here). Without the drain the client's
/// send would wait for the grace (32 MiB is more than every socket buffer on the way holds).
#[test]
fn relay_both_drains_the_refused_side_so_its_peer_gets_to_read() {
    const REQUEST: usize = 32 << 20;
    const ANSWER: usize = 100_000;
    let (upstream_addr, _closed, early) = early_upstream(pattern(ANSWER, 7));
    percore_engine::block_on(async move {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let client = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            client
                .set_write_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            client.write_all(&vec![1u8; REQUEST]).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        let (mut down, _) = listener.accept().await.unwrap();
        let mut up = TcpStream::connect(upstream_addr).await.unwrap();
        let ops_base = ops_in_flight();
        ends_refused(
            Duration::from_secs(30),
            percore_net::relay_both(&mut down, &mut up).refusal_grace(Duration::from_secs(60)),
            "the proxy waited for its refusal grace: the client's request was not drained",
        )
        .await;
        eventually("the relays' and the drain's slots", || {
            ops_in_flight() == ops_base
        })
        .await;
        let ring = BufRing::core_default().unwrap();
        eventually("every buffer back", || ring.lent() == 0).await;
        drop((up, down));
        eventually("the client read its answer", || client.is_finished()).await;
        let got = client.join().unwrap();
        assert_eq!(got.len(), ANSWER, "the whole answer, then the end");
        assert!(got == pattern(ANSWER, 7), "the answer, in order");
    });
    early.join().unwrap();
}

/// A proxy whose upstream resets mid-way: `relay_both` ends with the error, and the client's
/// side is left to be closed (it is, when the streams are dropped).
#[test]
fn relay_both_ends_with_an_upstreams_reset() {
    let upstream = std::net::TcpListener::bind(loopback()).unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let resetting = std::thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        let mut first = [0u8; 4];
        s.read_exact(&mut first).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    percore_engine::block_on(async move {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        client.write_all(b"ping and more").unwrap();
        let (mut down, _) = listener.accept().await.unwrap();
        let mut up = TcpStream::connect(upstream_addr).await.unwrap();
        let e = percore_engine::scope::fail_after(
            Duration::from_secs(5),
            percore_net::relay_both(&mut down, &mut up),
        )
        .await
        .expect("the proxy outlived its upstream's reset")
        .expect_err("a proxy to a reset upstream succeeded");
        assert_peer_gone(&e);
        drop((down, up));
        // The client sees its connection end (closed or reset), not a hang; read from a
        // thread, while the core runs the relays' cancels to their end.
        let reading = std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = client.read_to_end(&mut rest);
        });
        eventually("the client's connection closed", || reading.is_finished()).await;
    });
    resetting.join().unwrap();
}

/// Chunks the stream's receive took before the relay started (nobody read them) are relayed
/// first, in order, then the rest.
#[test]
fn chunks_received_before_the_relay_go_first() {
    percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let payload = pattern(40_000, 3);
        let expected = payload.clone();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            // Apart, so that each lands in its own chunk.
            for part in payload[..12_000].chunks(1000) {
                client.write_all(part).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            go_rx.recv().unwrap();
            let rest = payload[12_000..].to_vec();
            let mut writer = client.try_clone().unwrap();
            let writing = std::thread::spawn(move || writer.write_all(&rest).unwrap());
            let mut got = vec![0u8; payload.len()];
            client.read_exact(&mut got).unwrap();
            writing.join().unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            got
        });
        let (mut conn, _) = listener.accept().await.unwrap();
        // The first chunk is read and echoed by hand; the receive stays armed and takes the
        // next ones, which nobody reads before the relay.
        let first = conn.recv_chunk().await.unwrap().unwrap();
        let first_len = first.len();
        conn.send_chunk(first).await.unwrap();
        sleep(Duration::from_millis(100)).await;
        go_tx.send(()).unwrap();
        let relayed = conn.relay_back().unwrap().await.unwrap();
        assert_eq!(relayed as usize + first_len, expected.len());
        eventually("the client's end", || client.is_finished()).await;
        assert!(
            client.join().unwrap() == expected,
            "bytes lost or reordered"
        );
    });
}

/// A peer that sends and does not read: the relay's sends wait, its receive pauses, and it
/// holds a bounded share of the ring. When the peer reads, every byte arrives, in order.
#[test]
fn a_destination_that_does_not_read_pauses_the_receive_and_loses_nothing() {
    percore_engine::block_on(async {
        let ring = BufRing::core_default().unwrap();
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let payload = pattern(8 << 20, 11);
        let expected = payload.clone();
        let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            let mut writer = client.try_clone().unwrap();
            let writing = std::thread::spawn(move || {
                writer.write_all(&payload).unwrap();
                writer.shutdown(Shutdown::Write).unwrap();
            });
            read_rx.recv().unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            writing.join().unwrap();
            got
        });
        let (mut conn, _) = listener.accept().await.unwrap();
        let relayed = {
            let mut relay = std::pin::pin!(conn.relay_back().unwrap());
            // The relay runs on the driver; this task only looks at the ring meanwhile.
            let watching = std::pin::pin!(async {
                let mut most_lent = 0;
                for _ in 0..300 {
                    most_lent = most_lent.max(ring.lent());
                    sleep(Duration::from_millis(1)).await;
                }
                most_lent
            });
            let most_lent = match percore_engine::first(relay.as_mut(), watching).await {
                percore_engine::First::B(most_lent, _) => most_lent,
                percore_engine::First::A(..) => {
                    panic!("the relay ended with a peer that does not read")
                }
            };
            // The limit is a sixteenth of the ring (64 of 2048), plus the chunk in flight and what
            // the kernel delivers before the pause's cancel lands (a batch of its receive retries:
            // ~66 more seen here): well short of the ring.
            assert!(
                (1..=256).contains(&most_lent),
                "{most_lent} of 2048 ring buffers held by one relay"
            );
            read_tx.send(()).unwrap();
            relay.await.unwrap()
        };
        assert_eq!(relayed, 8 << 20);
        // The peer reads until the server closes.
        drop(conn);
        eventually("the client's end", || client.is_finished()).await;
        assert!(
            client.join().unwrap() == expected,
            "bytes lost or reordered"
        );
        assert_eq!(ring.lent(), 0);
    });
}

/// A relay dropped while its sends wait for a peer that does not read: its buffers come back,
/// its slot goes, and the socket closes once the stream is dropped too (the peer's blocked
/// write fails).
#[test]
fn a_dropped_relay_leaks_nothing() {
    percore_engine::block_on(async {
        let ring = BufRing::core_default().unwrap();
        let (mut conn, client, _listener) = tcp_pair().await;
        let ops_base = ops_in_flight();
        let writing = flood(&client);
        let relay = conn.relay_back().unwrap();
        assert!(move_on_after(Duration::from_millis(200), relay)
            .await
            .is_none());
        eventually("the dropped relay's buffers", || ring.lent() == 0).await;
        eventually("the dropped relay's slot", || ops_in_flight() == ops_base).await;
        drop(conn);
        expect_refused(writing).await;
        drop(client);
    });
}

/// A peer that resets ends the relay with an error, not a panic nor a hang.
#[test]
fn a_reset_peer_ends_the_relay_with_an_error() {
    percore_engine::block_on(async {
        let ring = BufRing::core_default().unwrap();
        let (mut conn, mut client, _listener) = tcp_pair().await;
        let relay = conn.relay_back().unwrap();
        let resetting = std::thread::spawn(move || {
            client.write_all(b"ping").unwrap();
            let mut back = [0u8; 4];
            client.read_exact(&mut back).unwrap();
            socket2::SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(client);
        });
        let e = relay.await.expect_err("a reset peer's relay succeeded");
        assert_peer_gone(&e);
        resetting.join().unwrap();
        assert_eq!(ring.lent(), 0);
    });
}

/// Eight relays on a ring of four 512-byte buffers: the ring runs dry again and again, each
/// relay waits it out and re-arms, and every byte comes back; the ring is whole at the end.
#[test]
fn relays_wait_out_a_dry_ring() {
    percore_engine::block_on(async {
        let ring = BufRing::new(4, 512).unwrap();
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let clients: Vec<_> = (0..8)
            .map(|seed| {
                std::thread::spawn(move || {
                    let mut client = std::net::TcpStream::connect(addr).unwrap();
                    let payload = pattern(200_000, seed);
                    let got = exchange(&mut client, &payload);
                    client.shutdown(Shutdown::Write).unwrap();
                    got == payload
                })
            })
            .collect();
        let mut relays = Vec::new();
        for _ in 0..8 {
            let (conn, _) = listener.accept().await.unwrap();
            let relay = percore_engine::ops::relay(conn.fd(), &ring, conn.fd(), 2).unwrap();
            relays.push(percore_engine::spawn(async move {
                let _conn = conn;
                relay.await
            }));
        }
        for relay in relays {
            assert_eq!(relay.await.unwrap().unwrap(), 200_000);
        }
        for client in clients {
            eventually("a client's end", || client.is_finished()).await;
            assert!(client.join().unwrap(), "an echo through a dry ring differs");
        }
        assert_eq!(ring.lent(), 0);
    });
}

/// A core that ends with relays in flight (one waiting for its peer, one whose sends wait for
/// a peer that does not read): the shutdown cancels both requests of each and gives every
/// buffer back (ASan sees any leak or use after free).
#[test]
fn a_core_ends_with_relays_in_flight() {
    let clients = percore_engine::block_on(async {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let quiet = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (mut a, _) = listener.accept().await.unwrap();
        let flooding = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (mut b, _) = listener.accept().await.unwrap();
        // Writes (from its own thread: the core must run meanwhile) and never reads.
        drop(flood(&flooding));
        percore_engine::spawn(async move {
            let relay_a = a.relay_back().unwrap();
            let _ = relay_a.await;
        })
        .detach(|_| {});
        percore_engine::spawn(async move {
            let relay_b = b.relay_back().unwrap();
            let _ = relay_b.await;
        })
        .detach(|_| {});
        sleep(Duration::from_millis(50)).await;
        (quiet, flooding)
    });
    drop(clients);
}

/// A peer that floods without reading, then resets: the relay has chunks waiting and a send in
/// flight when the reset comes. It ends with an error; every buffer comes back and its slot
/// goes.
#[test]
fn a_reset_with_chunks_waiting_returns_every_buffer() {
    percore_engine::block_on(async {
        let ring = BufRing::core_default().unwrap();
        let (mut conn, client, _listener) = tcp_pair().await;
        let ops_base = ops_in_flight();
        let writing = flood(&client);
        let outcome = {
            let mut relay = std::pin::pin!(conn.relay_back().unwrap());
            let held = std::pin::pin!(async {
                eventually("the relay holds waiting chunks", || ring.lent() > 8).await;
            });
            if let percore_engine::First::A(..) = percore_engine::first(relay.as_mut(), held).await
            {
                panic!("the relay ended with a peer that does not read");
            }
            socket2::SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            // The flooding thread's write fails once its socket is shut; the last close then
            // sends the reset (with no linger).
            client.shutdown(Shutdown::Both).unwrap();
            drop(writing.join());
            drop(client);
            percore_engine::scope::fail_after(Duration::from_secs(5), relay)
                .await
                .expect("the relay outlived its peer's reset")
        };
        let e = outcome.expect_err("a reset peer's relay succeeded");
        assert_peer_gone(&e);
        eventually("the relay's buffers", || ring.lent() == 0).await;
        assert_eq!(ops_in_flight(), ops_base);
    });
}

/// Churn: 200 connections relayed at once, each sending a different amount, then closing
/// cleanly (every byte must come back) or resetting mid-way (its relay ends with an error). Every relay ends, no buffer stays lent, no op stays in flight, no fd stays open.
#[test]
fn many_relays_end_cleanly_or_by_reset_and_leave_nothing() {
    percore_engine::block_on(async {
        let ring = BufRing::core_default().unwrap();
        let fds_before = percore_engine::open_fd_count().unwrap();
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let ops_base = ops_in_flight();
        let clients = std::thread::spawn(move || {
            let peers: Vec<_> = (0..200usize)
                .map(|i| std::net::TcpStream::connect(addr).map(|s| (i, s)).unwrap())
                .collect();
            let handles: Vec<_> = peers
                .into_iter()
                .map(|(i, mut s)| {
                    std::thread::spawn(move || {
                        let payload = pattern(1 + i * 997 % 50_000, i);
                        if i % 3 == 0 {
                            // Half of it, then a reset.
                            s.write_all(&payload[..payload.len() / 2]).unwrap();
                            socket2::SockRef::from(&s)
                                .set_linger(Some(Duration::ZERO))
                                .unwrap();
                            return true;
                        }
                        let ok = exchange(&mut s, &payload) == payload;
                        s.shutdown(Shutdown::Write).unwrap();
                        let mut rest = Vec::new();
                        s.read_to_end(&mut rest).unwrap();
                        ok && rest.is_empty()
                    })
                })
                .collect();
            handles.into_iter().all(|h| h.join().unwrap())
        });
        // A connection reset while it waits in the backlog is never handed out (the listener
        // counts it as aborted): accept until the clients are done and no more come.
        let mut relays = Vec::new();
        while relays.len() < 200 {
            let Some(accepted) = move_on_after(Duration::from_secs(1), listener.accept()).await
            else {
                if clients.is_finished() {
                    break;
                }
                continue;
            };
            let (mut conn, _) = accepted.unwrap();
            relays.push(percore_engine::spawn(async move {
                let outcome = conn.relay_back().unwrap().await;
                outcome.map_err(|e| e.kind())
            }));
        }
        let accepted = relays.len();
        let (mut ok, mut reset) = (0, 0);
        for relay in relays {
            match relay.await.unwrap() {
                Ok(_) => ok += 1,
                Err(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => {
                    reset += 1
                }
                Err(other) => panic!("a relay failed with {other:?}"),
            }
        }
        eventually("the clients' end", || clients.is_finished()).await;
        assert!(clients.join().unwrap(), "an echo differs");
        // Every clean client's relay ends cleanly; a resetting one's ends by the reset (or is
        // never accepted, if the reset came first).
        assert!(
            ok >= 133 && ok + reset == accepted,
            "{ok} ended cleanly, {reset} reset, of {accepted}"
        );
        drop(listener);
        assert_eq!(ring.lent(), 0);
        eventually(
            &format!("every relay's op ({} of {ops_base})", ops_in_flight()),
            || ops_in_flight() <= ops_base,
        )
        .await;
        eventually("every socket closed", || {
            percore_engine::open_fd_count().unwrap() <= fds_before
        })
        .await;
    });
}
