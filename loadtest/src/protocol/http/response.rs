//! One HTTP/1.1 response at the front of a byte stream: where it ends, or why it is not
//! HTTP. Interim `1xx` responses are skipped. Limits: the head is at most [`MAX_HEAD`] bytes
//! and [`MAX_HEADERS`] headers; head plus body at most the configured maximum response size.
//! A status of 400 or above is an error response. The parse resumes where it stopped when
//! more bytes of the same response come (`Progress`), so it is linear in the response
//! however it is cut.

use crate::protocol::{Parsed, ProtocolError, Response};

/// Longest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers accepted in a response.
pub const MAX_HEADERS: usize = 64;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// A final (non-1xx) response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    /// Its length, blank line included.
    pub(super) len: usize,
    status: u16,
    framing: Framing,
    /// The server closes after this response.
    close: bool,
}

impl Head {
    /// The whole response this head begins, when it is at the front of `input` and its body
    /// is framed by its length (or it has none) and all there: the common case, answered
    /// without any parse state. `None` for everything else (a longer parse decides).
    #[inline]
    pub(super) fn whole_response(&self, input: &[u8], max_response: usize) -> Option<Response> {
        let end = match self.framing {
            Framing::None => self.len,
            Framing::Length(len) if self.len.saturating_add(len) <= max_response => self.len + len,
            _ => return None,
        };
        (input.len() >= end).then(|| Response {
            len: end,
            error_status: (self.status >= 400).then_some(self.status),
            close: self.close,
        })
    }
}

/// What [`parse_head`] found at the front of its input.
enum HeadParse {
    Incomplete,
    /// An interim 1xx response head of this length, to skip.
    Interim(usize),
    Final(Head),
}

/// Parses one response from the front of `input` (skipping interim 1xx responses, which are
/// counted in the consumed length). `at_eof`: the server has closed, so a close-delimited body
/// ends at the end of `input`.
///
/// # Errors
///
/// Not HTTP, a malformed head or chunk, or a limit exceeded.
pub fn parse_response(
    input: &[u8],
    head_only: bool,
    max_response: usize,
    at_eof: bool,
) -> Result<Parsed, ProtocolError> {
    Progress::default().parse(input, head_only, max_response, at_eof)
}

/// How far the parse of the response at the front of the input got, kept between calls that
/// see the same response with more bytes, so a response that arrives in many small pieces is
/// parsed in time linear in its length: each interim head is parsed once, a head is looked at
/// again only when its blank line may have come (or, to catch garbage early, when the bytes
/// have doubled since the last look), a chunk-size or trailer line only once its end has come,
/// and each chunk of a chunked body is framed once.
#[derive(Debug, Default, Clone)]
pub(super) struct Progress {
    /// Where the head being looked for starts (past the interim 1xx heads skipped).
    head_start: usize,
    /// Empty lines at `head_start`, which the head parser skips before a status line: stepped
    /// over once here, so they are not read again on every piece.
    head_skip: usize,
    /// Bytes from `head_start` searched for the blank line that ends a head, without finding
    /// one.
    head_scanned: usize,
    /// Bytes from `head_start` the head parser last saw (0: not yet called).
    head_parsed: usize,
    /// The final head, once parsed (it starts at `head_start`).
    pub(super) head: Option<Head>,
    /// A chunked body: where, from the body's start, the next chunk-size line (or trailer
    /// line) starts; the data bytes of the chunks framed so far; and, once the last chunk was
    /// seen, the trailer bytes so far.
    chunk_pos: usize,
    chunk_total: usize,
    trailers: Option<usize>,
    /// Bytes from `chunk_pos` searched for the end of the line there, without finding it.
    line_scanned: usize,
    /// Where the data of the chunk whose size line was parsed ends (from the body's start).
    chunk_data_end: Option<usize>,
}

impl Progress {
    /// Nothing of the response at the front has been parsed yet.
    #[inline]
    pub(super) fn is_fresh(&self) -> bool {
        // `head_scanned` moves only after the head parser has looked (`head_parsed` > 0).
        self.head.is_none() && self.head_parsed == 0 && self.head_start == 0 && self.head_skip == 0
    }

