//! The cancellation matrix: every op kind dropped in every state, with nothing leaked.
//!
//! States: (a) created but never polled (nothing submitted); (b) submitted and in flight (the
//! kernel owns the buffers: the drop must cancel and keep them until the last completion);
//! (c) completed in the kernel but the result never taken (an fd it produced must be closed,
//! a buffer recycled). After each case: open fds, ops in flight and buffer-ring occupancy are
//! back at their baseline. `.ci/asan-cancel` runs this file under AddressSanitizer too, which
//! catches the kernel writing into freed memory.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use percore_engine::buf::ring::BufRing;
use percore_engine::ops;

fn run(test: impl std::future::Future<Output = ()>) {
    run_serial(test);
}

#[test]
fn nop_dropped_in_every_state() {
    run(async {
        let base = baseline();
        drop(Box::pin(ops::nop()));
        let f = poll_once(Box::pin(ops::nop())).await;
        drop(f);
        let f = poll_once(Box::pin(ops::nop())).await;
        let_kernel_work().await;
        drop(f);
        assert_settles_to(base, "nop").await;
    });
}

#[test]
fn read_dropped_in_flight_then_data_arrives() {
    run(async {
        let base = baseline();
        let (fd, mut peer) = unix_pair();
        let read = poll_once(Box::pin(ops::read(
            &fd,
            Vec::with_capacity(64),
            ops::CURRENT_POSITION,
        )))
        .await;
        drop(read);
        // Once the cancel has landed, data written must not be consumed by the cancelled read.
        // (Bytes that arrive before the cancel lands complete the orphaned read and go with its
        // buffer: keeping them is the stream layer's job, see percore-net.)
        let_kernel_work().await;
        peer.write_all(b"after").unwrap();
        let (res, buf) = ops::read(&fd, Vec::with_capacity(16), ops::CURRENT_POSITION).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(&buf[..], b"after");
        drop((fd, peer));
        assert_settles_to(base, "read in flight").await;
    });
}

#[test]
fn read_completed_but_never_taken() {
    run(async {
        let base = baseline();
        let (fd, mut peer) = unix_pair();
        let read = poll_once(Box::pin(ops::read(
            &fd,
            Vec::with_capacity(64),
            ops::CURRENT_POSITION,
        )))
        .await;
        peer.write_all(b"lost with the dropped read").unwrap();
        let_kernel_work().await;
        drop(read);
        drop((fd, peer));
        assert_settles_to(base, "read completed").await;
    });
}

#[test]
fn recv_and_send_dropped_in_flight() {
    run(async {
        let base = baseline();
        let (fd, peer) = unix_pair();
        let recv = poll_once(Box::pin(ops::recv(&fd, Vec::with_capacity(64), 0))).await;
        let_kernel_work().await;
        drop(recv);
        let (full, mut drain) = full_unix_pair();
        let send = poll_once(Box::pin(ops::send(&full, vec![7u8; 256 * 1024], 0))).await;
        let_kernel_work().await;
        drop(send);
        // Unblock the socket: the cancelled send must not write from freed memory.
        let mut sink = vec![0u8; 1 << 20];
        drain.set_nonblocking(true).unwrap();
        while matches!(drain.read(&mut sink), Ok(n) if n > 0) {}
        drop((fd, peer, full, drain));
        assert_settles_to(base, "recv/send in flight").await;
    });
}

#[test]
fn write_and_writev_dropped_in_flight() {
    run(async {
        let base = baseline();
        let (full, drain) = full_unix_pair();
        let w = poll_once(Box::pin(ops::write(
            &full,
            vec![1u8; 128 * 1024],
            ops::CURRENT_POSITION,
        )))
        .await;
        let wv = poll_once(Box::pin(ops::writev(
            &full,
            vec![vec![2u8; 4096], vec![3u8; 4096]],
            ops::CURRENT_POSITION,
        )))
        .await;
        let_kernel_work().await;
        drop(w);
        drop(wv);
        drop((full, drain));
        assert_settles_to(base, "write/writev in flight").await;
    });
}

