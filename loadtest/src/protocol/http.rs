//! HTTP/1.1 with keep-alive: one prebuilt request, and the responses parsed incrementally
//! ([`response`]: `httparse` for the head, a hand-written framer for the body), the head of a
//! server's repeated answer remembered across responses (`HeadMemo`).

use std::sync::Arc;

use super::{Parsed, Protocol, ProtocolError, Session, Transport};
use crate::config::HttpOptions;

pub mod response;

pub use response::{parse_response, MAX_HEAD, MAX_HEADERS};
use response::{Head, Progress};

/// HTTP/1.1 requests of one shape.
#[derive(Debug)]
pub struct Http {
    request: Arc<[u8]>,
    head_only: bool,
    max_response: usize,
}

impl Http {
    /// `method path` on `host`, with the options' headers and body.
    pub fn new(host: &str, path: &str, options: &HttpOptions, max_response: usize) -> Http {
        let has = |name: &str| {
            options
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        let mut req = format!("{} {} HTTP/1.1\r\n", options.method, path);
        // A `Host` among the headers replaces the target's.
        if !has("host") {
            req.push_str(&format!("Host: {host}\r\n"));
        }
        for (name, value) in &options.headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if !options.body.is_empty() && !has("content-length") {
            req.push_str(&format!("Content-Length: {}\r\n", options.body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&options.body);
        Http {
            request: bytes.into(),
            // Methods are case-sensitive: only `HEAD` is answered without a body.
            head_only: options.method == "HEAD",
            max_response,
        }
    }
}

impl Protocol for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn transport(&self) -> Transport {
        Transport::Stream
    }

    fn pipelines(&self) -> bool {
        true
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(HttpSession {
            request: self.request.clone(),
            head_only: self.head_only,
            max_response: self.max_response,
            progress: Progress::default(),
        })
    }
}

struct HttpSession {
    request: Arc<[u8]>,
    head_only: bool,
    max_response: usize,
    /// How far the response at the front of the input has been parsed.
    progress: Progress,
}

impl Session for HttpSession {
    fn write_request(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request);
    }

    fn parse(&mut self, input: &[u8]) -> Result<Parsed, ProtocolError> {
        self.parse_memoised(input, false)
    }

    /// Empty lines (`\r\n` or `\n`, the last perhaps cut after its `\r`), as some servers
    /// send after a response: what the parse steps over before a status line. A `\r` that is
    /// not followed by `\n` is not an empty line.
    fn filler(&self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        loop {
            rest = match rest {
                [] | [b'\r'] => return true,
                [b'\r', b'\n', tail @ ..] | [b'\n', tail @ ..] => tail,
                _ => return false,
            };
        }
    }

    fn parse_at_eof(&mut self, input: &[u8]) -> Result<Parsed, ProtocolError> {
        self.parse_memoised(input, true)
    }
}

impl HttpSession {
    /// [`Progress::parse`], skipping the head parse when a fresh response starts with the
    /// same bytes as the last head parsed.
    fn parse_memoised(&mut self, input: &[u8], at_eof: bool) -> Result<Parsed, ProtocolError> {
        if self.progress.is_fresh() {
            let remembered = HEAD_MEMO.with_borrow(|memo| memo.lookup(input, self.head_only));
            if let Some(head) = remembered {
                if let Some(response) = head.whole_response(input, self.max_response) {
                    return Ok(Parsed::Complete(response));
                }
                self.progress.head = Some(head);
            }
        }
        let memoise = self.progress.head.is_none();
        let parsed = self
            .progress
            .resume(input, self.head_only, self.max_response, at_eof);
        if let (true, Some(head)) = (memoise, self.progress.parsed_head()) {
            HEAD_MEMO.with_borrow_mut(|memo| memo.store(&input[..head.len], self.head_only, head));
        }
        self.progress.finish(&parsed);
        parsed
    }
}

thread_local! {
    /// The head last parsed on this thread (a generator shard: every connection of it talks
    /// to the same server), shared by its sessions; see [`HeadMemo`].
    static HEAD_MEMO: std::cell::RefCell<HeadMemo> = std::cell::RefCell::new(HeadMemo::default());
}

/// Longest head the memo keeps (longer heads are parsed every time).
const MEMO_MAX: usize = 1024;

/// The head of the last response, kept because a server under load answers one request with
/// the same head again and again (nginx changes only its `Date:` line, once a second).
///
/// A head's parse depends only on its own bytes, up to and including the blank line that ends
/// it, and on whether the request was a `HEAD` (no body follows): a response to a request of
/// the same kind whose first `bytes.len()` bytes equal `bytes` has exactly the head `head`, so
/// comparing the bytes (one `memcmp`) stands in for parsing and validating them again. The
/// body is framed and checked on every response.
#[derive(Default)]
struct HeadMemo {
    bytes: Vec<u8>,
    /// The head, and whether it answered a `HEAD` request.
    head: Option<(Head, bool)>,
}

impl HeadMemo {
    fn lookup(&self, input: &[u8], head_only: bool) -> Option<Head> {
        let (head, for_head_only) = self.head?;
        (for_head_only == head_only && input.starts_with(&self.bytes)).then_some(head)
    }

