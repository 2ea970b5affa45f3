//! A planned run: target, loop mode, size, and limits.

use std::time::Duration;

use crate::target::Target;

/// How requests are issued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Requests at a fixed total rate (requests/s across all connections and cores), each with
    /// an intended send time fixed in advance; latency is measured from that time.
    Open {
        /// Total requests per second.
        rate: f64,
        /// Spacing of the intended times.
        arrival: Arrival,
    },
    /// Each connection sends its next request when a response arrives (up to `pipeline`
    /// outstanding); latency is the service time.
    Closed,
}

/// Spacing of open-loop arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Evenly spaced.
    Uniform,
    /// Exponential gaps (a Poisson process of the same mean rate), from a seeded generator.
    Poisson,
}

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long (measured, after the warm-up).
    Duration(Duration),
    /// After this many requests in total (measured, after the warm-up).
    Requests(u64),
}

/// Options of the HTTP protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// The method (`GET`, `POST`, ...).
    pub method: String,
    /// Extra headers, `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// The request body (sent with `Content-Length`); empty for none.
    pub body: Vec<u8>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            method: "GET".into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// What to load.
    pub target: Target,
    /// Open or closed loop.
    pub mode: Mode,
    /// Connections in total (split across cores). For UDP, connected sockets.
    pub connections: usize,
    /// When to stop.
    pub stop: Stop,
    /// CPUs to run a generator shard on.
    pub cpus: Vec<usize>,
    /// Load applied before measuring starts (not recorded).
    pub warmup: Duration,
    /// Requests outstanding per connection at most (1: no pipelining).
    pub pipeline: usize,
    /// Payload size of echo requests, in bytes.
    pub payload: usize,
    /// A request not answered within this is a timeout error (and its connection is
    /// reopened).
    pub timeout: Duration,
    /// HTTP options (HTTP targets only).
    pub http: HttpOptions,
    /// Largest response accepted, in bytes (head plus body for HTTP).
    pub max_response: usize,
    /// Seed of the Poisson arrivals.
    pub seed: u64,
    /// Spin this long on the ring before a shard sleeps in the kernel: more precise send times
    /// (and no wake-up latency) at the price of CPU.
    pub busy_poll: Option<Duration>,
    /// Stop early on SIGINT/SIGTERM (no new requests; in-flight ones get the request timeout)
    /// and report what was measured, instead of dying. For command-line use.
    pub stop_on_signals: bool,
}

impl LoadConfig {
    /// A closed-loop, 10 s, 64-connection run on CPU 0 with 64-byte payloads.
    pub fn new(target: Target) -> LoadConfig {
        LoadConfig {
            target,
            mode: Mode::Closed,
            connections: 64,
            stop: Stop::Duration(Duration::from_secs(10)),
            cpus: vec![0],
            warmup: Duration::ZERO,
            pipeline: 1,
            payload: 64,
            timeout: Duration::from_secs(5),
            http: HttpOptions::default(),
            max_response: 16 << 20,
            seed: 0x5eed_1e55_c0ff_ee00,
            busy_poll: None,
            stop_on_signals: false,
        }
    }

