//! What `percore load` aims at: `tcp://HOST:PORT`, `udp://HOST:PORT` or
//! `http://HOST[:PORT]/PATH`, resolved once before the run.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed, resolved target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// TCP echo: a payload is sent and the same bytes must come back.
    Tcp {
        /// Where to connect.
        addr: SocketAddr,
    },
    /// UDP datagram echo.
    Udp {
        /// Where to send.
        addr: SocketAddr,
    },
    /// HTTP/1.1 with keep-alive.
    Http {
        /// Where to connect.
        addr: SocketAddr,
        /// The `Host` header (the URL's authority as written).
        host: String,
        /// The request target (path and query), starting with `/`.
        path: String,
    },
}

/// Why a target string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError(String);

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetError {}

impl Target {
    /// Parses and resolves `tcp://HOST:PORT`, `udp://HOST:PORT` or `http://HOST[:PORT]/PATH`.
    /// IPv6 hosts are written in brackets (`tcp://[::1]:7000`).
    ///
    /// # Errors
    ///
    /// An unknown scheme, a missing port, or a host that does not resolve.
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let err = |why: &str| TargetError(format!("bad target {text:?}: {why}"));
        let parts = split(text).map_err(err)?;
        let addr = resolve(parts.authority, parts.default_port).map_err(|why| err(&why))?;
        match parts.scheme {
            "tcp" => Ok(Target::Tcp { addr }),
            "udp" => Ok(Target::Udp { addr }),
            _ => Ok(Target::Http {
                addr,
                host: parts.authority.to_string(),
                path: parts.path.to_string(),
            }),
        }
    }

    /// The address requests go to.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Target::Tcp { addr } | Target::Udp { addr } | Target::Http { addr, .. } => *addr,
        }
    }

    /// The protocol's short name (`tcp`, `udp`, `http`).
    pub fn scheme(&self) -> &'static str {
        match self {
            Target::Tcp { .. } => "tcp",
            Target::Udp { .. } => "udp",
            Target::Http { .. } => "http",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { addr } => write!(f, "tcp://{addr}"),
            Target::Udp { addr } => write!(f, "udp://{addr}"),
            Target::Http { host, path, .. } => write!(f, "http://{host}{path}"),
        }
    }
}

/// A target's text taken apart, before its host is resolved.
#[derive(Debug)]
struct Parts<'a> {
    scheme: &'a str,
    authority: &'a str,
    path: &'a str,
    default_port: Option<u16>,
}

/// Takes `SCHEME://AUTHORITY[/PATH]` apart and checks what goes into a request as written:
/// the authority becomes the `Host` header and the path the request line, so both hold only
/// visible ASCII (no space, no control byte that could end a line early).
fn split(text: &str) -> Result<Parts<'_>, &'static str> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or("expected SCHEME://HOST:PORT (tcp, udp or http)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("no host");
    }
    let default_port = match scheme {
        "http" => Some(80),
        "tcp" | "udp" => None,
        "https" => return Err("https is not supported (plain HTTP/1.1 only)"),
        _ => return Err("unknown scheme (tcp, udp or http)"),
    };
    if scheme != "http" && path != "/" {
        return Err("tcp and udp targets take no path");
    }
    let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if !visible(authority) {
        return Err("the host may hold only visible ASCII");
    }
    if !visible(path) {
        return Err("the path may hold only visible ASCII (percent-encode the rest)");
    }
    Ok(Parts {
        scheme,
        authority,
        path,
        default_port,
    })
}

/// Resolves `host:port` (or `host` with a default port) to its first address.
fn resolve(authority: &str, default_port: Option<u16>) -> Result<SocketAddr, String> {
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    let with_port = match (has_port, default_port) {
        (true, _) => authority.to_string(),
        (false, Some(port)) => format!("{authority}:{port}"),
        (false, None) => return Err("no port".into()),
    };
    let mut addrs = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {with_port}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{with_port} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            Target::parse("tcp://127.0.0.1:7000").unwrap(),
            Target::Tcp {
                addr: "127.0.0.1:7000".parse().unwrap()
            }
        );
        assert_eq!(
            Target::parse("udp://[::1]:53").unwrap(),
            Target::Udp {
                addr: "[::1]:53".parse().unwrap()
            }
        );
        let http = Target::parse("http://127.0.0.1:8080/a/b?c=1").unwrap();
        assert_eq!(
            http,
            Target::Http {
                addr: "127.0.0.1:8080".parse().unwrap(),
                host: "127.0.0.1:8080".into(),
                path: "/a/b?c=1".into()
            }
        );
        assert_eq!(http.to_string(), "http://127.0.0.1:8080/a/b?c=1");
        let bare = Target::parse("http://127.0.0.1").unwrap();
        assert_eq!(bare.addr().port(), 80);
        assert_eq!(bare.to_string(), "http://127.0.0.1/");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in [
            "127.0.0.1:80",
            "ftp://127.0.0.1:21",
            "tcp://127.0.0.1",
            "tcp://:80",
            "tcp://127.0.0.1:7000/x",
            "https://127.0.0.1/",
            "udp://no-such-host.invalid:53",
            "http://127.0.0.1/a b",
            "http://127.0.0.1/a\r\nX-Injected: 1",
            "http://127.0.0.1 /",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    /// Random strings over the characters targets are made of: `split` answers every one
    /// (no panic), and what it accepts has a known scheme, a host, and a path that is one
    /// visible-ASCII token starting with `/` (safe to write into a request line).
    #[test]
    fn fuzz_split_never_panics_and_accepts_only_clean_parts() {
        const PIECES: [&str; 16] = [
            "tcp://",
            "udp://",
            "http://",
            "https://",
            ":",
            "/",
            "[",
            "]",
            "::1",
            "127.0.0.1",
            "80",
            " ",
            "\r\n",
            "%20",
            "?q=1",
            "\u{e9}",
        ];
        let mut rng = crate::schedule::SplitMix64(5);
        for _ in 0..100_000 {
            let text: String = (0..rng.next_u64() % 8)
                .map(|_| PIECES[(rng.next_u64() % PIECES.len() as u64) as usize])
                .collect();
            if let Ok(parts) = split(&text) {
                assert!(["tcp", "udp", "http"].contains(&parts.scheme), "{text:?}");
                assert!(!parts.authority.is_empty(), "{text:?}");
                assert!(parts.path.starts_with('/'), "{text:?}");
                assert!(
                    (parts.authority.to_string() + parts.path)
                        .bytes()
                        .all(|b| b.is_ascii_graphic()),
                    "{text:?}"
                );
            }
        }
    }
}
