//! Running out of fds: the listener backs off (counted, never spinning), existing connections
//! keep working, and accepting resumes when fds free up. Its own test binary, because it lowers
//! the process's fd limit.

use std::io::{Read, Write};
use std::time::Duration;

use percore_net::tcp::TcpListener;
use socket2::{Domain, Socket, Type};

const CLIENTS: usize = 20;
const ROOM: u64 = 5;

fn set_nofile(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let old = lim.rlim_cur;
        lim.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        old
    }
}

#[test]
fn accept_backs_off_at_the_fd_limit_and_recovers() {
    percore_engine::block_on(async {
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        // Client sockets get their fds before the limit drops; connecting needs no new fd.
        let clients: Vec<Socket> = (0..CLIENTS)
            .map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap())
            .collect();
        let mut first_client: std::net::TcpStream = clients[0].try_clone().unwrap().into();
        let open = percore_engine::open_fd_count().unwrap() as u64;
        let old = set_nofile(open + ROOM);
        for c in &clients {
            c.connect(&addr.into()).unwrap();
        }
        let mut held = Vec::new();
        let t0 = std::time::Instant::now();
        while listener.stats().resource_errors == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "never hit the limit: {:?}",
                listener.stats()
            );
            let accepted =
                percore_engine::scope::move_on_after(Duration::from_millis(50), listener.accept())
                    .await;
            if let Some(r) = accepted {
                held.push(r.unwrap().0);
            }
        }
        // The limit is on fd numbers, so holes in the fd table may leave a little more room.
        assert!(
            held.len() < CLIENTS,
            "the limit must have stopped accepting: {}",
            held.len()
        );
        // Existing connections keep working while the listener backs off.
        if let Some(conn) = held.first() {
            let (r, _) = conn.write(b"still here".to_vec()).await;
            r.unwrap();
        }
        // Backing off, not spinning: waiting at the limit for 300 ms costs a handful of
        // failed accepts (the back-off doubles from 5 ms), not one per loop turn.
        let errors_before = listener.stats().resource_errors;
        let accepted =
            percore_engine::scope::move_on_after(Duration::from_millis(300), listener.accept())
                .await;
        if let Some(r) = accepted {
            // Holes in the fd table may still leave room for one more.
            held.push(r.unwrap().0);
        }
        let retries = listener.stats().resource_errors - errors_before;
        assert!(
            retries <= 20,
            "{retries} failed accepts in 300 ms: spinning"
        );
        // Free the fds: accepting resumes and every waiting client is taken.
        let served_before = held.len();
        held.clear();
        let mut served = served_before;
        while served < CLIENTS {
            let r = percore_engine::time::timeout(Duration::from_secs(10), listener.accept()).await;
            // Each connection is closed at once, so the limit is not hit again.
            drop(r.expect("accepting resumed").unwrap().0);
            served += 1;
        }
        set_nofile(old);
        let stats = listener.stats();
        eprintln!("{stats:?}");
        assert!(stats.resource_errors >= 1);
        assert_eq!(stats.accepted as usize, CLIENTS);
        if served_before > 0 {
            let mut buf = [0u8; 10];
            first_client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            first_client.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"still here");
        }
        let _ = first_client.write_all(b"bye");
    });
}
