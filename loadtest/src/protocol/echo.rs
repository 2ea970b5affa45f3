//! Echo over TCP (the response is the request's bytes) and over UDP (each datagram comes back
//! whole). UDP payloads of 8 bytes or more carry a sequence number in their first 8 bytes so a
//! late answer to a timed-out request is told apart from the current one.

use std::sync::Arc;

use super::{DatagramCheck, Parsed, Protocol, ProtocolError, Response, Session, Transport};

/// A recognisable payload of `len` bytes.
fn payload(len: usize) -> Arc<[u8]> {
    const PATTERN: &[u8] = b"percore-load-echo ";
    PATTERN.iter().copied().cycle().take(len).collect()
}

/// TCP echo: send the payload, read the same bytes back. Pipelines.
#[derive(Debug)]
pub struct StreamEcho {
    payload: Arc<[u8]>,
}

impl StreamEcho {
    /// Echo of `payload_len`-byte messages.
    pub fn new(payload_len: usize) -> StreamEcho {
        StreamEcho {
            payload: payload(payload_len.max(1)),
        }
    }
}

impl Protocol for StreamEcho {
    fn name(&self) -> &'static str {
        "tcp-echo"
    }

    fn transport(&self) -> Transport {
        Transport::Stream
    }

    fn pipelines(&self) -> bool {
        true
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(StreamEchoSession {
            payload: self.payload.clone(),
            checked: 0,
        })
    }
}

struct StreamEchoSession {
    payload: Arc<[u8]>,
    /// Bytes of the response at the front already compared (a response that comes in many
    /// pieces is compared once, not once per piece).
    checked: usize,
}

impl Session for StreamEchoSession {
    fn write_request(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.payload);
    }

    fn parse(&mut self, input: &[u8]) -> Result<Parsed, ProtocolError> {
        let want = self.payload.len();
        let have = input.len().min(want);
        // Earlier calls saw a prefix of `input` (the same response, fewer bytes).
        let from = self.checked.min(have);
        if input[from..have] != self.payload[from..have] {
            self.checked = 0;
            return Err(ProtocolError(
                "echo mismatch: the bytes back differ from those sent",
            ));
        }
        Ok(if have == want {
            self.checked = 0;
            Parsed::Complete(Response::ok(want))
        } else {
            self.checked = have;
            Parsed::Incomplete
        })
    }
}

/// UDP echo: each datagram must come back unchanged.
#[derive(Debug)]
pub struct DatagramEcho {
    payload: Arc<[u8]>,
}

impl DatagramEcho {
    /// Echo of `payload_len`-byte datagrams (0 is allowed: an empty datagram is data).
    pub fn new(payload_len: usize) -> DatagramEcho {
        DatagramEcho {
            payload: payload(payload_len),
        }
    }
}

impl Protocol for DatagramEcho {
    fn name(&self) -> &'static str {
        "udp-echo"
    }

    fn transport(&self) -> Transport {
        Transport::Datagram
    }

    fn pipelines(&self) -> bool {
        false
    }

    /// Only with room for the sequence number: a shorter payload cannot tell them apart.
    fn tells_late_answers(&self) -> bool {
        self.payload.len() >= SEQ_LEN
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(DatagramEchoSession {
            payload: self.payload.clone(),
            seq: 0,
        })
    }
}

struct DatagramEchoSession {
    payload: Arc<[u8]>,
    /// Sequence number of the request in flight.
    seq: u64,
}

const SEQ_LEN: usize = 8;

impl Session for DatagramEchoSession {
    fn write_request(&mut self, out: &mut Vec<u8>) {
        self.seq += 1;
        let start = out.len();
        out.extend_from_slice(&self.payload);
        if self.payload.len() >= SEQ_LEN {
            out[start..start + SEQ_LEN].copy_from_slice(&self.seq.to_be_bytes());
        }
    }

    fn parse(&mut self, _input: &[u8]) -> Result<Parsed, ProtocolError> {
        Err(ProtocolError("not a stream protocol"))
    }

    fn check_datagram(&mut self, datagram: &[u8]) -> Result<DatagramCheck, ProtocolError> {
        let mismatch = ProtocolError("echo mismatch: the datagram back differs from the one sent");
        if datagram.len() != self.payload.len() {
            return Err(mismatch);
        }
        if self.payload.len() < SEQ_LEN {
            return if *datagram == *self.payload {
                Ok(DatagramCheck::Answer)
            } else {
                Err(mismatch)
            };
        }
        if datagram[SEQ_LEN..] != self.payload[SEQ_LEN..] {
            return Err(mismatch);
        }
        let mut seq = [0u8; SEQ_LEN];
        seq.copy_from_slice(&datagram[..SEQ_LEN]);
        match u64::from_be_bytes(seq) {
            s if s == self.seq => Ok(DatagramCheck::Answer),
            s if s < self.seq => Ok(DatagramCheck::Stale),
            _ => Err(mismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_echo_completes_on_the_exact_bytes_and_refuses_others() {
        let mut s = StreamEcho::new(20).session();
        let mut req = Vec::new();
        s.write_request(&mut req);
        assert_eq!(req.len(), 20);
        assert_eq!(s.parse(&req[..7]).unwrap(), Parsed::Incomplete);
        let mut two = req.clone();
        two.extend_from_slice(&req);
        assert_eq!(s.parse(&two).unwrap(), Parsed::Complete(Response::ok(20)));
        assert!(s.parse(b"HTTP/1.1 400 Bad").is_err());
    }

    #[test]
    fn datagram_echo_tells_late_answers_from_wrong_ones() {
        let mut s = DatagramEcho::new(16).session();
        let mut first = Vec::new();
        s.write_request(&mut first);
        assert_eq!(s.check_datagram(&first).unwrap(), DatagramCheck::Answer);
        let mut second = Vec::new();
        s.write_request(&mut second);
        assert_eq!(s.check_datagram(&first).unwrap(), DatagramCheck::Stale);
        assert_eq!(s.check_datagram(&second).unwrap(), DatagramCheck::Answer);
        assert!(s.check_datagram(&second[..15]).is_err());
        let mut empty = DatagramEcho::new(0).session();
        let mut req = Vec::new();
        empty.write_request(&mut req);
        assert!(req.is_empty());
        assert_eq!(empty.check_datagram(&[]).unwrap(), DatagramCheck::Answer);
    }
}
