//! `BufStream::start_flush`: replies sent behind the handler's back. A line server answering
//! with it is woken once per exchange (its replies' completions wake nobody); replies of 1 B
//! .. 16 MiB arrive whole and in order; a send's failure comes back from the next call that
//! settles it; end of stream settles the last one. (A peer that does not read, and dropped
//! sends: `bufstream_start_flush_leaks.rs`.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

mod support;
use support::pair;

/// A client thread's lock-step line exchanges; the server upper-cases each line and replies
/// with `start_flush`. Each reply is right, and the server's task is polled about once per
/// exchange: for the request, not for the reply's completion (an awaited flush: twice).
#[test]
fn replies_sent_behind_wake_the_handler_once_per_exchange() {
    const EXCHANGES: u64 = 2000;
    percore_engine::block_on(async {
        let (mut conn, client) = pair(64 << 10).await;
        let talker = std::thread::spawn(move || {
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let mut writer = client;
            for i in 0..EXCHANGES {
                writer.write_all(format!("holla {i}\n").as_bytes()).unwrap();
                let mut reply = String::new();
                reader.read_line(&mut reply).unwrap();
                assert_eq!(reply, format!("HOLLA {i}\n"));
            }
            writer.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        });
        let server = percore_engine::spawn(async move {
            let mut first = None;
            let mut answered = 0u64;
            while let Some(line) = conn.read_line(1024).await.unwrap() {
                // Counted from the first request on: the set-up's polls are not exchanges.
                first.get_or_insert(percore_engine::stats::current().tasks_polled);
                conn.write(&line.to_ascii_uppercase()).await.unwrap();
                conn.start_flush().await.unwrap();
                answered += 1;
            }
            let polls = percore_engine::stats::current().tasks_polled - first.unwrap();
            // The peer reads to the end: it gets it now, not when the fd's close (an op of
            // this core's, which the main future's blocking join below would hold up) runs.
            conn.shutdown_write().await.unwrap();
            (answered, polls)
        });
        let (answered, polls) = server.await.unwrap();
        talker.join().unwrap();
        assert_eq!(answered, EXCHANGES);
        // One poll per request, plus the end of stream and a few strays (a request split
        // across two segments); an awaited flush makes it two per exchange.
        assert!(
            polls <= EXCHANGES + EXCHANGES / 10,
            "{polls} task polls for {EXCHANGES} exchanges"
        );
    });
}

/// Replies of 1 B to 16 MiB, each sent behind and settled by the next; the peer reads them
/// whole and in order.
#[test]
fn replies_of_1_byte_to_16_mib_sent_behind_arrive_whole() {
    let sizes = [1usize, 100, 4096, 65_537, 1 << 20, 16 << 20];
    percore_engine::block_on(async {
        let (mut conn, mut client) = pair(32 << 20).await;
        let reader = std::thread::spawn(move || {
            for size in sizes {
                let mut got = vec![0u8; size];
                client.read_exact(&mut got).unwrap();
                let want: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
                assert!(got == want, "{size} B: the reply differs");
            }
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "{} bytes after the last reply", rest.len());
        });
        for size in sizes {
            let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            conn.write_vec(payload).await.unwrap();
            conn.start_flush().await.unwrap();
        }
        conn.shutdown_write().await.unwrap();
        reader.join().unwrap();
    });
}

/// The peer resets the connection: the sends behind fail, and the failure comes back from a
/// later call (the next start_flush, or a flush) rather than passing silently.
#[test]
fn a_failed_send_behind_is_reported_by_a_later_call() {
    percore_engine::block_on(async {
        let (mut conn, client) = pair(64 << 10).await;
        // Closed with unread bytes in its buffer: the kernel resets the connection.
        conn.write(b"hello\n").await.unwrap();
        conn.flush().await.unwrap();
        drop(client);
        percore_engine::time::sleep(Duration::from_millis(20)).await;
        let mut failed = None;
        for _ in 0..100 {
            conn.write(&[1u8; 1024]).await.unwrap();
            if let Err(e) = conn.start_flush().await {
                failed = Some(e);
                break;
            }
        }
        let err = match failed {
            Some(e) => e,
            None => conn.flush().await.unwrap_err(),
        };
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{err}"
        );
    });
}

/// End of stream settles the last reply: the read that meets it returns once the reply went,
/// with no send left in flight.
#[test]
fn end_of_stream_settles_the_last_send() {
    percore_engine::block_on(async {
        let (mut conn, mut client) = pair(64 << 10).await;
        client.write_all(b"last\n").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let line = conn.read_line(64).await.unwrap().unwrap();
        conn.write(&line).await.unwrap();
        conn.start_flush().await.unwrap();
        assert!(conn.read_line(64).await.unwrap().is_none());
        assert!(format!("{conn:?}").contains("sending: false"), "{conn:?}");
        drop(conn);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last\n");
    });
}

/// A last line without its newline comes with the end of the stream (`read_line` gives it
/// whole, then `None`): the reply to it, started after the end was seen, is settled by the
/// `None`, so it is not dropped unsent with the stream.
#[test]
fn the_reply_to_a_last_line_without_newline_is_settled_too() {
    percore_engine::block_on(async {
        let (mut conn, mut client) = pair(64 << 10).await;
        client.write_all(b"one\ntwo").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut lines = Vec::new();
        while let Some(line) = conn.read_line(64).await.unwrap() {
            conn.write(&line.to_ascii_uppercase()).await.unwrap();
            conn.start_flush().await.unwrap();
            lines.push(line);
        }
        assert_eq!(lines, [&b"one\n"[..], &b"two"[..]]);
        assert!(format!("{conn:?}").contains("sending: false"), "{conn:?}");
        drop(conn);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ONE\nTWO");
    });
}
