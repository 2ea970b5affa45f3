//! Protocols are plug-ins: a [`Protocol`] makes one [`Session`] per connection, which writes
//! requests and parses responses incrementally. Stream protocols (TCP echo, HTTP/1.1) parse
//! from the front of the bytes received so far; datagram protocols (UDP echo) check each
//! datagram. Redis and DNS arrive with their protocol crates as more implementations of the
//! same two traits.
//!
//! A session never panics on input, bounds every length it reads, and reports a response that
//! is not what the protocol promises as a [`ProtocolError`] (counted, and the connection is
//! reopened).

use std::fmt;
use std::sync::Arc;

use crate::config::LoadConfig;
use crate::target::Target;

pub mod echo;
pub mod http;

/// How a protocol's bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A connected byte stream (TCP).
    Stream,
    /// Datagrams on a connected UDP socket.
    Datagram,
}

/// A protocol the load generator speaks.
pub trait Protocol: Send + Sync + fmt::Debug {
    /// Short name, as in the target's scheme.
    fn name(&self) -> &'static str;
    /// Stream or datagram.
    fn transport(&self) -> Transport;
    /// Whether several requests may be outstanding on one connection.
    fn pipelines(&self) -> bool;
    /// A fresh session for a new connection.
    fn session(&self) -> Box<dyn Session>;
    /// Datagram protocols: whether a session tells a late answer to an earlier request from
    /// the answer to the one in flight ([`DatagramCheck::Stale`]). When it cannot, the
    /// driver replaces a socket whose request timed out, so that a late answer cannot pass
    /// for the next request's (and every later one's). The default: it can.
    fn tells_late_answers(&self) -> bool {
        true
    }
}

/// One connection's view of the protocol.
pub trait Session {
    /// Appends the next request to `out`.
    fn write_request(&mut self, out: &mut Vec<u8>);

    /// Parses the response at the front of `input` (stream protocols).
    ///
    /// A session may remember how far it got: until a call returns a complete response or an
    /// error, the next call's `input` starts with this call's `input` (the same response,
    /// more bytes), so a response that arrives in many pieces costs time linear in its length.
    ///
    /// # Errors
    ///
    /// The bytes cannot be a response of this protocol, or exceed a limit.
    fn parse(&mut self, input: &[u8]) -> Result<Parsed, ProtocolError>;

    /// Like [`Session::parse`] once the peer has closed: a response delimited by the end of
    /// the stream completes here. The default has no such responses.
    ///
    /// # Errors
    ///
    /// As [`Session::parse`].
    fn parse_at_eof(&mut self, input: &[u8]) -> Result<Parsed, ProtocolError> {
        self.parse(input)
    }

    /// Whether `bytes`, received with no request outstanding, are filler the protocol lets a
    /// peer send between responses (HTTP's empty lines before a status line): they are
    /// dropped instead of being counted as bytes nobody asked for. (A filler cut short, a
    /// `\r` whose `\n` comes next, must also be filler when its rest comes alone.) The
    /// default: nothing is.
    fn filler(&self, bytes: &[u8]) -> bool {
        let _ = bytes;
        false
    }

    /// Checks one datagram against the request in flight (datagram protocols).
    ///
    /// # Errors
    ///
    /// The datagram is not an answer of this protocol.
    fn check_datagram(&mut self, datagram: &[u8]) -> Result<DatagramCheck, ProtocolError> {
        let _ = datagram;
        Err(ProtocolError("not a datagram protocol"))
    }
}

/// What [`Session::parse`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// One response, `len` bytes long, is complete.
    Complete(Response),
}

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Its length in bytes (consumed from the input).
    pub len: usize,
    /// `Some(status)` when the protocol answered with an error status (HTTP 4xx/5xx).
    pub error_status: Option<u16>,
    /// The server will close the connection after this response.
    pub close: bool,
}

impl Response {
    /// A successful response of `len` bytes on a connection that stays open.
    pub fn ok(len: usize) -> Response {
        Response {
            len,
            error_status: None,
            close: false,
        }
    }
}

/// What [`Session::check_datagram`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramCheck {
    /// The answer to the request in flight.
    Answer,
    /// A late answer to an earlier request (which already timed out): ignore it.
    Stale,
}

/// A response that breaks the protocol; the text names the violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolError(pub &'static str);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// The protocol a configuration asks for.
pub fn for_config(config: &LoadConfig) -> Arc<dyn Protocol> {
    match &config.target {
        Target::Tcp { .. } => Arc::new(echo::StreamEcho::new(config.payload)),
        Target::Udp { .. } => Arc::new(echo::DatagramEcho::new(config.payload)),
        Target::Http { host, path, .. } => Arc::new(http::Http::new(
            host,
            path,
            &config.http,
            config.max_response,
        )),
    }
}
