//! The client side on real loopback sockets: strangers cannot inject datagrams; requests are
//! retried on timeout and give up with `TimedOut`.

mod common;

use std::io;
use std::time::Duration;

use common::{client, numbered_echo, serve};
use percore_engine::time::Instant;
use percore_udp_conversation::{ClientConversation, ConversationService};

#[test]
fn a_client_conversation_ignores_datagrams_from_strangers() {
    percore_engine::block_on(async {
        let server = client();
        let conv = ClientConversation::connect(server.local_addr()).unwrap();
        let me = (std::net::Ipv4Addr::LOCALHOST, conv.local_addr().port()).into();
        conv.send(b"hello".to_vec()).await.unwrap();
        let (meta, _) = server.recv_from(Vec::with_capacity(64)).await;
        assert_eq!(meta.unwrap().from, Some(me));
        let stranger = client();
        for _ in 0..3 {
            let (r, _) = stranger.send_to(b"evil".to_vec(), me).await;
            r.unwrap();
        }
        let (r, _) = server.send_to(b"good".to_vec(), me).await;
        r.unwrap();
        let (r, _) = server.send_to(Vec::new(), me).await;
        r.unwrap();
        assert_eq!(conv.recv().await.unwrap(), b"good");
        assert_eq!(conv.recv().await.unwrap(), b"", "zero-length is data");
    });
}

#[test]
fn a_request_is_retried_until_a_reply_comes() {
    percore_engine::block_on(async {
        let server = client();
        let addr = server.local_addr();
        // A server that ignores the first two copies of a request and answers the third.
        let responder = percore_engine::spawn(async move {
            for n in 1..=3 {
                let (meta, buf) = server.recv_from(Vec::with_capacity(64)).await;
                let from = meta.unwrap().from.unwrap();
                assert_eq!(buf, b"ping");
                if n == 3 {
                    let (r, _) = server.send_to(b"pong".to_vec(), from).await;
                    r.unwrap();
                }
            }
        });
        let conv = ClientConversation::connect(addr).unwrap();
        let reply = conv
            .request(b"ping", Duration::from_millis(50), 5)
            .await
            .unwrap();
        assert_eq!(reply, b"pong");
        responder.await.unwrap();
    });
}

#[test]
fn a_request_without_reply_times_out_after_its_retries() {
    percore_engine::block_on(async {
        let silent = client();
        let conv = ClientConversation::connect(silent.local_addr()).unwrap();
        let t0 = Instant::now();
        let err = conv
            .request(b"anyone?", Duration::from_millis(40), 2)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            t0.elapsed() >= Duration::from_millis(120),
            "three attempts of 40 ms"
        );
    });
}

#[test]
fn request_matching_skips_replies_that_do_not_match() {
    percore_engine::block_on(async {
        let server = serve(ConversationService::new(), numbered_echo);
        let conv = ClientConversation::connect(server.addr).unwrap();
        conv.send(b"stale".to_vec()).await.unwrap();
        let reply = conv
            .request_matching(b"q", Duration::from_secs(2), 1, |r| r.ends_with(b":q"))
            .await
            .unwrap();
        assert_eq!(reply, b"2:q");
        // "1:stale" was either waiting when the request began (stale) or came during it
        // (unmatched): dropped and counted either way.
        assert_eq!(conv.unmatched_dropped() + conv.stale_dropped(), 1);
    });
}

#[test]
fn a_reply_over_the_size_limit_is_an_error_not_a_cut_datagram() {
    percore_engine::block_on(async {
        let server = client();
        let conv = ClientConversation::connect(server.local_addr())
            .unwrap()
            .with_max_datagram(10);
        conv.send(b"hi".to_vec()).await.unwrap();
        let (meta, _) = server.recv_from(Vec::with_capacity(64)).await;
        let me = meta.unwrap().from.unwrap();
        for reply in [vec![1u8; 11], vec![2u8; 10]] {
            let (r, _) = server.send_to(reply, me).await;
            r.unwrap();
        }
        let err = conv.recv().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(conv.recv().await.unwrap(), vec![2u8; 10]);
    });
}