#[test]
fn readv_dropped_in_flight() {
    run(async {
        let base = baseline();
        let (fd, peer) = unix_pair();
        let r = poll_once(Box::pin(ops::readv(
            &fd,
            vec![Vec::<u8>::with_capacity(8), Vec::with_capacity(8)],
            ops::CURRENT_POSITION,
        )))
        .await;
        let_kernel_work().await;
        drop(r);
        drop((fd, peer));
        assert_settles_to(base, "readv in flight").await;
    });
}

#[test]
fn accept_dropped_in_flight() {
    run(async {
        let base = baseline();
        let (listener, _addr) = tcp_listener();
        let accept = poll_once(Box::pin(ops::accept(&listener))).await;
        let_kernel_work().await;
        drop(accept);
        drop(listener);
        assert_settles_to(base, "accept in flight").await;
    });
}

#[test]
fn accept_completed_but_never_taken_closes_the_connection() {
    run(async {
        let base = baseline();
        let (listener, addr) = tcp_listener();
        let accept = poll_once(Box::pin(ops::accept(&listener))).await;
        let mut client = TcpStream::connect(addr).unwrap();
        let_kernel_work().await;
        drop(accept);
        // The accepted fd was closed: the client sees end of stream, not a hang.
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        let n = client.read(&mut byte).unwrap_or(0);
        assert_eq!(n, 0, "the orphaned connection must be closed");
        drop((client, listener));
        assert_settles_to(base, "accept completed").await;
    });
}

#[test]
fn multishot_accept_dropped_with_untaken_connections() {
    run(async {
        let base = baseline();
        let (listener, addr) = tcp_listener();
        let mut stream = ops::accept_multishot(&listener).unwrap();
        let clients: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // Take one connection, leave three queued in the stream.
        let taken = stream.next().await.unwrap().unwrap();
        drop(taken);
        let_kernel_work().await;
        drop(stream);
        for mut c in clients {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut byte = [0u8; 1];
            assert_eq!(
                c.read(&mut byte).unwrap_or(0),
                0,
                "untaken connection must be closed"
            );
        }
        drop(listener);
        assert_settles_to(base, "multishot accept").await;
    });
}

#[test]
fn connect_dropped_in_flight() {
    run(async {
        let base = baseline();
        let (listener, addr, filler) = full_backlog_listener();
        let sock = tcp_socket();
        let connect = poll_once(Box::pin(ops::connect(&sock, addr))).await;
        let_kernel_work().await;
        drop(connect);
        drop((sock, listener, filler));
        assert_settles_to(base, "connect in flight").await;
    });
}

#[test]
fn datagram_ops_dropped_in_flight() {
    run(async {
        let base = baseline();
        let (sock, _addr) = udp_socket();
        let recv = poll_once(Box::pin(ops::recv_from(&sock, Vec::with_capacity(1500)))).await;
        let_kernel_work().await;
        drop(recv);
        let (other, other_addr) = udp_socket();
        let send = poll_once(Box::pin(ops::send_to(&sock, vec![9u8; 100], other_addr))).await;
        drop(send);
        drop((sock, other));
        assert_settles_to(base, "datagram ops").await;
    });
}

#[test]
fn open_dropped_before_and_after_completion_closes_the_file() {
    run(async {
        let base = baseline();
        let path = std::env::temp_dir().join(format!("percore-open-{}", std::process::id()));
        std::fs::write(&path, b"x").unwrap();
        drop(Box::pin(ops::open(&path, libc::O_RDONLY, 0)));
        let f = poll_once(Box::pin(ops::open(&path, libc::O_RDONLY, 0))).await;
        let_kernel_work().await;
        drop(f);
        let f = poll_once(Box::pin(ops::open(&path, libc::O_RDONLY, 0))).await;
        drop(f);
        std::fs::remove_file(&path).unwrap();
        assert_settles_to(base, "open").await;
    });
}

#[test]
fn close_and_shutdown_dropped() {
    run(async {
        let base = baseline();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let c = poll_once(Box::pin(ops::close(a.into()))).await;
        drop(c);
        let sb = shared(b);
        let s = poll_once(Box::pin(ops::shutdown(&sb, libc::SHUT_WR))).await;
        drop(s);
        drop(sb);
        assert_settles_to(base, "close/shutdown").await;
    });
}

