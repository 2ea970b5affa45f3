//! Conversations on a real loopback port: per-peer state and order, zero-length datagrams,
//! failures and panics that end only their own conversation, forked tasks.

mod common;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::{ask, client, numbered, numbered_echo, recv_within, serve, wait_until};
use percore_engine::time::sleep;
use percore_net::udp::UdpSocket;
use percore_udp_conversation::{Conversation, ConversationService, Failure};

#[test]
fn each_peer_has_its_own_state_and_its_datagrams_stay_in_order() {
    percore_engine::block_on(async {
        let server = serve(ConversationService::new(), numbered_echo);
        let peers: Vec<_> = (0..3).map(|_| client()).collect();
        // Bursts from every peer, interleaved, before reading any reply.
        for i in 0..5u8 {
            for (p, peer) in peers.iter().enumerate() {
                let payload = vec![b'a' + p as u8; usize::from(i)];
                let (sent, _) = peer.send_to(payload, server.addr).await;
                sent.unwrap();
            }
        }
        for (p, peer) in peers.iter().enumerate() {
            for i in 0..5u8 {
                let (reply, _) = recv_within(peer, Duration::from_secs(5)).await.unwrap();
                let payload = vec![b'a' + p as u8; usize::from(i)];
                assert_eq!(reply, numbered(u64::from(i) + 1, &payload));
            }
        }
        let stats = server.stats();
        assert_eq!((stats.live, stats.created, stats.received), (3, 3, 15));
        assert_eq!(stats.dropped.total(), 0);
    });
}

#[test]
fn a_zero_length_datagram_is_data_and_starts_a_conversation() {
    percore_engine::block_on(async {
        let server = serve(ConversationService::new(), numbered_echo);
        let peer = client();
        assert_eq!(ask(&peer, server.addr, b"").await, b"1:");
        assert_eq!(ask(&peer, server.addr, b"").await, b"2:");
        assert_eq!(ask(&peer, server.addr, b"x").await, b"3:x");
    });
}

/// Answers like `numbered_echo`, but `panic` panics and `fail` returns an error.
async fn fragile(mut conv: Conversation) -> io::Result<()> {
    let mut k = 0;
    while let Some(payload) = conv.recv().await {
        k += 1;
        match payload.as_slice() {
            b"panic" => panic!("asked to panic"),
            b"fail" => return Err(io::Error::other("asked to fail")),
            _ => conv.send(numbered(k, &payload)).await?,
        }
    }
    Ok(())
}

#[test]
fn a_panicking_or_failing_handler_ends_only_its_conversation_and_is_reported() {
    percore_engine::block_on(async {
        let failures = Rc::new(RefCell::new(Vec::new()));
        let seen = failures.clone();
        let service = ConversationService::new().on_failure(move |_, peer, failure| {
            seen.borrow_mut().push((peer, failure.clone()));
        });
        let server = serve(service, fragile);
        let (calm, wild, sour) = (client(), client(), client());
        assert_eq!(ask(&calm, server.addr, b"a").await, b"1:a");
        assert_eq!(ask(&wild, server.addr, b"a").await, b"1:a");
        assert_eq!(ask(&sour, server.addr, b"a").await, b"1:a");
        for (peer, word) in [(&wild, "panic"), (&sour, "fail")] {
            let (sent, _) = peer.send_to(word.as_bytes().to_vec(), server.addr).await;
            sent.unwrap();
        }
        wait_until("both ended", || server.stats().ended.total() == 2).await;
        let stats = server.stats();
        assert_eq!((stats.ended.panicked, stats.ended.failed), (1, 1));
        assert_eq!(stats.live, 1);
        // The calm peer's conversation kept its state.
        assert_eq!(ask(&calm, server.addr, b"b").await, b"2:b");
        // The wild peer starts over with a fresh conversation.
        assert_eq!(ask(&wild, server.addr, b"c").await, b"1:c");
        let failures = failures.borrow();
        assert_eq!(failures.len(), 2, "every failure reaches the policy");
        assert!(failures.contains(&(
            wild.local_addr(),
            Failure::Panicked("asked to panic".into())
        )));
        assert!(failures.contains(&(sour.local_addr(), Failure::Failed("asked to fail".into()))));
    });
}

#[test]
fn a_handler_that_panics_before_its_future_exists_ends_only_its_conversation() {
    percore_engine::block_on(async {
        let doomed = client();
        let doomed_addr = doomed.local_addr();
        let service = ConversationService::new().on_failure(|_, _, _| {});
        let server = serve(service, move |conv: Conversation| {
            assert_ne!(
                conv.peer(),
                doomed_addr,
                "this peer makes the handler call panic"
            );
            numbered_echo(conv)
        });
        let (sent, _) = doomed.send_to(b"x".to_vec(), server.addr).await;
        sent.unwrap();
        wait_until("it panicked", || server.stats().ended.panicked == 1).await;
        assert_eq!(server.stats().live, 0);
        assert_eq!(ask(&client(), server.addr, b"y").await, b"1:y");
    });
}