    /// The final head, if it has been parsed and starts at the front (no interim heads).
    pub(super) fn parsed_head(&self) -> Option<Head> {
        self.head.filter(|_| self.head_start == 0)
    }

    /// Parses the response at the front of `input`, going on from where the last call on a
    /// prefix of `input` stopped. A complete response or an error starts the next call afresh.
    fn parse(
        &mut self,
        input: &[u8],
        head_only: bool,
        max_response: usize,
        at_eof: bool,
    ) -> Result<Parsed, ProtocolError> {
        let parsed = self.resume(input, head_only, max_response, at_eof);
        self.finish(&parsed);
        parsed
    }

    /// After a parse: a complete response or an error starts the next parse afresh.
    pub(super) fn finish(&mut self, parsed: &Result<Parsed, ProtocolError>) {
        if !matches!(parsed, Ok(Parsed::Incomplete)) {
            *self = Progress::default();
        }
    }

    /// [`Progress::parse`] without [`Progress::finish`].
    pub(super) fn resume(
        &mut self,
        input: &[u8],
        head_only: bool,
        max_response: usize,
        at_eof: bool,
    ) -> Result<Parsed, ProtocolError> {
        let head = loop {
            if let Some(head) = self.head {
                break head;
            }
            self.skip_empty_lines(&input[self.head_start..]);
            let skip = self.head_skip;
            let rest = &input[self.head_start + skip..];
            // Nothing but empty lines yet (maybe the `\r` of another): nothing to parse.
            if !at_eof && (rest.is_empty() || rest == b"\r") && skip <= MAX_HEAD {
                return Ok(Parsed::Incomplete);
            }
            // Past the head's limit the parser looks once more, to say what is wrong as a
            // fresh parse of the same bytes would.
            if !at_eof && skip + rest.len() <= MAX_HEAD && !self.head_may_be_complete(rest) {
                return Ok(Parsed::Incomplete);
            }
            self.head_parsed = rest.len();
            // The parse as from `head_start`: lengths and limits count the empty lines.
            match parse_head(rest, skip, head_only, at_eof)? {
                HeadParse::Incomplete => return Ok(Parsed::Incomplete),
                HeadParse::Interim(len) => {
                    self.head_start += len;
                    self.head_skip = 0;
                    self.head_scanned = 0;
                    self.head_parsed = 0;
                }
                HeadParse::Final(head) => self.head = Some(head),
            }
        };
        let start = self.head_start;
        let body_start = start + head.len;
        let end = match head.framing {
            Framing::None => Some(body_start),
            Framing::Length(len) => {
                if head.len.saturating_add(len) > max_response {
                    return Err(ProtocolError("http: response larger than --max-response"));
                }
                let end = body_start + len;
                if input.len() >= end {
                    Some(end)
                } else if at_eof {
                    return Err(ProtocolError(
                        "http: connection closed inside a response body",
                    ));
                } else {
                    None
                }
            }
            Framing::Chunked => {
                let max_body = max_response.saturating_sub(head.len);
                match self.chunked_end(&input[body_start..], max_body, at_eof)? {
                    Some(n) => Some(body_start + n),
                    None if at_eof => {
                        return Err(ProtocolError(
                            "http: connection closed inside a chunked body",
                        ))
                    }
                    None => None,
                }
            }
            Framing::UntilClose => {
                if input.len() - start > max_response {
                    return Err(ProtocolError("http: response larger than --max-response"));
                }
                at_eof.then_some(input.len())
            }
        };
        Ok(match end {
            Some(end) => Parsed::Complete(Response {
                len: end,
                error_status: (head.status >= 400).then_some(head.status),
                close: head.close,
            }),
            None => Parsed::Incomplete,
        })
    }

    /// Steps over the complete empty lines (`\r\n` or `\n`) at the front of `from_start` (the
    /// bytes from `head_start`) not yet stepped over. The searches that were relative to
    /// the head's first byte start again.
    fn skip_empty_lines(&mut self, from_start: &[u8]) {
        let before = self.head_skip;
        loop {
            match &from_start[self.head_skip..] {
                [b'\n', ..] => self.head_skip += 1,
                [b'\r', b'\n', ..] => self.head_skip += 2,
                _ => break,
            }
        }
        if self.head_skip != before {
            self.head_scanned = 0;
            self.head_parsed = 0;
        }
    }

