//! Hand-off to a core that is shutting down: the connections queued for it close with its
//! inbox, later ones go to the cores still serving, and no fd is leaked. Its own test binary,
//! because it counts the process's open fds.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use percore_net::tcp::Handoff;

const ROUNDS: usize = 10;

/// `n` accepted server-side TCP connections (and the client ends, kept by the caller).
fn connections(listener: &TcpListener, n: usize) -> (Vec<(OwnedFd, SocketAddr)>, Vec<TcpStream>) {
    let addr = listener.local_addr().unwrap();
    let clients: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let accepted = (0..n)
        .map(|_| {
            let (s, peer) = listener.accept().unwrap();
            (OwnedFd::from(s), peer)
        })
        .collect();
    (accepted, clients)
}

#[test]
fn connections_for_a_stopping_core_close_and_later_ones_go_elsewhere() {
    percore_engine::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let baseline = percore_engine::open_fd_count().unwrap();
        let handoff = Handoff::new(2);
        let inbox0 = handoff.inbox(0).unwrap();
        let inbox1 = handoff.inbox(1).unwrap();
        assert!(handoff.inbox(1).is_none(), "an inbox is taken once");

        let (accepted, clients) = connections(&listener, ROUNDS);
        let mut to = [0usize; 2];
        for (fd, peer) in accepted {
            to[handoff.dispatch(fd, peer).await.unwrap()] += 1;
        }
        assert_eq!(to, [ROUNDS / 2, ROUNDS / 2], "ties alternate");

        // Core 1 stops while its connections are still queued: they close with its inbox.
        drop(inbox1);
        assert_eq!(handoff.loads()[1], usize::MAX);
        let (accepted, more_clients) = connections(&listener, ROUNDS);
        for (fd, peer) in accepted {
            assert_eq!(handoff.dispatch(fd, peer).await, Some(0));
        }
        let mut served = Vec::new();
        for _ in 0..ROUNDS / 2 + ROUNDS {
            served.push(inbox0.next().await.unwrap().unwrap());
        }
        assert_eq!(handoff.loads()[0], ROUNDS / 2 + ROUNDS);
        for _ in &served {
            inbox0.finished();
        }
        assert_eq!(handoff.loads()[0], 0);
        drop(served);

        // With no core left a connection is closed and counted, not leaked.
        drop(inbox0);
        let (accepted, last_clients) = connections(&listener, 1);
        for (fd, peer) in accepted {
            assert_eq!(handoff.dispatch(fd, peer).await, None);
        }
        assert_eq!(handoff.dropped(), 1);
        drop((clients, more_clients, last_clients));
        assert_eq!(percore_engine::open_fd_count().unwrap(), baseline);
    });
}
