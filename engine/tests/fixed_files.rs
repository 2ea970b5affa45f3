//! Registered files: a send names its socket by table slot; the slot goes back, and the socket
//! really closes, when the last handle goes; a hand-off gives the slot back first; a send
//! dropped mid-flight on a registered socket leaks nothing.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;

use common::{assert_settles_to, baseline, full_unix_pair, poll_once, run_serial, unix_pair};
use percore_engine::ops;

fn fixed_files() -> u64 {
    percore_engine::stats::current().fixed_files
}

#[test]
fn a_registered_socket_sends_by_slot_and_closes_when_its_last_handle_goes() {
    run_serial(async {
        let base = baseline();
        let (ours, mut theirs) = unix_pair();
        assert_eq!(ours.fixed_slot(), None);
        assert!(ours.register(), "this kernel has registered files");
        let slot = ours.fixed_slot().expect("a slot");
        assert!(ours.register(), "registering again keeps the slot");
        assert_eq!(ours.fixed_slot(), Some(slot));
        assert_eq!(fixed_files(), 1);

        for round in 0..100u32 {
            let msg = format!("message {round:03}").into_bytes();
            let (sent, buf) = ops::send(&ours, msg, 0).await;
            assert_eq!(sent.unwrap(), buf.len());
            let mut got = vec![0u8; buf.len()];
            theirs.read_exact(&mut got).unwrap();
            assert_eq!(got, buf);
        }

        // The table holds its own reference to the file: only giving the slot back lets the
        // socket close, which the peer sees as end of stream.
        drop(ours);
        assert_eq!(fixed_files(), 0);
        theirs
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut rest = Vec::new();
        assert_eq!(theirs.read_to_end(&mut rest).unwrap(), 0);
        drop(theirs);
        assert_settles_to(base, "registered send").await;
    });
}

#[test]
fn slots_are_reused_and_a_hand_off_gives_the_slot_back_first() {
    run_serial(async {
        let (a, _pa) = unix_pair();
        let (b, _pb) = unix_pair();
        assert!(a.register() && b.register());
        let slot_a = a.fixed_slot().unwrap();
        assert_ne!(Some(slot_a), b.fixed_slot());
        assert_eq!(fixed_files(), 2);

        let owned = a.try_unwrap().expect("no op holds it");
        assert_eq!(fixed_files(), 1);
        // The fd itself is intact and usable after the hand-off.
        let mut std_side = UnixStream::from(owned);
        std::io::Write::write_all(&mut std_side, b"still open").unwrap();

        let (c, _pc) = unix_pair();
        assert!(c.register());
        assert_eq!(c.fixed_slot(), Some(slot_a), "a freed slot is reused");
        drop((b, c));
        assert_eq!(fixed_files(), 0);
    });
}

#[test]
fn dropping_a_registered_send_mid_flight_leaks_nothing() {
    run_serial(async {
        let base = baseline();
        let (ours, theirs) = full_unix_pair();
        assert!(ours.register());
        // The send buffer is full: the send waits in the kernel until it is cancelled.
        let send = poll_once(ops::send(&ours, vec![7u8; 4096], 0)).await;
        assert!(ours.holders() > 1, "the op holds the fd");
        drop(send);
        drop(ours);
        drop(theirs);
        assert_settles_to(base, "dropped registered send").await;
        assert_eq!(fixed_files(), 0);
    });
}

/// A slot belongs to the ring that gave it out. A socket registered under one core and used
/// under the next one on the same thread sends by fd there, and dropping it there leaves the
/// new ring's table alone (its slot 0 belongs to another socket by then).
#[test]
fn a_slot_from_another_ring_is_never_used_or_emptied() {
    let _guard = common::serial();
    let (old, mut old_peer) = percore_engine::block_on(async {
        let (ours, theirs) = unix_pair();
        assert!(ours.register());
        (ours, theirs)
    });
    assert!(old.fixed_slot().is_none(), "no core runs here");
    percore_engine::block_on(async move {
        let (fresh, mut fresh_peer) = unix_pair();
        assert!(fresh.register());
        assert_eq!(fixed_files(), 1);
        assert_eq!(
            old.fixed_slot(),
            None,
            "the old ring's slot does not count here"
        );
        assert!(!old.register(), "it cannot take a second slot");

        let (sent, _) = ops::send(&old, b"old".to_vec(), 0).await;
        assert_eq!(sent.unwrap(), 3);
        let mut got = [0u8; 3];
        old_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"old", "the old socket's bytes reached its own peer");

        drop(old);
        assert_eq!(fixed_files(), 1, "the fresh ring's table is untouched");
        let (sent, _) = ops::send(&fresh, b"fresh".to_vec(), 0).await;
        assert_eq!(sent.unwrap(), 5);
        let mut got = [0u8; 5];
        fresh_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"fresh");
        drop(fresh);
        assert_eq!(fixed_files(), 0);
    });
}