/// On its first datagram forks a ticker that sends `tick` every 5 ms (failing after `max`
/// ticks if `max` is set); ends on `stop`.
fn ticking(max: Option<u32>) -> impl Fn(Conversation) -> TickFuture {
    move |conv| Box::pin(tick_handler(conv, max))
}

type TickFuture = std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<()>>>>;

async fn tick_handler(mut conv: Conversation, max: Option<u32>) -> io::Result<()> {
    let sender = conv.sender();
    conv.fork_child(async move {
        let mut n = 0;
        loop {
            sender.send(b"tick".to_vec()).await?;
            n += 1;
            if max.is_some_and(|m| n >= m) {
                return Err(io::Error::other("ticker gave up"));
            }
            sleep(Duration::from_millis(5)).await;
        }
    });
    while let Some(payload) = conv.recv().await {
        if payload == b"stop" {
            return Ok(());
        }
    }
    Ok(())
}

#[test]
fn a_forked_task_sends_on_the_conversation_and_is_cancelled_when_it_ends() {
    percore_engine::block_on(async {
        let server = serve(ConversationService::new(), ticking(None));
        let peer = client();
        let (sent, _) = peer.send_to(b"start".to_vec(), server.addr).await;
        sent.unwrap();
        for _ in 0..3 {
            let (tick, from) = recv_within(&peer, Duration::from_secs(5)).await.unwrap();
            assert_eq!((tick.as_slice(), from), (&b"tick"[..], server.addr));
        }
        let (sent, _) = peer.send_to(b"stop".to_vec(), server.addr).await;
        sent.unwrap();
        wait_until("the conversation ended", || server.stats().live == 0).await;
        assert_eq!(server.stats().ended.completed, 1);
        // Drain ticks sent before the end (a bounded number: a ticker that was not cancelled
        // fails the test rather than hanging it); then silence.
        let mut drained = 0;
        while recv_within(&peer, Duration::from_millis(50))
            .await
            .is_some()
        {
            drained += 1;
            assert!(drained < 100, "ticks keep coming after the end");
        }
        assert!(recv_within(&peer, Duration::from_millis(100))
            .await
            .is_none());
    });
}

#[test]
fn a_failing_forked_task_ends_its_conversation() {
    percore_engine::block_on(async {
        let service = ConversationService::new().on_failure(|_, _, _| {});
        let server = serve(service, ticking(Some(2)));
        let peer = client();
        let (sent, _) = peer.send_to(b"start".to_vec(), server.addr).await;
        sent.unwrap();
        wait_until("the conversation failed", || {
            server.stats().ended.failed == 1
        })
        .await;
        assert_eq!(server.stats().live, 0);
    });
}

/// Checks that the 8-byte sequence numbers it receives only go up; `end` gets back
/// `received:out_of_order`.
async fn order_checker(mut conv: Conversation) -> io::Result<()> {
    let (mut last, mut received, mut disorder) = (None::<u64>, 0u64, 0u64);
    while let Some(d) = conv.recv().await {
        if d == b"end" {
            conv.send(format!("{received}:{disorder}").into_bytes())
                .await?;
            continue;
        }
        let seq = u64::from_be_bytes(d.as_slice().try_into().unwrap());
        received += 1;
        if last.is_some_and(|l| seq <= l) {
            disorder += 1;
        }
        last = Some(seq);
    }
    Ok(())
}

#[test]
fn arrival_order_is_kept_under_a_burst_from_another_thread() {
    const EACH: u64 = 5_000;
    percore_engine::block_on(async {
        let service = ConversationService::new().inbox_capacity(8_192);
        let server = serve(service, order_checker);
        let addr = server.addr;
        // Blocking senders on another thread, so datagrams pile up in the socket while the
        // server's receives are in flight.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let peers: Vec<_> = (0..4)
                .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                .collect();
            for seq in 0..EACH {
                for p in &peers {
                    p.send_to(&seq.to_be_bytes(), addr).unwrap();
                }
            }
            let replies: Vec<String> = peers
                .iter()
                .map(|p| {
                    // `end` may be dropped too while the socket's buffer is full: ask again.
                    p.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    let mut buf = [0u8; 64];
                    let n = (0..50)
                        .find_map(|_| {
                            p.send_to(b"end", addr).unwrap();
                            p.recv_from(&mut buf).ok().map(|(n, _)| n)
                        })
                        .expect("an answer to end");
                    String::from_utf8(buf[..n].to_vec()).unwrap()
                })
                .collect();
            done_tx.send(replies).unwrap();
        });
        let replies = RefCell::new(None);
        wait_until("the senders finished", || {
            if let Ok(r) = done_rx.try_recv() {
                *replies.borrow_mut() = Some(r);
            }
            replies.borrow().is_some()
        })
        .await;
        for reply in replies.into_inner().unwrap() {
            let (received, disorder) = reply.split_once(':').unwrap();
            assert_eq!(
                disorder, "0",
                "datagrams out of order ({received} received)"
            );
            // Loopback may drop under a burst (the socket's buffer is full), never reorder.
            assert!(received.parse::<u64>().unwrap() > 0);
        }
    });
}

