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
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| err("expected SCHEME://HOST:PORT (tcp, udp or http)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(err("no host"));
        }
        let default_port = match scheme {
            "http" => Some(80),
            "tcp" | "udp" => None,
            "https" => return Err(err("https is not supported (plain HTTP/1.1 only)")),
            _ => return Err(err("unknown scheme (tcp, udp or http)")),
        };
        let addr = resolve(authority, default_port).map_err(|why| err(&why))?;
        match scheme {
            "tcp" | "udp" if path != "/" => Err(err("tcp and udp targets take no path")),
            "tcp" => Ok(Target::Tcp { addr }),
            "udp" => Ok(Target::Udp { addr }),
            _ => Ok(Target::Http {
                addr,
                host: authority.to_string(),
                path: path.to_string(),
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
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