    fn store(&mut self, bytes: &[u8], head_only: bool, head: Head) {
        if bytes.len() > MEMO_MAX {
            self.head = None;
            return;
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.head = Some((head, head_only));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::SplitMix64;

    /// A session's memoised parse gives exactly what a fresh parse gives, over a stream of
    /// responses that mostly repeat a head (memo hits), sometimes change it (a byte of the head
    /// mutated, cut, or the head swapped), with bodies cut short, at the end of the stream or
    /// not.
    #[test]
    fn memoised_parse_equals_fresh_parse() {
        let heads: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\n",
        ];
        let bodies: [&[u8]; 4] = [b"hello\n", b"5\r\nhello\r\n0\r\n\r\n", b"abc", b"rest"];
        let mut rng = SplitMix64(7);
        // Two sessions of each kind on one thread share its memo; they take turns at random.
        let mut sessions: Vec<HttpSession> = [false, true, false, true]
            .into_iter()
            .map(|head_only| HttpSession {
                request: Arc::from(&b""[..]),
                head_only,
                max_response: 4096,
                progress: Progress::default(),
            })
            .collect();
        for round in 0..2 {
            let mut hits = 0;
            for _ in 0..100_000u32 {
                let which = if rng.next_u64() % 8 == 0 {
                    (rng.next_u64() % 4) as usize
                } else {
                    0
                };
                let mut input = heads[which].to_vec();
                input.extend_from_slice(bodies[which]);
                input.extend_from_slice(b"HTTP/1.1 ");
                match rng.next_u64() % 6 {
                    0 => {
                        let i = (rng.next_u64() as usize) % input.len();
                        input[i] = rng.next_u64() as u8;
                    }
                    1 => input.truncate((rng.next_u64() as usize) % input.len()),
                    _ => {}
                }
                let at_eof = rng.next_u64() % 5 == 0;
                // Round 0: mostly one kind of session; round 1: kinds mixed at random.
                let session = &mut sessions[if round == 0 {
                    (rng.next_u64() % 2 * 2) as usize
                } else {
                    (rng.next_u64() % 4) as usize
                }];
                let head_only = session.head_only;
                let memo_hit =
                    HEAD_MEMO.with_borrow(|memo| memo.lookup(&input, head_only).is_some());
                let fresh = parse_response(&input, head_only, 4096, at_eof);
                // Each input is a response of its own, not more bytes of the last one.
                session.progress = Progress::default();
                // One time in three, a prefix of it comes first (a remembered head carried
                // into a body still to come). While that is incomplete the whole parses as a
                // fresh parse of it does, except that before the end of the stream a parse
                // that goes on may see garbage in a head later (never a response later).
                let mut resumed = false;
                if rng.next_u64() % 3 == 0 && input.len() > 1 {
                    let cut = 1 + (rng.next_u64() as usize) % (input.len() - 1);
                    let first = session.parse_memoised(&input[..cut], false);
                    if first != Ok(Parsed::Incomplete) {
                        let fresh_prefix = parse_response(&input[..cut], head_only, 4096, false);
                        assert_eq!(first, fresh_prefix, "{:?}", String::from_utf8_lossy(&input));
                        continue;
                    }
                    resumed = true;
                }
                let memoised = session.parse_memoised(&input, at_eof);
                if resumed && !at_eof && memoised == Ok(Parsed::Incomplete) {
                    assert!(
                        !matches!(fresh, Ok(Parsed::Complete(_))),
                        "{:?}",
                        String::from_utf8_lossy(&input)
                    );
                } else {
                    assert_eq!(memoised, fresh, "{:?}", String::from_utf8_lossy(&input));
                }
                hits += usize::from(memo_hit);
            }
            let least = if round == 0 { 40_000 } else { 12_000 };
            assert!(
                hits > least,
                "round {round}: the memo was hit only {hits} times"
            );
        }
    }

    #[test]
    fn filler_is_whole_empty_lines_and_a_cut_crlf() {
        let http = Http::new("h", "/", &HttpOptions::default(), 1 << 20);
        let session = http.session();
        for ok in [&b""[..], b"\r\n", b"\n", b"\r\n\n\r\n", b"\r", b"\n\r"] {
            assert!(session.filler(ok), "{ok:?}");
        }
        for not in [&b"\r\r\n"[..], b"\r\r", b"\n\rX", b" \r\n", b"HTTP/1.1"] {
            assert!(!session.filler(not), "{not:?}");
        }
    }
}
