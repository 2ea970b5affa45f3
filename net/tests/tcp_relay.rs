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
/// either way or a direction ends: what a proxy's idle timeout compares.
#[test]
fn relay_both_progress_moves_with_the_bytes() {
    let upstream = std::net::TcpListener::bind(loopback()).unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let echo = std::thread::spawn(move || echo_until_closed(upstream.accept().unwrap().0));
    percore_engine::block_on(async move {
        let mut listener = TcpListener::bind(loopback()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (mut down, _) = listener.accept().await.unwrap();
        let mut up = TcpStream::connect(upstream_addr).await.unwrap();
        let mut both = std::pin::pin!(percore_net::relay_both(&mut down, &mut up));
        // Polls the proxy for a while (it does not end meanwhile); returns its progress then.
        async fn run_for(both: &mut std::pin::Pin<&mut percore_net::RelayBoth<'_>>) -> (u64, u64) {
            let ran =
                percore_engine::scope::move_on_after(Duration::from_millis(100), both.as_mut())
                    .await;
            assert!(ran.is_none(), "the proxy ended early: {ran:?}");
            both.progress()
        }
        let quiet = run_for(&mut both).await;
        assert_eq!(run_for(&mut both).await, quiet, "nothing moved");
        client.write_all(b"there and back").unwrap();
        let moved = run_for(&mut both).await;
        assert_ne!(moved.0, quiet.0, "the forward direction moved");
        assert_ne!(moved.1, quiet.1, "the echo came back");
        let mut back = [0u8; 14];
        client.read_exact(&mut back).unwrap();
        assert_eq!(run_for(&mut both).await, moved, "nothing moved since");
        // The client's end: the forward direction ends, the upstream sees it, and so on back.
        client.shutdown(Shutdown::Write).unwrap();
        let relayed = both.as_mut().await.unwrap();
        assert_eq!(relayed, (14, 14));
    });
    echo.join().unwrap();
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
