//! The service sharded over two cores on one port: the kernel's 4-tuple hash keeps each peer on
//! one core, so each peer's numbering runs on without a restart, and both cores get peers.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use percore_engine::Runtime;
use percore_udp_conversation::{numbered_echo, ConversationService};

/// Binds a free port of 127.0.0.1 with `SO_REUSEPORT`, for the cores to join.
fn reserve_port() -> (socket2::Socket, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    socket.set_reuse_port(true).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

/// Sends `payload` until a reply comes (a datagram may be lost), at most 50 times.
fn ask(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 256];
    for _ in 0..50 {
        socket.send_to(payload, to).unwrap();
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return buf[..n].to_vec();
        }
    }
    panic!("no reply from {to}");
}

#[test]
fn each_peer_stays_on_one_core_and_both_cores_serve() {
    const PEERS: usize = 200;
    let runtime = Runtime::builder().cpus([0, 1]).build().unwrap();
    let cores = runtime.cpus().len();
    let (reservation, addr) = reserve_port();
    let bound = Arc::new(Barrier::new(cores + 1));
    let handle = runtime.handle();
    let clients = {
        let bound = bound.clone();
        std::thread::spawn(move || {
            bound.wait();
            // Every core has joined the port: the reservation must not take a share any more.
            drop(reservation);
            let peers: Vec<UdpSocket> = (0..PEERS)
                .map(|_| {
                    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    s
                })
                .collect();
            let mut wrong = 0;
            for k in 1..=3u64 {
                for p in &peers {
                    // A lost request is sent again, so the count may move on by more than 1;
                    // it must never fall back (a conversation started over elsewhere).
                    let reply = String::from_utf8(ask(p, addr, b"x")).unwrap();
                    let (count, payload) = reply.split_once(':').unwrap();
                    assert_eq!(payload, "x");
                    if count.parse::<u64>().unwrap() < k {
                        wrong += 1;
                    }
                }
            }
            handle.shutdown();
            wrong
        })
    };
    let stats = runtime
        .run(|_| {
            let bound = bound.clone();
            async move {
                let socket = percore_net::udp::UdpSocket::bind_sharded(addr).unwrap();
                bound.wait();
                let service = ConversationService::new();
                service.serve(socket, numbered_echo).await.unwrap()
            }
        })
        .unwrap();
    let restarted = clients.join().unwrap();
    assert_eq!(
        restarted, 0,
        "a peer's conversation started over on another core"
    );
    let created: Vec<u64> = stats.iter().map(|s| s.created).collect();
    assert_eq!(created.iter().sum::<u64>(), PEERS as u64, "{created:?}");
    assert!(
        created.iter().all(|&c| c > 0),
        "both cores serve: {created:?}"
    );
    assert!(
        stats.iter().all(|s| s.live == 0),
        "shutdown ended every conversation"
    );
}
