//! Admission on a real loopback port: the cap on live conversations under a flood of distinct
//! (spoofed-like) source addresses with the process's memory measured, the rate cap, the hook,
//! tombstones.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::{ask, client, numbered_echo, recv_within, serve, wait_until};
use percore_engine::time::Instant;
use percore_net::udp::UdpSocket;
use percore_udp_conversation::{Admission, Conversation, ConversationService};

/// Resident memory of this process in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Holds every datagram it gets and never answers: a conversation that stays live.
async fn hoard(mut conv: Conversation) -> io::Result<()> {
    while conv.recv().await.is_some() {}
    Ok(())
}

/// Ends after its first datagram: every admitted peer leaves a tombstone.
async fn one_and_done(mut conv: Conversation) -> io::Result<()> {
    let _ = conv.recv().await;
    Ok(())
}

/// Sends one 512-byte datagram from each of `peers` fresh sources (sockets on 250 loopback
/// addresses, closed at once) and returns this process's VmRSS after each half, in KiB.
async fn flood(server: &common::Server, peers: u64) -> (u64, u64) {
    let payload = vec![0x42u8; 512];
    let mut halves = (0, 0);
    let start = server.stats().received;
    for sent in 0..peers {
        let ip = 1 + (sent % 250) as u8;
        let from: SocketAddr = (std::net::Ipv4Addr::new(127, 0, 0, ip), 0).into();
        let socket = UdpSocket::bind(from).unwrap();
        let (r, _) = socket.send_to(payload.clone(), server.addr).await;
        r.unwrap();
        if (sent + 1) % 100 == 0 {
            wait_until("the batch was received", || {
                server.stats().received > start + sent
            })
            .await;
        }
        if sent + 1 == peers / 2 {
            halves.0 = rss_kib();
        }
    }
    halves.1 = rss_kib();
    halves
}

#[test]
fn a_flood_through_tombstones_and_the_rate_cap_keeps_memory_flat() {
    const PEERS: u64 = 20_000;
    percore_engine::block_on(async {
        // Tombstones and the rate limiter are the per-peer state a flood can reach: every
        // admitted peer ends at once and leaves a tombstone (at most `max_conversations`).
        let service = ConversationService::new()
            .max_conversations(500)
            .max_new_per_second(5_000)
            .tombstone(Duration::from_secs(60));
        let server = serve(service, one_and_done);
        // A first flood fills the tombstones to their bound; a second must not grow memory.
        let _ = flood(&server, PEERS).await;
        let (mid, end) = flood(&server, PEERS).await;
        let stats = server.stats();
        eprintln!(
            "two floods of {PEERS}: created {}, over rate {}, tombstoned {}; VmRSS {mid} KiB \
             halfway through the second, {end} KiB at its end",
            stats.created, stats.dropped.over_rate, stats.dropped.tombstoned
        );
        assert!(
            stats.created > 500,
            "conversations came and went: {stats:?}"
        );
        assert_eq!(
            stats.received,
            stats.created + stats.dropped.total(),
            "every datagram delivered or counted: {stats:?}"
        );
        assert!(
            end.saturating_sub(mid) < 2 * 1024,
            "memory grew by {} KiB over 10,000 more sources",
            end.saturating_sub(mid)
        );
    });
}

