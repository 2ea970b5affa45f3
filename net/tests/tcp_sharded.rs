//! A port served by every core: each core binds its own SO_REUSEPORT listener, the kernel
//! spreads connections, and a shutdown request ends every accept loop.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use percore_engine::{first, shutdown, First, Runtime};
use percore_net::tcp::TcpListener;
use percore_net::BufStream;

const CONNECTIONS: usize = 200;

/// Up to two CPUs, and a port for every core to share, held (bound, not listening,
/// SO_REUSEPORT) for the whole run so that nothing else can be handed it.
fn shared_port() -> (Vec<usize>, socket2::Socket, SocketAddr) {
    let cpus: Vec<usize> =
        (0..core_affinity::get_core_ids().map_or(1, |c| c.len()).min(2)).collect();
    let holder = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    holder.set_reuse_address(true).unwrap();
    holder.set_reuse_port(true).unwrap();
    holder
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let addr = holder.local_addr().unwrap().as_socket().unwrap();
    (cpus, holder, addr)
}

#[test]
fn connections_spread_across_cores_and_shutdown_stops_accepting() {
    let (cpus, _holder, addr) = shared_port();
    let rt = Runtime::builder().cpus(cpus.clone()).build().unwrap();
    let handle = rt.handle();
    let bound = Arc::new(AtomicUsize::new(0));
    let b2 = bound.clone();
    let clients = std::thread::spawn(move || {
        while b2.load(Ordering::SeqCst) < cpus.len() {
            std::thread::yield_now();
        }
        for i in 0..CONNECTIONS {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            writeln!(s, "hello {i}").unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            assert_eq!(line, format!("HELLO {i}\n"));
        }
        handle.shutdown();
    });
    let per_core = rt
        .run(|_| {
            let bound = bound.clone();
            async move {
                let mut listener = TcpListener::bind(addr).unwrap();
                bound.fetch_add(1, Ordering::SeqCst);
                let served = std::rc::Rc::new(std::cell::Cell::new(0usize));
                let s2 = served.clone();
                let accept_loop = Box::pin(async move {
                    loop {
                        let (conn, _) = listener.accept().await.unwrap();
                        s2.set(s2.get() + 1);
                        percore_engine::spawn(async move {
                            let mut conn = BufStream::new(conn);
                            while let Ok(Some(line)) = conn.read_line(1024).await {
                                conn.write(&line.to_ascii_uppercase()).await.unwrap();
                                conn.flush().await.unwrap();
                            }
                        })
                        .detach(|_| {});
                    }
                });
                match first(shutdown::requested(), accept_loop).await {
                    First::A((), _accepting) => served.get(),
                    First::B(never, _) => never,
                }
            }
        })
        .unwrap();
    clients.join().unwrap();
    eprintln!("connections per core: {per_core:?}");
    assert_eq!(per_core.iter().sum::<usize>(), CONNECTIONS);
    if per_core.len() > 1 {
        assert!(
            per_core.iter().all(|&n| n > 0),
            "the kernel spread them: {per_core:?}"
        );
    }
}

/// Connections open at once in [`many_connections_at_once_on_every_core_are_all_answered`].
// 400 x 2 fds stays under a soft RLIMIT_NOFILE of 1024.
const AT_ONCE: usize = 400;

#[test]
fn many_connections_at_once_on_every_core_are_all_answered() {
    let (cpus, _holder, addr) = shared_port();
    let rt = Runtime::builder().cpus(cpus.clone()).build().unwrap();
    let handle = rt.handle();
    let bound = Arc::new(AtomicUsize::new(0));
    let b2 = bound.clone();
    let clients = std::thread::spawn(move || {
        while b2.load(Ordering::SeqCst) < cpus.len() {
            std::thread::yield_now();
        }
        // Every connection is opened before any is used, so all are live at once; then each
        // sends a line and every answer is read back.
        let conns: Vec<std::net::TcpStream> = (0..AT_ONCE)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for (i, mut s) in conns.iter().enumerate() {
            writeln!(s, "at once {i}").unwrap();
        }
        for (i, s) in conns.iter().enumerate() {
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            assert_eq!(line, format!("AT ONCE {i}\n"));
        }
        handle.shutdown();
        drop(conns);
    });
    let per_core = rt
        .run(|_| {
            let bound = bound.clone();
            async move {
                let mut listener = TcpListener::bind(addr).unwrap();
                bound.fetch_add(1, Ordering::SeqCst);
                // (accepted, live now, most live at once)
                let counts = std::rc::Rc::new(std::cell::Cell::new((0usize, 0usize, 0usize)));
                let c2 = counts.clone();
                let accept_loop = Box::pin(async move {
                    loop {
                        let (conn, _) = listener.accept().await.unwrap();
                        let (n, live, peak) = c2.get();
                        c2.set((n + 1, live + 1, peak.max(live + 1)));
                        let c3 = c2.clone();
                        percore_engine::spawn(async move {
                            let mut conn = BufStream::new(conn);
                            while let Ok(Some(line)) = conn.read_line(1024).await {
                                conn.write(&line.to_ascii_uppercase()).await.unwrap();
                                conn.flush().await.unwrap();
                            }
                            let (n, live, peak) = c3.get();
                            c3.set((n, live - 1, peak));
                        })
                        .detach(|_| {});
                    }
                });
                match first(shutdown::requested(), accept_loop).await {
                    First::A((), _accepting) => {
                        let (n, _, peak) = counts.get();
                        (n, peak)
                    }
                    First::B(never, _) => never,
                }
            }
        })
        .unwrap();
    clients.join().unwrap();
    eprintln!("connections per core (accepted, most live at once): {per_core:?}");
    assert_eq!(per_core.iter().map(|c| c.0).sum::<usize>(), AT_ONCE);
    assert_eq!(
        per_core.iter().map(|c| c.1).sum::<usize>(),
        AT_ONCE,
        "every connection was live at once"
    );
    if per_core.len() > 1 {
        assert!(
            per_core.iter().all(|&(n, _)| n > 0),
            "the kernel spread them: {per_core:?}"
        );
    }
}