/// Waits at most 30 ms for each next datagram (an engine cancel scope); says `quiet` when
/// none came, and ends after three quiet periods.
async fn impatient(mut conv: Conversation) -> io::Result<()> {
    let mut quiet = 0;
    while quiet < 3 {
        match percore_engine::scope::move_on_after(Duration::from_millis(30), conv.recv()).await {
            Some(Some(d)) => conv.send(d).await?,
            Some(None) => return Ok(()),
            None => {
                quiet += 1;
                conv.send(b"quiet".to_vec()).await?;
            }
        }
    }
    Ok(())
}

#[test]
fn a_handler_times_out_its_receives_with_a_cancel_scope() {
    percore_engine::block_on(async {
        let server = serve(ConversationService::new(), impatient);
        let peer = client();
        assert_eq!(ask(&peer, server.addr, b"a").await, b"a");
        for _ in 0..3 {
            let (reply, _) = recv_within(&peer, Duration::from_secs(5)).await.unwrap();
            assert_eq!(reply, b"quiet");
        }
        wait_until("it ended", || server.stats().ended.completed == 1).await;
        assert_eq!(server.stats().dropped.total(), 0);
    });
}

/// Records every datagram it receives, in order.
fn recorder(log: Rc<RefCell<Vec<Vec<u8>>>>) -> impl Fn(Conversation) -> RecordFuture {
    move |conv| Box::pin(record(conv, log.clone()))
}

type RecordFuture = std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<()>>>>;

async fn record(mut conv: Conversation, log: Rc<RefCell<Vec<Vec<u8>>>>) -> io::Result<()> {
    while let Some(d) = conv.recv().await {
        log.borrow_mut().push(d);
    }
    Ok(())
}

#[test]
fn a_burst_through_a_small_ring_with_empty_datagrams_keeps_order_and_loses_none() {
    // The sequence: a burst of 200 datagrams (every fifth one empty, every seventh one over
    // the size limit) is queued in the server's socket before the service first receives; its
    // ring has 4 buffers, so the multishot receive ends again and again, on the empty
    // datagrams (the kernel ends it after one) and when the ring runs dry; each time it is
    // re-armed and the datagrams waiting in the socket come next, in order.
    const BURST: u32 = 200;
    percore_engine::block_on(async {
        let socket = UdpSocket::bind_sharded("127.0.0.1:0".parse().unwrap()).unwrap();
        socket2::SockRef::from(socket.fd())
            .set_recv_buffer_size(1 << 20)
            .unwrap();
        let addr = socket.local_addr();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut expected = Vec::new();
        for i in 0..BURST {
            let payload = match i {
                _ if i % 5 == 0 => Vec::new(),
                _ if i % 7 == 0 => vec![7u8; 101],
                _ => i.to_be_bytes().to_vec(),
            };
            peer.send_to(&payload, addr).unwrap();
            if payload.len() <= 100 {
                expected.push(payload);
            }
        }
        let log = Rc::new(RefCell::new(Vec::new()));
        let service = Rc::new(
            ConversationService::new()
                .max_datagram(100)
                .receive_buffers(4)
                .inbox_capacity(BURST as usize),
        );
        let s = service.clone();
        let handler = recorder(log.clone());
        let _server = percore_engine::spawn(async move { s.serve(socket, handler).await });
        wait_until("the burst was received", || {
            service.stats().received == u64::from(BURST)
        })
        .await;
        wait_until("the handler read its inbox", || {
            log.borrow().len() == expected.len()
        })
        .await;
        assert_eq!(*log.borrow(), expected, "in order, none lost");
        let stats = service.stats();
        assert_eq!(
            stats.dropped.truncated,
            u64::from(BURST) - expected.len() as u64
        );
        assert_eq!(stats.dropped.total(), stats.dropped.truncated);
        assert!(stats.ring_dry > 0, "a 4-buffer ring ran dry: {stats:?}");
    });
}
