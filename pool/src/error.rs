//! [`PoolError`]: why a checkout gave no connection.
//!
//! Three outcomes, each named: the pool was closed, the checkout's deadline passed, or the
//! factory failed to make a connection (its error is kept as the source). A connection that
//! broke while in use is not a pool error: its holder sees the I/O error and the guard
//! discards the connection.

use std::fmt;
use std::io;
use std::time::Duration;

/// Why [`Pool::get`](crate::Pool::get) returned no connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool was closed (before or while the checkout waited).
    Closed,
    /// No connection became available within the checkout timeout (the duration given).
    Timeout(Duration),
    /// The factory failed to create a connection; the slot it would have used is free again.
    Create(io::Error),
}

impl PoolError {
    /// Whether the pool was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, PoolError::Closed)
    }

    /// Whether the checkout timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, PoolError::Timeout(_))
    }

    /// Whether the factory failed.
    pub fn is_create(&self) -> bool {
        matches!(self, PoolError::Create(_))
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Closed => f.write_str("connection pool is closed"),
            PoolError::Timeout(limit) => {
                write!(f, "no pooled connection became available within {limit:?}")
            }
            PoolError::Create(e) => write!(f, "cannot create a pooled connection: {e}"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Create(e) => Some(e),
            _ => None,
        }
    }
}

impl From<PoolError> for io::Error {
    /// A timeout becomes `TimedOut`, a factory error is passed through as it was, a closed
    /// pool becomes `NotConnected`.
    fn from(e: PoolError) -> io::Error {
        match e {
            PoolError::Create(e) => e,
            PoolError::Timeout(_) => io::Error::new(io::ErrorKind::TimedOut, e),
            PoolError::Closed => io::Error::new(io::ErrorKind::NotConnected, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_io_errors_by_kind() {
        let refused = PoolError::Create(io::ErrorKind::ConnectionRefused.into());
        assert!(refused.is_create());
        assert_eq!(
            io::Error::from(refused).kind(),
            io::ErrorKind::ConnectionRefused
        );
        let timeout = PoolError::Timeout(Duration::from_millis(5));
        assert!(timeout.is_timeout());
        assert_eq!(io::Error::from(timeout).kind(), io::ErrorKind::TimedOut);
        assert!(PoolError::Closed.is_closed());
        assert_eq!(
            io::Error::from(PoolError::Closed).kind(),
            io::ErrorKind::NotConnected
        );
    }
}
