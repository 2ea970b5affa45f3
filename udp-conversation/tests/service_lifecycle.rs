//! Conversations coming and going on a real loopback port: idle expiry, thousands of peers,
//! inbox overflow, datagrams over the size limit.

mod common;

use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::{ask, client, numbered, numbered_echo, recv_within, serve, wait_until};
use percore_engine::sync::Event;
use percore_engine::time::sleep;
use percore_net::udp::UdpSocket;
use percore_udp_conversation::{Conversation, ConversationService, OverflowPolicy};

#[test]
fn an_idle_conversation_expires_and_the_peer_then_starts_a_fresh_one() {
    percore_engine::block_on(async {
        let service = ConversationService::new().idle_timeout(Duration::from_millis(150));
        let server = serve(service, numbered_echo);
        let peer = client();
        // Datagrams 60 ms apart for 600 ms: each resets the idle timer, so the state lives on.
        for k in 1..=10u64 {
            assert_eq!(ask(&peer, server.addr, b"a").await, numbered(k, b"a"));
            sleep(Duration::from_millis(60)).await;
        }
        assert_eq!(server.stats().ended.total(), 0);
        wait_until("idle expiry", || server.stats().ended.idle_timeout == 1).await;
        assert_eq!(server.stats().live, 0);
        assert_eq!(ask(&peer, server.addr, b"c").await, b"1:c");
        assert_eq!(server.stats().created, 2);
    });
}

/// Answers two datagrams, then ends.
async fn two_and_done(mut conv: Conversation) -> io::Result<()> {
    for k in 1..=2 {
        let Some(d) = conv.recv().await else {
            return Ok(());
        };
        conv.send(numbered(k, &d)).await?;
    }
    Ok(())
}

#[test]
fn ten_thousand_peers_come_and_go() {
    const PEERS: usize = 10_000;
    const BATCH: usize = 250;
    percore_engine::block_on(async {
        let server = serve(ConversationService::new(), two_and_done);
        for _ in 0..PEERS / BATCH {
            let peers: Vec<UdpSocket> = (0..BATCH).map(|_| client()).collect();
            for round in 1..=2u64 {
                for p in &peers {
                    let (r, _) = p.send_to(b"x".to_vec(), server.addr).await;
                    r.unwrap();
                }
                for p in &peers {
                    let (reply, _) = recv_within(p, Duration::from_secs(5)).await.unwrap();
                    assert_eq!(reply, numbered(round, b"x"));
                }
            }
        }
        wait_until("every conversation ended", || {
            server.stats().ended.completed == PEERS as u64
        })
        .await;
        let stats = server.stats();
        assert_eq!((stats.live, stats.created), (0, PEERS as u64));
        assert_eq!(stats.dropped.total(), 0);
    });
}

/// Waits for `go`, then answers what is in its inbox, numbered.
fn held_until(
    go: Rc<Event>,
) -> impl Fn(Conversation) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<()>>>> {
    move |conv| {
        let go = go.clone();
        Box::pin(async move {
            go.wait().await;
            numbered_echo(conv).await
        })
    }
}

#[test]
fn a_full_inbox_drops_and_counts_by_its_policy() {
    for (policy, kept) in [
        (OverflowPolicy::DropNewest, 0..4u8),
        (OverflowPolicy::DropOldest, 6..10u8),
    ] {
        percore_engine::block_on(async {
            let go = Rc::new(Event::new());
            let service = ConversationService::new()
                .inbox_capacity(4)
                .overflow_policy(policy);
            let server = serve(service, held_until(go.clone()));
            let peer = client();
            for i in 0..10u8 {
                let (r, _) = peer.send_to(vec![i], server.addr).await;
                r.unwrap();
            }
            wait_until("all received", || server.stats().received == 10).await;
            assert_eq!(server.stats().dropped.inbox_full, 6);
            go.set();
            for (k, i) in kept.clone().enumerate() {
                let (reply, _) = recv_within(&peer, Duration::from_secs(5)).await.unwrap();
                assert_eq!(reply, numbered(k as u64 + 1, &[i]), "{policy:?}");
            }
            assert!(recv_within(&peer, Duration::from_millis(20))
                .await
                .is_none());
        });
    }
}

#[test]
fn a_datagram_over_the_size_limit_is_dropped_and_counted() {
    percore_engine::block_on(async {
        let service = ConversationService::new().max_datagram(100);
        let server = serve(service, numbered_echo);
        let peer = client();
        let (r, _) = peer.send_to(vec![1u8; 101], server.addr).await;
        r.unwrap();
        wait_until("dropped", || server.stats().dropped.truncated == 1).await;
        assert_eq!(server.stats().created, 0);
        assert_eq!(
            ask(&peer, server.addr, &[2u8; 100]).await,
            numbered(1, &[2u8; 100])
        );
    });
}
