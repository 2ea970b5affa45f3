//! `first`: bias to the earlier argument, and the losers come back unharmed.

use std::time::Duration;

use percore_engine::sync::channel;
use percore_engine::time::sleep;
use percore_engine::{first, first3, First, First3};

#[test]
fn earlier_argument_wins_a_tie() {
    percore_engine::block_on(async {
        match first(std::future::ready(1), std::future::ready(2)).await {
            First::A(v, _) => assert_eq!(v, 1),
            First::B(..) => panic!("bias is to the first argument"),
        }
    });
}

#[test]
fn the_loser_keeps_its_data() {
    percore_engine::block_on(async {
        let (tx, rx) = channel::bounded::<u32>(1);
        let mut recv = Box::pin(rx.recv());
        // The timer wins; the receive is handed back and still gets the message.
        let race = first(sleep(Duration::from_millis(1)), recv.as_mut()).await;
        assert!(matches!(race, First::A((), _)));
        tx.send(9).await.unwrap();
        assert_eq!(recv.await, Some(9));
    });
}

#[test]
fn three_way_race_of_io_timer_and_channel() {
    percore_engine::block_on(async {
        let (tx, rx) = channel::bounded::<&str>(1);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = percore_engine::fd::SharedFd::new(a.into());
        let read = Box::pin(percore_engine::ops::recv(&fd, Vec::with_capacity(16), 0));
        let timer = sleep(Duration::from_secs(60));
        percore_engine::spawn(async move { tx.send("chan").await.unwrap() }).detach(|_| {});
        let r = first3(read, Box::pin(timer), Box::pin(rx.recv())).await;
        match r {
            First3::C(msg, read, _timer) => {
                assert_eq!(msg, Some("chan"));
                // The read lost the race but is intact: data sent now still arrives through it.
                std::io::Write::write_all(&mut &b, b"io").unwrap();
                let (n, buf) = read.await;
                assert_eq!(n.unwrap(), 2);
                assert_eq!(&buf[..], b"io");
            }
            _ => panic!("the channel was the only thing ready"),
        }
    });
}