    /// Whether the head parser should look at `rest` (the head's bytes so far): the first
    /// time, when a blank line (`\n` then `\n` or `\r\n`, as the parser accepts) has come
    /// since the last search, or when the bytes have doubled since the parser last looked
    /// (so garbage is refused soon, and a long head is parsed O(1) times per byte).
    fn head_may_be_complete(&mut self, rest: &[u8]) -> bool {
        if self.head_parsed == 0 || rest.len() >= self.head_parsed.saturating_mul(2) {
            return true;
        }
        let mut i = self.head_scanned;
        while let Some(off) = rest[i..].iter().position(|&b| b == b'\n') {
            let nl = i + off;
            let blank = match rest.get(nl + 1..nl + 3) {
                _ if rest.get(nl + 1) == Some(&b'\n') => true,
                Some(b"\r\n") => true,
                // The bytes after this `\n` have not all come: look again from it.
                None => {
                    self.head_scanned = nl;
                    return false;
                }
                Some(_) => false,
            };
            if blank {
                // Past it next time: a blank line the parser skips (empty lines before a
                // status line) is not looked at again.
                self.head_scanned = nl + 1;
                return true;
            }
            i = nl + 1;
        }
        self.head_scanned = rest.len();
        false
    }

    /// Whether the line at `chunk_pos` may have ended (a `\n` has come past `line_scanned`);
    /// false also records how far the search got.
    fn line_may_be_complete(&mut self, body: &[u8]) -> bool {
        let line = &body[self.chunk_pos..];
        if line[self.line_scanned..].contains(&b'\n') {
            return true;
        }
        self.line_scanned = line.len();
        false
    }

    /// Where a chunked body that starts `body` ends, if it is all there, framing each chunk
    /// once across calls. `at_eof`: nothing more will come, so a line is parsed as it is.
    fn chunked_end(
        &mut self,
        body: &[u8],
        max_body: usize,
        at_eof: bool,
    ) -> Result<Option<usize>, ProtocolError> {
        loop {
            if let Some(trailer_bytes) = self.trailers {
                return self.trailers_end(body, trailer_bytes);
            }
            let data_end = match self.chunk_data_end {
                Some(end) => end,
                None => {
                    let pos = self.chunk_pos;
                    let too_long = body.len() - pos > MAX_LINE;
                    if !at_eof && !too_long && !self.line_may_be_complete(body) {
                        return Ok(None);
                    }
                    count_parse();
                    let (line_len, size) = match httparse::parse_chunk_size(&body[pos..]) {
                        Ok(httparse::Status::Complete((n, size))) => (n, size),
                        Ok(httparse::Status::Partial) if too_long => {
                            return Err(ProtocolError("http: chunk-size line too long"))
                        }
                        Ok(httparse::Status::Partial) => {
                            // A `\n` the parser takes as part of the line (in an extension):
                            // look for the next one from here.
                            self.line_scanned = body.len() - pos;
                            return Ok(None);
                        }
                        Err(_) => return Err(ProtocolError("http: malformed chunk size")),
                    };
                    self.line_scanned = 0;
                    if size == 0 {
                        self.chunk_pos = pos + line_len;
                        self.trailers = Some(0);
                        continue;
                    }
                    let size = usize::try_from(size).unwrap_or(usize::MAX);
                    let total = self.chunk_total.saturating_add(size);
                    if total > max_body {
                        return Err(ProtocolError("http: response larger than --max-response"));
                    }
                    self.chunk_total = total;
                    let end = (pos + line_len).saturating_add(size);
                    self.chunk_data_end = Some(end);
                    end
                }
            };
            if body.len() < data_end.saturating_add(2) {
                return Ok(None);
            }
            if &body[data_end..data_end + 2] != b"\r\n" {
                return Err(ProtocolError("http: chunk not followed by CRLF"));
            }
            self.chunk_pos = data_end + 2;
            self.chunk_data_end = None;
        }
    }

