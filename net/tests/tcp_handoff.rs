//! Hand-off accepting: one listener on core 0, every connection passed to the least-loaded
//! core. Connections from one client (one source address, which the kernel's reuseport hash
//! would put on one core) still spread evenly over both cores.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::sync::mpsc;

use percore_engine::Runtime;
use percore_net::service::{Accept, TcpService};
use percore_net::tcp::{Handoff, TcpListener};

const CONNECTIONS: usize = 64;

#[test]
fn handoff_spreads_one_clients_connections_evenly() {
    let cores = core_affinity::get_core_ids().map_or(1, |c| c.len()).min(2);
    let rt = Runtime::builder().cpus(0..cores).build().unwrap();
    let handle = rt.handle();
    let handoff = Handoff::new(cores);
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let clients = std::thread::spawn(move || {
        let addr = addr_rx.recv().unwrap();
        // Every connection stays open until all are made, so loads build up on the cores.
        let mut conns = Vec::new();
        let mut per_core = vec![0usize; cores];
        for i in 0..CONNECTIONS {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            writeln!(s, "hello {i}").unwrap();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let core: usize = line.trim().parse().unwrap();
            per_core[core] += 1;
            conns.push(s);
        }
        drop(conns);
        handle.shutdown();
        per_core
    });
    let stats = rt
        .run(|_| {
            let handoff = handoff.clone();
            let addr_tx = addr_tx.clone();
            async move {
                let core = percore_engine::current_core().index;
                let listener = (core == 0).then(|| {
                    let l = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                    addr_tx.send(l.local_addr()).unwrap();
                    l
                });
                let accept = Accept::Handoff { handoff, listener };
                TcpService::new()
                    .serve_with(accept, move |mut conn, _| async move {
                        while let Some(_line) = conn.read_line(1024).await? {
                            conn.write(format!("{core}\n").as_bytes()).await?;
                            conn.flush().await?;
                        }
                        Ok(())
                    })
                    .await
                    .unwrap()
            }
        })
        .unwrap();
    let per_core = clients.join().unwrap();
    eprintln!("hand-off: connections per core {per_core:?}, service stats {stats:?}");
    assert_eq!(per_core.iter().sum::<usize>(), CONNECTIONS);
    assert_eq!(
        stats.iter().map(|s| s.accepted as usize).sum::<usize>(),
        CONNECTIONS
    );
    let (min, max) = (per_core.iter().min(), per_core.iter().max());
    assert!(
        max.unwrap() - min.unwrap() <= 1,
        "least-loaded hand-off spreads evenly: {per_core:?}"
    );
    assert_eq!(handoff.dropped(), 0);
}