    /// Checks every option and the combination, so that a run that starts cannot overflow a
    /// time, and a connection's requests in flight take at most [`MAX_WINDOW`] bytes. (What
    /// it buffers of responses is bounded by `max_response` per connection, not refused here:
    /// the default times many connections is more than any machine has, and is never reached
    /// by servers that answer as the protocol says.)
    ///
    /// # Errors
    ///
    /// A message naming the option at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.connections > MAX_CONNECTIONS {
            return Err(format!(
                "--connections is at most {MAX_CONNECTIONS} (each is a socket and a task)"
            ));
        }
        if self.cpus.is_empty() {
            return Err("--cpus names no CPU".into());
        }
        if self.connections < self.cpus.len() {
            return Err(format!(
                "{} connections cannot be spread over {} CPUs: give at least one per CPU",
                self.connections,
                self.cpus.len()
            ));
        }
        if self.pipeline == 0 {
            return Err("--pipeline must be at least 1".into());
        }
        if self.pipeline > MAX_PIPELINE {
            return Err(format!("--pipeline is at most {MAX_PIPELINE}"));
        }
        if self.pipeline > 1 && matches!(self.target, Target::Udp { .. }) {
            return Err("udp targets do not pipeline (a lost datagram would reorder the window): use more --connections".into());
        }
        if let Mode::Open { rate, .. } = self.mode {
            if !(rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate)) {
                return Err(format!(
                    "--rate must be a number of requests per second from {MIN_RATE} to {MAX_RATE:e}"
                ));
            }
        }
        match self.stop {
            Stop::Requests(0) => return Err("--requests must be at least 1".into()),
            Stop::Duration(d) if d.is_zero() => return Err("--duration must be positive".into()),
            Stop::Duration(d) if d > MAX_SPAN => {
                return Err(format!("--duration is at most {} days", MAX_SPAN_DAYS))
            }
            _ => {}
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be positive".into());
        }
        if self.timeout > MAX_SPAN || self.warmup > MAX_SPAN {
            return Err(format!(
                "--timeout and --warmup are at most {} days",
                MAX_SPAN_DAYS
            ));
        }
        if self.busy_poll.is_some_and(|d| d > Duration::from_secs(1)) {
            return Err("--busy-poll is at most 1s".into());
        }
        if self.max_response > MAX_RESPONSE {
            return Err(format!("--max-response is at most {MAX_RESPONSE} bytes"));
        }
        match self.target {
            Target::Udp { .. } if self.payload > 65_507 => {
                return Err("a UDP payload is at most 65507 bytes".into())
            }
            // An empty TCP message is no message: the echo of nothing never comes back.
            Target::Tcp { .. } if self.payload == 0 => {
                return Err("a TCP echo payload is at least 1 byte".into())
            }
            Target::Tcp { .. } | Target::Udp { .. } if self.payload > self.max_response => {
                return Err(
                    "--payload exceeds --max-response: the echo could never be accepted".into(),
                )
            }
            _ => {}
        }
        if self.http.body.len() > MAX_RESPONSE {
            return Err(format!("--body is at most {MAX_RESPONSE} bytes"));
        }
        // A closed loop writes a whole window of requests at once.
        let request_len = match self.target {
            Target::Http {
                ref host, ref path, ..
            } => {
                // The request line, `Host`, the headers and the body, and room for the
                // framing (`HTTP/1.1`, `Content-Length`, line ends).
                let headers: usize = self
                    .http
                    .headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + 4)
                    .sum();
                let line = self.http.method.len() + path.len() + host.len();
                line + headers + self.http.body.len() + 64
            }
            Target::Tcp { .. } | Target::Udp { .. } => self.payload,
        };
        if self.pipeline.saturating_mul(request_len) > MAX_WINDOW {
            return Err(format!(
                "--pipeline {} requests of up to {request_len} bytes are more than {} MiB in flight on one connection",
                self.pipeline,
                MAX_WINDOW >> 20
            ));
        }
        self.http.validate()
    }
}

impl HttpOptions {
    /// Checks what goes into the request as written: the method and the header names are
    /// HTTP tokens, no header value holds a byte that could end its line (CR, LF, NUL), and
    /// the headers that frame the request agree with it: a `Content-Length` is the body's,
    /// no `Transfer-Encoding` (the body is sent as it is), at most one `Host` (it replaces the
    /// target's). Otherwise the server could read one request as two, and answer twice.
    ///
    /// # Errors
    ///
    /// A message naming the option at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !is_token(&self.method) {
            return Err(format!(
                "--method {:?} is not an HTTP method (letters, digits, !#$%&'*+-.^_`|~)",
                self.method
            ));
        }
        for (name, value) in &self.headers {
            if !is_token(name) {
                return Err(format!("--header name {name:?} is not an HTTP token"));
            }
            if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                return Err(format!(
                    "--header {name}: the value holds a control byte (CR, LF, ...)"
                ));
            }
            if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!(
                    "--header {name}: the body is sent as given, with a Content-Length"
                ));
            }
            let digits = value.trim();
            if name.eq_ignore_ascii_case("content-length")
                && (!digits.bytes().all(|b| b.is_ascii_digit())
                    || digits.parse::<usize>() != Ok(self.body.len()))
            {
                return Err(format!(
                    "--header {name}: {value} is not the body's length ({})",
                    self.body.len()
                ));
            }
        }
        for once in ["Host", "Content-Length"] {
            let given = self
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(once))
                .count();
            if given > 1 {
                return Err(format!("--header {once}: give it at most once"));
            }
        }
        Ok(())
    }
}

/// An HTTP token (RFC 9110 `tchar`s, at least one).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Most connections in a run (each is a socket and a task with its buffers).
pub const MAX_CONNECTIONS: usize = 1 << 20;
/// Most requests outstanding on one connection.
pub const MAX_PIPELINE: usize = 4096;
/// Slowest and fastest open-loop rates, requests/s: a schedule's times stay within what a
/// clock can add, and no gap rounds to nothing.
pub const MIN_RATE: f64 = 1e-3;
/// See [`MIN_RATE`].
pub const MAX_RATE: f64 = 1e9;
/// Most bytes of requests in flight on one connection (`--pipeline` times a request's size).
pub const MAX_WINDOW: usize = 256 << 20;
/// Largest `--max-response`, bytes.
pub const MAX_RESPONSE: usize = 1 << 30;
/// Longest duration, time-out and warm-up, in days.
const MAX_SPAN_DAYS: u64 = 30;
const MAX_SPAN: Duration = Duration::from_secs(MAX_SPAN_DAYS * 24 * 3600);
