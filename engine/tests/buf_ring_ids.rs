//! Buffer group ids: given back when a ring goes and reused, and a ring unregistered only on
//! the ring it was registered on (a `BufRing` dropped inside a nested `block_on` leaves the
//! inner core's group of the same id alone).

use std::io::Write;
use std::os::unix::net::UnixStream;

use percore_engine::buf::ring::BufRing;
use percore_engine::fd::SharedFd;
use percore_engine::ops;

#[test]
fn a_dropped_ring_s_group_id_is_reused() {
    percore_engine::block_on(async {
        let first = BufRing::new(4, 64).unwrap();
        let id = first.bgid();
        drop(first);
        for _ in 0..3 {
            let again = BufRing::new(4, 64).unwrap();
            assert_eq!(again.bgid(), id, "the id came back");
        }
    });
}

#[test]
fn a_ring_dropped_in_a_nested_core_leaves_that_core_s_group_alone() {
    percore_engine::block_on(async {
        let outer = BufRing::new(4, 64).unwrap();
        percore_engine::block_on(async move {
            let inner = BufRing::new(4, 64).unwrap();
            assert_eq!(inner.bgid(), outer.bgid(), "same id, two rings");
            drop(outer);
            let (a, mut b) = UnixStream::pair().unwrap();
            let a = SharedFd::from(std::os::fd::OwnedFd::from(a));
            let mut stream = ops::recv_multishot(&a, &inner).unwrap();
            b.write_all(b"still registered").unwrap();
            // Before the fix, the outer ring's drop unregistered this core's group of the same
            // id and the receive failed with ENOBUFS.
            let chunk = match stream.next().await.expect("a completion") {
                ops::Received::Data(buf) => buf,
                other => panic!("expected data, got {other:?}"),
            };
            assert_eq!(&chunk[..], b"still registered");
        });
    });
}