    /// Skips the trailer section (lines up to an empty one) that goes on at `chunk_pos`,
    /// `trailer_bytes` of it already skipped.
    fn trailers_end(
        &mut self,
        body: &[u8],
        mut trailer_bytes: usize,
    ) -> Result<Option<usize>, ProtocolError> {
        loop {
            let pos = self.chunk_pos;
            // A `\r\n` may straddle the last search's end: look again from its last byte.
            let from = self.line_scanned.saturating_sub(1);
            let found = body[pos + from..].windows(2).position(|w| w == b"\r\n");
            let Some(nl) = found.map(|at| from + at) else {
                self.line_scanned = body.len() - pos;
                return if body.len() - pos > MAX_LINE {
                    Err(ProtocolError("http: trailer line too long"))
                } else {
                    Ok(None)
                };
            };
            self.line_scanned = 0;
            if nl == 0 {
                return Ok(Some(pos + 2));
            }
            trailer_bytes += nl + 2;
            if trailer_bytes > MAX_HEAD {
                return Err(ProtocolError("http: trailers too large"));
            }
            self.chunk_pos = pos + nl + 2;
            self.trailers = Some(trailer_bytes);
        }
    }
}

/// Counts a call of the head or chunk-size parser, for the tests that check a response in
/// many pieces is parsed a bounded number of times (nothing outside tests).
#[inline]
fn count_parse() {
    #[cfg(test)]
    PARSES.with(|n| n.set(n.get() + 1));
}

