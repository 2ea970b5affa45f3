//! One connection cannot take the core's whole receive ring: a connection whose handler stops
//! reading while its peer goes on sending holds a few ring buffers, not all of them, and the
//! other connections of the core keep being served.
//!
//! The sequence: one core with a small receive ring; connection X says "hog" and then sends
//! without end, and its handler never reads again. Once the server no longer takes X's bytes
//! (X's sender sees a zero window), connection Y exchanges lines. Before the fix X's multishot
//! receive stayed armed, so the kernel filled ring buffer after ring buffer with X's bytes,
//! queued for a handler that never took them, until the ring was dry: every other receive on
//! the core then failed with ENOBUFS and re-armed every 200 µs forever, and Y never got its
//! echo. Now X's receive is cancelled once a few chunks wait untaken (its bytes stay in the
//! socket, where TCP flow control stops the sender), so Y is served.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use percore_engine::buf::ring::BufRing;
use percore_engine::time::{sleep, timeout};
use percore_engine::{first, First, Runtime};
use percore_net::service::TcpService;
use percore_net::tcp::{TcpListener, TcpStream};
use percore_net::BufStream;

/// Receive buffers on the test's core: few, so that one connection could take them all.
const BUFFERS: u16 = 64;
/// Echoes lines, except on a connection that starts with "hog": that handler never reads again.
async fn echo_unless_hog(mut conn: BufStream, _peer: SocketAddr) -> std::io::Result<()> {
    let Some(first_line) = conn.read_line(64).await? else {
        return Ok(());
    };
    if first_line == b"hog\n" {
        std::future::pending::<()>().await;
    }
    conn.write(&first_line).await?;
    conn.flush().await?;
    while let Some(line) = conn.read_line(64).await? {
        conn.write(&line).await?;
        conn.flush().await?;
    }
    Ok(())
}

/// The receive window `stream`'s peer last advertised (`TCP_INFO`'s `tcpi_snd_wnd`), or
/// `None` on a kernel that does not report it (before 6.2).
fn peer_window(stream: &std::net::TcpStream) -> Option<u32> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a live local of that size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_snd_wnd) + 4;
    (len as usize >= end).then_some(info.tcpi_snd_wnd)
}

#[test]
fn a_connection_whose_handler_does_not_read_leaves_the_ring_to_others() {
    let rt = Runtime::builder()
        .cpus([0])
        .receive_buffers(BUFFERS)
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        let service =
            Box::pin(async move { TcpService::new().serve(listener, echo_unless_hog).await });
        let clients = Box::pin(async move {
            let ring = BufRing::core_default().unwrap();
            // X: sends without end from its own thread, until the test shuts its socket.
            let mut hog = std::net::TcpStream::connect(addr).unwrap();
            let hog_end = hog.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                hog.write_all(b"hog\n").unwrap();
                let block = vec![b'x'; 64 * 1024];
                while hog.write_all(&block).is_ok() {}
            });
            // Wait until the server stops taking X's bytes: its window to X is closed.
            let since = std::time::Instant::now();
            loop {
                assert!(
                    since.elapsed() < Duration::from_secs(20),
                    "the server never stopped taking X's bytes"
                );
                match peer_window(&hog_end) {
                    Some(0) => break,
                    Some(_) => sleep(Duration::from_millis(1)).await,
                    None => {
                        eprintln!("skipped: the kernel does not report tcpi_snd_wnd");
                        hog_end.shutdown(Shutdown::Both).unwrap();
                        writer.join().unwrap();
                        return;
                    }
                }
            }
            // Y: a line at a time, each echoed.
            let mut y = BufStream::new(TcpStream::connect(addr).await.unwrap());
            for i in 0..50 {
                let line = format!("line {i}\n");
                y.write(line.as_bytes()).await.unwrap();
                y.flush().await.unwrap();
                let echo = timeout(Duration::from_secs(5), y.read_line(64))
                    .await
                    .unwrap_or_else(|_| {
                        panic!("Y starved at line {i}: {} ring buffers lent", ring.lent())
                    })
                    .unwrap()
                    .unwrap();
                assert_eq!(echo, line.as_bytes());
            }
            hog_end.shutdown(Shutdown::Both).unwrap();
            writer.join().unwrap();
        });
        if let First::A(result, _) = first(service, clients).await {
            panic!("the service ended first: {result:?}");
        }
    });
}

/// A reader slower than its sender: its untaken chunks keep passing the limit, so its receive
/// is paused and re-armed over and over. Every byte arrives, once, in order.
#[test]
fn a_receive_paused_and_rearmed_many_times_loses_and_reorders_nothing() {
    let rt = Runtime::builder()
        .cpus([0])
        .receive_buffers(BUFFERS)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        let total = 4 << 20;
        let payload: Vec<u8> = (0..total).map(|i| (i * 7 % 253) as u8).collect();
        let expected = payload.clone();
        let writer = std::thread::spawn(move || {
            client.write_all(&payload).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            client
        });
        let mut got = Vec::with_capacity(total);
        let mut chunks = 0u64;
        while let Some(chunk) = conn.recv_chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
            chunks += 1;
            if chunks % 8 == 0 {
                // Away for a while: chunks pile up past the limit meanwhile.
                sleep(Duration::from_millis(1)).await;
            }
        }
        assert!(
            got == expected,
            "bytes lost or reordered ({} of {total})",
            got.len()
        );
        drop(writer.join().unwrap());
        assert_eq!(BufRing::core_default().unwrap().lent(), 0);
    });
}
