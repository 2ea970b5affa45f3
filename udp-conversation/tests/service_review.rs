//! Ends, failures and limits at their edges: failures of forked tasks that race the handler's
//! return, a failure policy that panics, a service dropped with conversations live, the byte
//! budget of a core's inboxes, rate tokens left to the peers the hook accepts, a client's
//! request that never takes a late reply to an earlier request for its own, and an idle
//! timeout that is never early.

mod common;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::{ask, client, numbered, numbered_echo, serve, wait_until};
use percore_engine::sync::Event;
use percore_engine::time::sleep;
use percore_udp_conversation::{
    Admission, ClientConversation, Conversation, ConversationService, Failure,
};

/// Forks two children that fail as soon as they run, then returns `Ok` in the same turn they
/// fail in (it waits for the event the second child sets just before failing).
async fn children_fail_as_handler_returns(mut conv: Conversation) -> io::Result<()> {
    let _ = conv.recv().await;
    let done = Rc::new(Event::new());
    conv.fork_child(async { Err::<(), _>("first child") });
    let d = done.clone();
    conv.fork_child(async move {
        d.set();
        Err::<(), _>("second child")
    });
    done.wait().await;
    Ok(())
}

#[test]
fn every_forked_failure_is_reported_even_when_the_handler_returns_in_that_turn() {
    percore_engine::block_on(async {
        let seen: Rc<RefCell<Vec<Failure>>> = Rc::default();
        let s = seen.clone();
        let service =
            ConversationService::new().on_failure(move |_, _, f| s.borrow_mut().push(f.clone()));
        let server = serve(service, children_fail_as_handler_returns);
        let peer = client();
        let (sent, _) = peer.send_to(b"go".to_vec(), server.addr).await;
        sent.unwrap();
        wait_until("the conversation ended", || {
            server.stats().ended.total() == 1
        })
        .await;
        let ended = server.stats().ended;
        assert_eq!((ended.failed, ended.completed), (1, 0), "{ended:?}");
        assert_eq!(
            *seen.borrow(),
            [
                Failure::Failed("first child".into()),
                Failure::Failed("second child".into())
            ]
        );
    });
}

async fn fails(mut conv: Conversation) -> io::Result<()> {
    let _ = conv.recv().await;
    Err(io::Error::other("on purpose"))
}

#[test]
fn a_failure_policy_that_panics_ends_only_that_report() {
    percore_engine::block_on(async {
        let service = ConversationService::new().on_failure(|_, _, _| panic!("policy bug"));
        let server = serve(service, fails);
        for round in 1..=3 {
            let peer = client();
            let (sent, _) = peer.send_to(b"x".to_vec(), server.addr).await;
            sent.unwrap();
            wait_until("the failure", || server.stats().ended.failed == round).await;
        }
        assert!(!server.task.is_finished(), "the service still runs");
    });
}

async fn waits_forever(mut conv: Conversation) -> io::Result<()> {
    while conv.recv().await.is_some() {}
    Ok(())
}

#[test]
fn dropping_the_service_ends_and_counts_every_conversation() {
    percore_engine::block_on(async {
        let server = serve(ConversationService::new(), waits_forever);
        let peers: Vec<_> = (0..5).map(|_| client()).collect();
        for p in &peers {
            let (sent, _) = p.send_to(b"hello".to_vec(), server.addr).await;
            sent.unwrap();
        }
        wait_until("five conversations", || server.stats().live == 5).await;
        let service = server.service.clone();
        drop(server.task);
        let stats = service.stats();
        assert_eq!(stats.live, 0, "{stats:?}");
        assert_eq!(stats.ended.cancelled, stats.created, "{stats:?}");
    });
}

async fn never_reads(_conv: Conversation) -> io::Result<()> {
    std::future::pending::<()>().await;
    Ok(())
}

#[test]
fn the_core_s_inboxes_hold_no_more_than_their_byte_budget() {
    percore_engine::block_on(async {
        // 4 KiB of budget; 1 KiB datagrams (1,056 with their overhead): three fit in all.
        let service = ConversationService::new()
            .max_queued_bytes(4096)
            .inbox_capacity(64);
        let server = serve(service, never_reads);
        let peers: Vec<_> = (0..4).map(|_| client()).collect();
        for p in &peers {
            for _ in 0..4 {
                let (sent, _) = p.send_to(vec![1u8; 1024], server.addr).await;
                sent.unwrap();
            }
        }
        wait_until("all 16 received", || server.stats().received == 16).await;
        let stats = server.stats();
        assert_eq!(stats.dropped.over_budget, 13, "{stats:?}");
        // A peer whose first datagram found no room got no conversation.
        assert_eq!(stats.created, 1, "{stats:?}");
        drop(server.task);
    });
}

#[test]
fn a_peer_the_hook_refuses_spends_no_rate_token() {
    percore_engine::block_on(async {
        let refused = client();
        let refused_addr = refused.local_addr();
        let service = ConversationService::new()
            .max_new_per_second(1)
            .admit(move |peer, _| {
                if peer == refused_addr {
                    Admission::Drop
                } else {
                    Admission::Accept
                }
            });
        let server = serve(service, numbered_echo);
        for _ in 0..5 {
            let (sent, _) = refused.send_to(b"no".to_vec(), server.addr).await;
            sent.unwrap();
        }
        wait_until("five refused", || server.stats().dropped.refused == 5).await;
        // The one token of this second is still there for a peer the hook accepts.
        let welcome = client();
        assert_eq!(ask(&welcome, server.addr, b"hi").await, numbered(1, b"hi"));
        assert_eq!(server.stats().dropped.over_rate, 0);
    });
}

/// Answers the first datagram after 150 ms, the rest at once.
async fn slow_first(mut conv: Conversation) -> io::Result<()> {
    let mut k = 0;
    while let Some(d) = conv.recv().await {
        k += 1;
        if k == 1 {
            sleep(Duration::from_millis(150)).await;
        }
        conv.send(numbered(k, &d)).await?;
    }
    Ok(())
}

#[test]
fn a_request_never_takes_a_late_reply_to_an_earlier_one() {
    percore_engine::block_on(async {
        let server = serve(ConversationService::new(), slow_first);
        let client = ClientConversation::connect(server.addr).unwrap();
        // The first attempt's reply comes after the 100 ms timeout, so the request is sent
        // again; the late reply to attempt 1 counts for it, and attempt 2's reply is left.
        let reply = client
            .request(b"a", Duration::from_millis(100), 3)
            .await
            .unwrap();
        assert_eq!(reply, b"1:a");
        sleep(Duration::from_millis(50)).await;
        let reply = client
            .request(b"b", Duration::from_millis(500), 0)
            .await
            .unwrap();
        assert_eq!(
            reply, b"3:b",
            "not the reply to the first request's second attempt"
        );
        assert_eq!(client.stale_dropped(), 1);
    });
}

#[test]
fn idle_expiry_never_comes_before_the_timeout() {
    percore_engine::block_on(async {
        let service = ConversationService::new().idle_timeout(Duration::from_millis(100));
        let server = serve(service, numbered_echo);
        let peer = client();
        assert_eq!(ask(&peer, server.addr, b"a").await, numbered(1, b"a"));
        // Never ends before the timeout has passed since the last datagram.
        let last = percore_engine::time::Instant::now();
        wait_until("idle expiry", || server.stats().ended.idle_timeout == 1).await;
        assert!(
            last.elapsed() >= Duration::from_millis(100),
            "{:?}",
            last.elapsed()
        );
    });
}