#[cfg(test)]
thread_local! {
    static PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Parses the response head at the front of `rest`, which follows `skipped` bytes of empty
/// lines: the lengths it returns and the limits it applies count them, as a parse of the
/// whole would.
fn parse_head(
    rest: &[u8],
    skipped: usize,
    head_only: bool,
    at_eof: bool,
) -> Result<HeadParse, ProtocolError> {
    count_parse();
    // Left uninitialised: httparse writes only the headers it finds (no 2 KiB memset per
    // response).
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        rest,
        &mut headers,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => skipped + n,
        Ok(httparse::Status::Partial) => {
            if skipped + rest.len() > MAX_HEAD {
                return Err(ProtocolError("http: response head too large"));
            }
            if at_eof && skipped + rest.len() > 0 {
                return Err(ProtocolError(
                    "http: connection closed inside a response head",
                ));
            }
            return Ok(HeadParse::Incomplete);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProtocolError("http: too many response headers"))
        }
        Err(_) => return Err(ProtocolError("http: malformed response head (not HTTP?)")),
    };
    if head_len > MAX_HEAD {
        return Err(ProtocolError("http: response head too large"));
    }
    let status = response.code.unwrap_or(0);
    let version = response.version.unwrap_or(1);
    if (100..200).contains(&status) && status != 101 {
        return Ok(HeadParse::Interim(head_len));
    }
    let mut framing = if head_only || status == 204 || status == 304 || status == 101 {
        Framing::None
    } else {
        Framing::UntilClose
    };
    let mut close = version == 0;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            if matches!(framing, Framing::Chunked) {
                continue;
            }
            let len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(ProtocolError("http: bad Content-Length"))?;
            if !matches!(framing, Framing::None) {
                framing = Framing::Length(len);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if contains_token(h.value, b"chunked") && !matches!(framing, Framing::None) {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            if contains_token(h.value, b"close") {
                close = true;
            } else if contains_token(h.value, b"keep-alive") {
                close = false;
            }
        }
    }
    if matches!(framing, Framing::UntilClose) {
        close = true;
    }
    Ok(HeadParse::Final(Head {
        len: head_len,
        status,
        framing,
        close,
    }))
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::SplitMix64;

    const MAX: usize = 1 << 20;

    fn complete(input: &[u8]) -> Response {
        match parse_response(input, false, MAX, false).unwrap() {
            Parsed::Complete(r) => r,
            Parsed::Incomplete => panic!("incomplete: {:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn frames_by_length_chunks_and_close() {
        let r = complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1");
        assert_eq!(r, Response::ok(43));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(complete(chunked).len, chunked.len());
        for cut in 0..chunked.len() {
            assert_eq!(
                parse_response(&chunked[..cut], false, MAX, false).unwrap(),
                Parsed::Incomplete,
                "cut {cut}"
            );
        }
        let until_close = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(
            parse_response(until_close, false, MAX, false).unwrap(),
            Parsed::Incomplete
        );
        let r = match parse_response(until_close, false, MAX, true).unwrap() {
            Parsed::Complete(r) => r,
            Parsed::Incomplete => panic!(),
        };
        assert!(r.close);
        assert_eq!(r.len, until_close.len());
    }

    #[test]
    fn statuses_interim_responses_and_close() {
        let r =
            complete(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        assert_eq!(r.error_status, Some(404));
        assert!(r.close);
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(complete(interim), Response::ok(interim.len()));
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        assert_eq!(
            parse_response(head, true, MAX, false).unwrap(),
            Parsed::Complete(Response::ok(head.len()))
        );
    }

    #[test]
    fn refuses_garbage_and_oversize() {
        for bad in [
            &b"percore-load-echo percore"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9999999999\r\n\r\n",
        ] {
            assert!(
                parse_response(bad, false, MAX, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        while huge.len() <= MAX_HEAD {
            huge.extend_from_slice(
                b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert!(parse_response(&huge, false, MAX, false).is_err());
        let closed_early = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(parse_response(closed_early, false, MAX, true).is_err());
    }

    /// Responses built to make a parser that starts over on every piece quadratic, fed a few
    /// bytes at a time to one session: a chunked body of 200,000 one-byte chunks, and 50,000
    /// interim `100 Continue` heads before the final one. Each parses once, in time linear in
    /// its length (starting over would take hours here).
    #[test]
    fn responses_in_many_small_pieces_parse_in_one_pass() {
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..200_000 {
            chunked.extend_from_slice(b"1\r\nx\r\n");
        }
        chunked.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        let mut flood = Vec::new();
        for _ in 0..50_000 {
            flood.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        flood.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
        // In 1-byte pieces: a 60 KB head (50 long headers) after empty lines (which the head
        // parser skips), 30,000 empty lines before a head, a chunk whose size line carries a
        // 4 KB extension, and one whose extension holds a `\n` (which the parser accepts).
        let mut long_head = b"\r\n\r\nHTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..50 {
            long_head.extend_from_slice(b"X-Pad: ");
            long_head.extend(std::iter::repeat_n(b'a', 1200));
            long_head.extend_from_slice(b"\r\n");
        }
        long_head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let mut long_line = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;x=".to_vec();
        long_line.extend(std::iter::repeat_n(b'y', 4000));
        long_line.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        let mut empty_lines = b"\r\n".repeat(30_000);
        empty_lines.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        let mut newline_in_extension =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;x\n".to_vec();
        newline_in_extension.extend(std::iter::repeat_n(b'y', 4000));
        newline_in_extension.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        // The head and chunk-size parser calls each may make: a few per head, chunk and
        // doubling of a head's bytes; starting over on every piece would be one per piece.
        for (input, step, most_parses) in [
            (&chunked, 3, 200_010),
            // Each 25-byte head is looked at after its first piece, again as its bytes
            // double, and once its blank line is in: at most 6 times.
            (&flood, 5, 300_010),
            (&long_head, 1, 40),
            (&long_line, 1, 40),
            (&empty_lines, 1, 40),
            (&newline_in_extension, 1, 40),
        ] {
            let before = PARSES.with(|n| n.get());
            let mut progress = Progress::default();
            let mut end = 0;
            while end < input.len() {
                end = (end + step).min(input.len());
                let parsed = progress
                    .parse(&input[..end], false, 16 << 20, false)
                    .unwrap();
                if end < input.len() {
                    assert_eq!(parsed, Parsed::Incomplete, "at {end}");
                } else {
                    assert_eq!(parsed, Parsed::Complete(Response::ok(input.len())));
                }
            }
            let parses = PARSES.with(|n| n.get()) - before;
            assert!(
                parses <= most_parses,
                "{parses} parses of {} bytes",
                input.len()
            );
        }
    }

    /// One session fed growing prefixes of a stream (random mutations and cuts of valid
    /// responses, back to back) agrees with a fresh parse of each prefix: whenever either
    /// finds a response it is the same one, every error it reports a fresh parse reports, and
    /// at the end of the stream they agree exactly. (Before the end it may see garbage a
    /// little later than a fresh parse, never a complete response later.)
    #[test]
    fn incremental_parse_agrees_with_a_fresh_parse() {
        let seeds: [&[u8]; 5] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;a=b\r\nx\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.0 500 Oops\r\n\r\nbody",
            b"HTTP/1.1 204 No Content\n\n",
            b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ];
        let mut rng = SplitMix64(99);
        for round in 0..20_000u32 {
            let mut input = seeds[round as usize % seeds.len()].to_vec();
            for _ in 0..(rng.next_u64() % 3) {
                let i = (rng.next_u64() as usize) % input.len();
                match rng.next_u64() % 3 {
                    0 => input[i] = b"\r\n0123456789abcdef:; H"[(rng.next_u64() % 21) as usize],
                    1 => {
                        input.remove(i);
                    }
                    _ => input.insert(i, b"\r\n1;"[(rng.next_u64() % 4) as usize]),
                }
                if input.is_empty() {
                    input.push(b'H');
                }
            }
            let head_only = round % 11 == 0;
            let mut progress = Progress::default();
            let mut end = 0;
            loop {
                end = (end + 1 + (rng.next_u64() % 9) as usize).min(input.len());
                let prefix = &input[..end];
                let at_eof = end == input.len();
                let incremental = progress.parse(prefix, head_only, 4096, at_eof);
                let fresh = parse_response(prefix, head_only, 4096, at_eof);
                let what = String::from_utf8_lossy(prefix);
                if at_eof || !matches!(incremental, Ok(Parsed::Incomplete)) {
                    assert_eq!(incremental, fresh, "{what:?}");
                } else {
                    assert!(!matches!(fresh, Ok(Parsed::Complete(_))), "{what:?}");
                }
                if at_eof || !matches!(incremental, Ok(Parsed::Incomplete)) {
                    break;
                }
            }
        }
    }

    /// Empty lines past the head's limit are refused as a too-large head, as a fresh parse of
    /// them is, however they arrive.
    #[test]
    fn endless_empty_lines_are_a_head_too_large() {
        let lines = b"\r\n".repeat(MAX_HEAD / 2 + 8);
        let mut progress = Progress::default();
        let mut verdict = Ok(Parsed::Incomplete);
        for end in (1..=lines.len()).step_by(7) {
            verdict = progress.parse(&lines[..end], false, MAX, false);
            if verdict != Ok(Parsed::Incomplete) {
                break;
            }
        }
        assert_eq!(verdict, parse_response(&lines, false, MAX, false));
        assert!(verdict.is_err());
    }

    /// A head that passes its limit without a blank line, with a byte the head parser refuses
    /// arriving after its last look: the error is the one a fresh parse gives.
    #[test]
    fn a_head_past_its_limit_gets_a_fresh_parse_verdict() {
        let mut input = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        input.resize(40_000, b'a');
        let mut progress = Progress::default();
        assert_eq!(
            progress.parse(&input, false, MAX, false),
            Ok(Parsed::Incomplete)
        );
        input.push(0x01);
        input.resize(65_601, b'a');
        assert_eq!(
            progress.parse(&input, false, MAX, false),
            parse_response(&input, false, MAX, false)
        );
    }

    /// Random bytes, and random mutations and cuts of valid responses: the parser never panics,
    /// and whatever it calls complete lies within the input.
    #[test]
    fn fuzz_never_panics_and_stays_in_bounds() {
        let seeds: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 500 Oops\r\n\r\nbody",
        ];
        let mut rng = SplitMix64(42);
        for round in 0..200_000u32 {
            let mut input: Vec<u8> = if round % 4 == 0 {
                let len = (rng.next_u64() % 200) as usize;
                (0..len).map(|_| rng.next_u64() as u8).collect()
            } else {
                seeds[round as usize % 3].to_vec()
            };
            for _ in 0..(rng.next_u64() % 4) {
                if input.is_empty() {
                    break;
                }
                let i = (rng.next_u64() as usize) % input.len();
                match rng.next_u64() % 3 {
                    0 => input[i] = rng.next_u64() as u8,
                    1 => input.truncate(i),
                    _ => input.insert(
                        i,
                        b"0123456789abcdef\r\n:; "[(rng.next_u64() % 21) as usize],
                    ),
                }
            }
            for at_eof in [false, true] {
                if let Ok(Parsed::Complete(r)) =
                    parse_response(&input, round % 7 == 0, 4096, at_eof)
                {
                    assert!(r.len <= input.len());
                    assert!(r.len > 0);
                }
            }
        }
    }
}
