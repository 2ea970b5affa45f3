//! Hand-off with per-core caps: a core at its cap is passed no connection; while every core is
//! at its cap a dispatch waits (its caller pauses accepting), and it goes on when a connection
//! ends or ends itself (closing the connection, counted) when the last core stops; a closed
//! hand-off passes nothing on and its inboxes end after their queues. Its own test binary,
//! because it counts the process's open fds.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::Poll;

use percore_net::tcp::Handoff;

/// One accepted server-side TCP connection (and its client end, kept by the caller).
fn connection(listener: &TcpListener) -> ((OwnedFd, SocketAddr), TcpStream) {
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (s, peer) = listener.accept().unwrap();
    ((OwnedFd::from(s), peer), client)
}

/// Polls `fut` once (with the task's own waker, so a later wake-up reaches the task).
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

// One test function: both parts count the process's open fds, so they must not overlap.
#[test]
fn caps_and_close() {
    a_dispatch_waits_while_every_core_is_at_its_cap();
    a_closed_handoff_passes_nothing_on_and_its_inboxes_end_after_their_queue();
}

fn a_dispatch_waits_while_every_core_is_at_its_cap() {
    percore_engine::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let baseline = percore_engine::open_fd_count().unwrap();
        let handoff = Handoff::new(2);
        let inbox0 = handoff.inbox(0).unwrap();
        let inbox1 = handoff.inbox(1).unwrap();
        inbox0.limit_connections(1);
        inbox1.limit_connections(2);

        let mut clients = Vec::new();
        let mut to = [0usize; 2];
        for _ in 0..3 {
            let ((fd, peer), client) = connection(&listener);
            clients.push(client);
            to[handoff.dispatch(fd, peer).await.unwrap()] += 1;
        }
        assert_eq!(to, [1, 2], "each core filled to its cap, no further");

        // Every core is at its cap: the next dispatch waits.
        let ((fd, peer), client) = connection(&listener);
        clients.push(client);
        let mut waiting = Box::pin(handoff.dispatch(fd, peer));
        assert!(poll_once(&mut waiting).await.is_pending());
        // A connection of core 1 ends: room there, the dispatch goes on to it.
        let served = inbox1.next().await.unwrap().unwrap();
        assert!(
            poll_once(&mut waiting).await.is_pending(),
            "taken is not ended"
        );
        drop(served);
        inbox1.finished();
        assert_eq!(waiting.await, Some(1));
        assert_eq!(handoff.loads(), vec![1, 2]);

        // Waiting again, the last cores stop: the connection is closed and counted.
        let ((fd, peer), client) = connection(&listener);
        clients.push(client);
        let mut waiting = Box::pin(handoff.dispatch(fd, peer));
        assert!(poll_once(&mut waiting).await.is_pending());
        drop(inbox0);
        assert!(
            poll_once(&mut waiting).await.is_pending(),
            "core 1 still serves"
        );
        drop(inbox1);
        assert_eq!(waiting.await, None);
        assert_eq!(handoff.dropped(), 1);

        drop(clients);
        assert_eq!(percore_engine::open_fd_count().unwrap(), baseline);
    });
}

fn a_closed_handoff_passes_nothing_on_and_its_inboxes_end_after_their_queue() {
    percore_engine::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let baseline = percore_engine::open_fd_count().unwrap();
        let handoff = Handoff::new(2);
        let inbox0 = handoff.inbox(0).unwrap();
        let inbox1 = handoff.inbox(1).unwrap();
        inbox0.limit_connections(1);
        inbox1.limit_connections(1);
        let mut clients = Vec::new();
        for _ in 0..2 {
            let ((fd, peer), client) = connection(&listener);
            clients.push(client);
            handoff.dispatch(fd, peer).await.unwrap();
        }
        // Both cores at their cap: the next dispatch waits; the close ends the wait.
        let ((fd, peer), client) = connection(&listener);
        clients.push(client);
        let mut waiting = Box::pin(handoff.dispatch(fd, peer));
        assert!(poll_once(&mut waiting).await.is_pending());
        handoff.close();
        assert_eq!(waiting.await, None, "nobody takes it: closed");
        // A dispatch after the close is refused at once.
        let ((fd, peer), client) = connection(&listener);
        clients.push(client);
        assert_eq!(handoff.dispatch(fd, peer).await, None);
        assert_eq!(handoff.dropped(), 2);
        // Each inbox still gives what was queued, then ends.
        for inbox in [&inbox0, &inbox1] {
            let (conn, _) = inbox.next().await.unwrap().unwrap();
            drop(conn);
            assert!(inbox.next().await.is_none(), "ended after its queue");
        }
        drop(clients);
        assert_eq!(percore_engine::open_fd_count().unwrap(), baseline);
    });
}