#[test]
fn the_cap_holds_under_a_flood_of_distinct_sources_and_memory_stays_bounded() {
    const CAP: u64 = 500;
    const PEERS: u64 = 20_000;
    const BATCH: u64 = 100;
    percore_engine::block_on(async {
        let service = ConversationService::new()
            .max_conversations(CAP as usize)
            .idle_timeout(Duration::from_secs(60));
        let server = serve(service, hoard);
        let rss_before = rss_kib();
        let mut rss_peak = rss_before;
        let payload = vec![0x42u8; 512];
        let mut sent = 0u64;
        while sent < PEERS {
            // A batch of sources, each a fresh socket on one of 250 loopback addresses, closed
            // right after its one datagram (so few fds are open at once).
            for _ in 0..BATCH {
                let ip = 1 + (sent % 250) as u8;
                let from: SocketAddr = (std::net::Ipv4Addr::new(127, 0, 0, ip), 0).into();
                let socket = UdpSocket::bind(from).unwrap();
                let (r, _) = socket.send_to(payload.clone(), server.addr).await;
                r.unwrap();
                sent += 1;
            }
            wait_until("the batch was received", || server.stats().received >= sent).await;
            let stats = server.stats();
            assert!(stats.live <= CAP, "live {} over the cap", stats.live);
            rss_peak = rss_peak.max(rss_kib());
        }
        let stats = server.stats();
        eprintln!(
            "flood of {PEERS} sources, cap {CAP}: live {}, created {}, over cap {}; \
             VmRSS {rss_before} KiB before, {rss_peak} KiB peak",
            stats.live, stats.created, stats.dropped.over_cap
        );
        assert_eq!(stats.live, CAP);
        assert_eq!(stats.created, CAP);
        assert_eq!(stats.received, PEERS);
        // A source port can come back for a later socket on the same address (a known peer
        // then): every datagram is either delivered or dropped over the cap.
        assert!(stats.dropped.over_cap > PEERS - 2 * CAP);
        // Generous: 500 conversations of one 512-byte datagram each are well under 64 MiB.
        assert!(
            rss_peak - rss_before < 64 * 1024,
            "memory grew by {} KiB",
            rss_peak - rss_before
        );
    });
}

#[test]
fn new_conversations_per_second_are_capped() {
    percore_engine::block_on(async {
        let service = ConversationService::new().max_new_per_second(50);
        let server = serve(service, hoard);
        // Held open, so that 300 distinct source ports are 300 distinct peers.
        let peers: Vec<UdpSocket> = (0..300).map(|_| client()).collect();
        let t0 = Instant::now();
        for socket in &peers {
            let (r, _) = socket.send_to(b"hi".to_vec(), server.addr).await;
            r.unwrap();
        }
        wait_until("all received", || server.stats().received == 300).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let stats = server.stats();
        assert!(stats.dropped.over_rate > 0);
        assert_eq!(stats.created + stats.dropped.over_rate, 300);
        assert!(
            stats.created as f64 <= 50.0 + elapsed * 50.0 + 1.0,
            "{} created in {elapsed:.2} s",
            stats.created
        );
    });
}

#[test]
fn the_hook_sees_the_first_datagram_and_refusal_keeps_no_state() {
    percore_engine::block_on(async {
        let service = ConversationService::new().admit(|_peer, first| {
            if first.starts_with(b"hello") {
                Admission::Accept
            } else {
                Admission::Drop
            }
        });
        let server = serve(service, numbered_echo);
        let peer = client();
        let (r, _) = peer.send_to(b"junk".to_vec(), server.addr).await;
        r.unwrap();
        wait_until("refused", || server.stats().dropped.refused == 1).await;
        assert!(recv_within(&peer, Duration::from_millis(20))
            .await
            .is_none());
        assert_eq!(server.stats().live, 0);
        assert_eq!(ask(&peer, server.addr, b"hello").await, b"1:hello");
        assert_eq!(ask(&peer, server.addr, b"junk").await, b"2:junk");
    });
}

/// Answers one datagram, then ends.
async fn one_shot(mut conv: Conversation) -> io::Result<()> {
    if let Some(d) = conv.recv().await {
        conv.send(d).await?;
    }
    Ok(())
}

#[test]
fn a_tombstone_keeps_late_datagrams_from_starting_a_new_conversation() {
    percore_engine::block_on(async {
        let service = ConversationService::new().tombstone(Duration::from_secs(30));
        let server = serve(service, one_shot);
        let (early, other) = (client(), client());
        let (r, _) = early.send_to(b"a".to_vec(), server.addr).await;
        r.unwrap();
        // A second datagram may be queued before the one-shot handler ends: then it is
        // dropped unread, and counted.
        let (r, _) = early.send_to(b"unread?".to_vec(), server.addr).await;
        r.unwrap();
        let (reply, _) = recv_within(&early, Duration::from_secs(5)).await.unwrap();
        assert_eq!(reply, b"a");
        wait_until("ended", || server.stats().ended.completed == 1).await;
        let (r, _) = early.send_to(b"late".to_vec(), server.addr).await;
        r.unwrap();
        wait_until("tombstoned", || {
            let d = server.stats().dropped;
            d.tombstoned + d.unread == 2
        })
        .await;
        assert_eq!(server.stats().created, 1);
        assert_eq!(ask(&other, server.addr, b"b").await, b"b");
    });
}