#[test]
fn multishot_recv_dropped_with_untaken_chunks_returns_every_buffer() {
    run(async {
        let ring = BufRing::new(8, 256).unwrap();
        let base = baseline();
        let (fd, mut peer) = unix_pair();
        let mut stream = ops::recv_multishot(&fd, &ring).unwrap();
        peer.write_all(b"first").unwrap();
        match stream.next().await.unwrap() {
            ops::Received::Data(buf) => {
                assert_eq!(&buf[..], b"first");
                assert_eq!(ring.lent(), 1);
            }
            other => panic!("expected data, got {other:?}"),
        }
        assert_eq!(ring.lent(), 0, "a dropped RingBuf goes back to the ring");
        for _ in 0..5 {
            peer.write_all(&[b'x'; 200]).unwrap();
            let_kernel_work().await;
        }
        drop(stream);
        drop((fd, peer));
        assert_settles_to(base, "multishot recv").await;
        assert_eq!(ring.lent(), 0, "untaken chunks must be recycled");
    });
}

#[test]
fn multishot_recvmsg_dropped_with_untaken_datagrams_returns_every_buffer() {
    run(async {
        let ring = BufRing::new(8, 256).unwrap();
        let base = baseline();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let fd = shared(socket);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut stream = ops::recvmsg_multishot(&fd, &ring).unwrap();
        peer.send_to(b"first", addr).unwrap();
        let d = stream.next().await.unwrap().unwrap();
        assert_eq!(&d.payload[..], b"first");
        assert_eq!(ring.lent(), 1);
        drop(d);
        assert_eq!(
            ring.lent(),
            0,
            "a dropped datagram's buffer goes back to the ring"
        );
        for _ in 0..5 {
            peer.send_to(&[b'x'; 200], addr).unwrap();
        }
        let_kernel_work().await;
        // Dropped with datagrams completed but untaken, and one more arriving after the drop.
        drop(stream);
        peer.send_to(b"late", addr).unwrap();
        drop((fd, peer));
        assert_settles_to(base, "multishot recvmsg").await;
        assert_eq!(
            ring.lent(),
            0,
            "untaken datagrams' buffers must be recycled"
        );
    });
}

#[test]
fn multishot_recv_ring_runs_dry_then_recovers() {
    run(async {
        let ring = BufRing::new(2, 16).unwrap();
        let (fd, mut peer) = unix_pair();
        let mut stream = ops::recv_multishot(&fd, &ring).unwrap();
        let mut held = Vec::new();
        let saw_enobufs;
        for _ in 0..4 {
            peer.write_all(&[b'y'; 16]).unwrap();
            let_kernel_work().await;
        }
        loop {
            match stream.next().await {
                Ok(ops::Received::Data(b)) => held.push(b),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    saw_enobufs = true;
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(saw_enobufs, "a ring of 2 must run dry under 4 chunks");
        assert_eq!(held.len(), 2);
        drop(held);
        assert_eq!(ring.lent(), 0);
        // Re-arm after recycling: the bytes still queued in the socket arrive.
        let mut stream = ops::recv_multishot(&fd, &ring).unwrap();
        match stream.next().await.unwrap() {
            ops::Received::Data(b) => assert_eq!(&b[..], &[b'y'; 16]),
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn send_zc_dropped_in_flight_keeps_the_buffer_until_notified() {
    run(async {
        let base = baseline();
        let (full, mut drain) = full_unix_pair();
        let send = poll_once(Box::pin(ops::send_zc(&full, vec![5u8; 512 * 1024]))).await;
        let_kernel_work().await;
        drop(send);
        drain.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        for _ in 0..50 {
            while matches!(drain.read(&mut sink), Ok(n) if n > 0) {}
            percore_engine::time::sleep(Duration::from_millis(1)).await;
        }
        drop((full, drain));
        assert_settles_to(base, "send_zc").await;
    });
}

#[test]
fn ops_dropped_in_a_storm_across_tasks() {
    run(async {
        let base = baseline();
        let (listener, addr) = tcp_listener();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let listener = listener.clone();
            tasks.push(percore_engine::spawn(async move {
                if i % 2 == 0 {
                    let _ = ops::accept(&listener).await;
                } else {
                    let (fd, _peer) = unix_pair();
                    let _ = ops::recv(&fd, Vec::with_capacity(32), 0).await;
                }
            }));
        }
        let_kernel_work().await;
        let clients: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let_kernel_work().await;
        drop(tasks);
        drop(clients);
        drop(listener);
        assert_settles_to(base, "storm").await;
    });
}

#[test]
fn buffer_ring_dropped_with_its_orphaned_stream_is_unregistered() {
    run(async {
        let base = baseline();
        let rings_before = percore_engine::stats::current().buf_rings;
        let (fd, mut peer) = unix_pair();
        {
            let ring = BufRing::new(4, 64).unwrap();
            assert_eq!(percore_engine::stats::current().buf_rings, rings_before + 1);
            let stream = ops::recv_multishot(&fd, &ring).unwrap();
            peer.write_all(b"queued").unwrap();
            let_kernel_work().await;
            // The stream's orphan now holds the ring's last handle.
            drop(ring);
            drop(stream);
        }
        drop((fd, peer));
        assert_settles_to(base, "ring with orphaned stream").await;
        assert_eq!(
            percore_engine::stats::current().buf_rings,
            rings_before,
            "the ring is unregistered once its last op is done"
        );
    });
}

#[test]
fn a_ring_buffer_is_sent_straight_and_recycled_even_when_the_send_is_dropped() {
    run(async {
        let ring = BufRing::new(8, 256).unwrap();
        let base = baseline();
        let (fd, mut peer) = unix_pair();
        let (out, mut out_peer) = unix_pair();
        let mut stream = ops::recv_multishot(&fd, &ring).unwrap();
        peer.write_all(b"forward me").unwrap();
        let ops::Received::Data(chunk) = stream.next().await.unwrap() else {
            panic!("expected data");
        };
        // Sent on without a copy; the buffer comes back with the result.
        let (sent, chunk) = ops::send(&out, chunk, 0).await;
        assert_eq!(sent.unwrap(), 10);
        assert_eq!(ring.lent(), 1);
        drop(chunk);
        assert_eq!(ring.lent(), 0);
        let mut got = [0u8; 10];
        out_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"forward me");

        // A send of a lent buffer dropped in flight (the socket is full): the buffer goes back
        // to the ring only after the kernel is done with it.
        let (full, mut drain) = full_unix_pair();
        peer.write_all(b"stuck").unwrap();
        let ops::Received::Data(chunk) = stream.next().await.unwrap() else {
            panic!("expected data");
        };
        let send = poll_once(Box::pin(ops::send(&full, chunk, 0))).await;
        let_kernel_work().await;
        drop(send);
        drain.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        while matches!(drain.read(&mut sink), Ok(n) if n > 0) {}
        drop((stream, fd, peer, out, out_peer, full, drain));
        assert_settles_to(base, "ring buffer sends").await;
        assert_eq!(ring.lent(), 0, "the orphaned send's buffer was recycled");
    });
}

#[test]
fn a_chunk_send_gives_its_buffer_back_at_completion_in_every_state() {
    run(async {
        let ring = BufRing::new(8, 256).unwrap();
        let base = baseline();
        let (fd, mut peer) = unix_pair();
        let (out, mut out_peer) = unix_pair();
        let mut stream = ops::recv_multishot(&fd, &ring).unwrap();
        let mut next_chunk = async |peer: &mut std::os::unix::net::UnixStream, bytes: &[u8]| {
            peer.write_all(bytes).unwrap();
            match stream.next().await.unwrap() {
                ops::Received::Data(chunk) => chunk,
                other => panic!("expected data, got {other:?}"),
            }
        };

        // (a) Never polled: nothing submitted, the buffer goes back with the future.
        let chunk = next_chunk(&mut peer, b"never").await;
        drop(ops::send_chunk(&out, chunk));
        assert_eq!(ring.lent(), 0);

        // (c) Completed, the result never taken: the buffer went back at the completion,
        // before anyone looked; dropping the future then frees the slot.
        let chunk = next_chunk(&mut peer, b"unwatched").await;
        let mut send = ops::send_chunk(&out, chunk);
        assert!(send.poll_unwatched().is_pending());
        let_kernel_work().await;
        assert_eq!(ring.lent(), 0, "recycled by the completion");
        drop(send);
        let mut got = [0u8; 9];
        out_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"unwatched");

        // Awaited: the result comes with no buffer to give back.
        let chunk = next_chunk(&mut peer, b"awaited").await;
        ops::send_chunk(&out, chunk).await.unwrap();
        assert_eq!(ring.lent(), 0);
        let mut got = [0u8; 7];
        out_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"awaited");

        // (b) In flight on a full socket, dropped: cancelled, and the buffer is kept until the
        // kernel is done with it.
        let (full, mut drain) = full_unix_pair();
        let chunk = next_chunk(&mut peer, b"stuck").await;
        let send = poll_once(Box::pin(ops::send_chunk(&full, chunk))).await;
        let_kernel_work().await;
        assert_eq!(ring.lent(), 1, "the kernel may still read it");
        drop(send);
        let_kernel_work().await;
        assert_eq!(ring.lent(), 0, "back after the cancel's completion");

        // In flight when the ring's last other handle goes: the completion hands the buffer,
        // and the ring with it, to be dropped outside the driver (which unregisters it).
        let chunk = next_chunk(&mut peer, b"last").await;
        let mut send = ops::send_chunk(&full, chunk);
        assert!(send.poll_unwatched().is_pending());
        drop(stream);
        drop(ring);
        let_kernel_work().await;
        drain.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        while matches!(drain.read(&mut sink), Ok(n) if n > 0) {}
        let_kernel_work().await;
        assert!(matches!(
            send.poll_unwatched(),
            std::task::Poll::Ready(Ok(()))
        ));
        drop((send, fd, peer, out, out_peer, full, drain));
        assert_settles_to(base, "chunk sends").await;
    });
}

/// A heap buffer's owned send (`send_vec`) in every state: never polled, completed unwatched
/// and dropped unread, awaited, in flight on a full socket and dropped (cancelled), in flight
/// unwatched and then completed. The buffer is freed by whoever holds it last (the future, the
/// slot, the orphan); LSan checks that under ASan, and the fds and ops settle here.
#[test]
fn a_heap_send_frees_its_buffer_in_every_state() {
    run(async {
        let base = baseline();
        let (out, mut out_peer) = unix_pair();

        // (a) Never polled: nothing submitted, the buffer goes with the future.
        drop(ops::send_vec(&out, b"never".to_vec()));

        // (c) Completed unwatched, the result never taken: the slot went at the completion;
        // dropping the future then touches nothing.
        let mut send = ops::send_vec(&out, b"unwatched".to_vec());
        assert!(send.poll_unwatched().is_pending());
        let_kernel_work().await;
        drop(send);
        let mut got = [0u8; 9];
        out_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"unwatched");

        // Awaited.
        ops::send_vec(&out, b"awaited".to_vec()).await.unwrap();
        let mut got = [0u8; 7];
        out_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"awaited");

        // (b) In flight on a full socket, dropped: cancelled, the buffer kept until the kernel
        // is done with it.
        let (full, mut drain) = full_unix_pair();
        let send = poll_once(Box::pin(ops::send_vec(&full, vec![1u8; 64 << 10]))).await;
        let_kernel_work().await;
        drop(send);
        let_kernel_work().await;

        // In flight unwatched, then the peer drains: it completes whole and reads as sent.
        let mut send = ops::send_vec(&full, vec![2u8; 64 << 10]);
        assert!(send.poll_unwatched().is_pending());
        drain.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        let mut sent = false;
        for _ in 0..100 {
            while matches!(drain.read(&mut sink), Ok(n) if n > 0) {}
            let_kernel_work().await;
            if let std::task::Poll::Ready(done) = send.poll_unwatched() {
                done.unwrap();
                sent = true;
                break;
            }
        }
        assert!(sent, "a drained socket took the send");
        drop((send, out, out_peer, full, drain));
        assert_settles_to(base, "heap sends").await;
    });
}
