//! Raw system calls, in one place.
//!
//! Everything here is a thin, checked wrapper: a `-1` return becomes `io::Error::last_os_error()`.
//! The rest of the engine calls these instead of `libc` directly, so the unsafe surface that
//! talks to the OS outside the ring is this file.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Calls a libc function and turns `-1` into the thread's last OS error.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each caller passes arguments that satisfy the syscall's contract; the
        // individual call sites below say why.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Creates a non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // eventfd takes no pointers.
    let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, waking whoever reads it.
pub(crate) fn eventfd_signal(fd: RawFd) -> io::Result<()> {
    let one: u64 = 1;
    // write reads 8 bytes from a live local.
    match syscall!(write(fd, (&one as *const u64).cast(), 8)) {
        Ok(_) => Ok(()),
        // The counter is saturated: the reader has a wake-up pending anyway.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Closes a raw fd the caller owns (an fd a completion produced for a future that is gone).
pub(crate) fn close(fd: RawFd) {
    // close takes no pointers; the caller owns `fd`. Its error is not actionable.
    let _ = syscall!(close(fd));
}

/// Blocks `signals` in the calling thread (threads spawned later inherit the mask).
pub(crate) fn block_signals(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    let set = sigset(signals)?;
    // SAFETY: `set` is an initialised sigset; the old-set pointer may be null.
    let res = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if res != 0 {
        return Err(io::Error::from_raw_os_error(res));
    }
    Ok(set)
}

/// Unblocks `signals` in the calling thread.
pub(crate) fn unblock_signals(signals: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is an initialised sigset; the old-set pointer may be null.
    let res = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    if res != 0 {
        return Err(io::Error::from_raw_os_error(res));
    }
    Ok(())
}

fn sigset(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // sigemptyset initialises the set it is given a valid pointer to.
    syscall!(sigemptyset(set.as_mut_ptr()))?;
    for &sig in signals {
        // `set` points to an initialised sigset.
        syscall!(sigaddset(set.as_mut_ptr(), sig))?;
    }
    // SAFETY: sigemptyset succeeded, so the set is initialised.
    Ok(unsafe { set.assume_init() })
}

/// Opens a non-blocking signalfd for `set` (which the caller has blocked).
pub(crate) fn signalfd(set: &libc::sigset_t) -> io::Result<OwnedFd> {
    // `set` is a valid sigset for the duration of the call.
    let fd = syscall!(signalfd(-1, set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK))?;
    // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Duplicates an fd (close-on-exec).
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // fcntl(F_DUPFD_CLOEXEC) takes no pointers.
    let new = syscall!(fcntl(fd, libc::F_DUPFD_CLOEXEC, 0))?;
    // SAFETY: `new` was just returned by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Bytes queued on a socket's sending side (`SIOCOUTQ`, the same number as `TIOCOUTQ`): see
/// [`SharedFd::unsent_bytes`](crate::fd::SharedFd::unsent_bytes).
pub(crate) fn unsent_bytes(fd: RawFd) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // ioctl(SIOCOUTQ) writes one int through the pointer, which points at `queued`.
    syscall!(ioctl(fd, libc::TIOCOUTQ, &mut queued))?;
    Ok(usize::try_from(queued).unwrap_or(0))
}

/// The number of fds this process has open (entries of `/proc/self/fd`, less the one used to
/// list them). Used by leak checks.
pub fn open_fd_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}

/// This process's limit on open files (`RLIMIT_NOFILE`): soft and hard.
pub(crate) fn fd_limit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // getrlimit writes into the valid, writable rlimit it is given.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut limit))?;
    Ok(limit)
}

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to `want`, or as near
/// as the hard limit allows; never lowers it. Returns the soft limit now in force.
///
/// # Errors
///
/// The kernel's, from reading or setting the limit.
pub fn raise_fd_limit(want: u64) -> io::Result<u64> {
    let mut limit = fd_limit()?;
    if limit.rlim_cur >= want {
        return Ok(limit.rlim_cur);
    }
    limit.rlim_cur = want.min(limit.rlim_max);
    // setrlimit reads the valid rlimit it is given; the soft limit stays within the hard.
    syscall!(setrlimit(libc::RLIMIT_NOFILE, &limit))?;
    Ok(limit.rlim_cur)
}

/// CPU time this thread has used: (user, system).
pub fn thread_cpu_time() -> (std::time::Duration, std::time::Duration) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // getrusage writes a full rusage into the valid pointer it is given.
    if syscall!(getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr())).is_err() {
        return Default::default();
    }
    // SAFETY: getrusage succeeded and initialised `usage`.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        std::time::Duration::new(t.tv_sec as u64, (t.tv_usec as u32).saturating_mul(1000))
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// A socket address in the kernel's layout, boxed by ops so its address is stable.
#[derive(Clone, Copy)]
pub(crate) struct RawAddr {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawAddr({:?})", self.to_std())
    }
}

impl RawAddr {
    /// An empty address with room for any family (for accept and recvmsg to fill in).
    pub(crate) fn empty() -> RawAddr {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
        let storage = unsafe { std::mem::zeroed() };
        RawAddr {
            storage,
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    pub(crate) fn from_std(addr: std::net::SocketAddr) -> RawAddr {
        let mut raw = RawAddr::empty();
        match addr {
            std::net::SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write(
                        (&mut raw.storage as *mut libc::sockaddr_storage).cast(),
                        sin,
                    )
                };
                raw.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            std::net::SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write(
                        (&mut raw.storage as *mut libc::sockaddr_storage).cast(),
                        sin6,
                    )
                };
                raw.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        raw
    }

    /// A Unix domain address for the socket file at `path` (`sockaddr_un`; the length counts
    /// the path and its terminating NUL). A path starting with a NUL byte names a socket in
    /// the abstract namespace (all its bytes count, no terminating NUL).
    pub(crate) fn from_unix_path(path: &std::path::Path) -> std::io::Result<RawAddr> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        let mut sun = libc::sockaddr_un {
            sun_family: libc::AF_UNIX as libc::sa_family_t,
            sun_path: [0; 108],
        };
        let abstract_name = bytes.first() == Some(&0);
        // A pathname keeps one byte for the NUL the kernel expects after it.
        let room = sun.sun_path.len() - usize::from(!abstract_name);
        if bytes.len() > room || (!abstract_name && bytes.contains(&0)) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "unix socket path must be under {} bytes without NUL: {}",
                    sun.sun_path.len(),
                    path.display()
                ),
            ));
        }
        for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        let mut raw = RawAddr::empty();
        // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_un.
        unsafe {
            std::ptr::write(
                (&mut raw.storage as *mut libc::sockaddr_storage).cast(),
                sun,
            )
        };
        let path_offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
        raw.len = (path_offset + bytes.len() + usize::from(!abstract_name)) as libc::socklen_t;
        Ok(raw)
    }

    /// The address as std's type, if it is an IPv4 or IPv6 one.
    pub(crate) fn to_std(self) -> Option<std::net::SocketAddr> {
        let ptr = (&self.storage as *const libc::sockaddr_storage).cast::<u8>();
        match i32::from(self.storage.ss_family) {
            libc::AF_INET if self.len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
                let sin: libc::sockaddr_in = unsafe { std::ptr::read(ptr.cast()) };
                Some(std::net::SocketAddr::from((
                    sin.sin_addr.s_addr.to_ne_bytes(),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if self.len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: the family says the storage holds a sockaddr_in6, and it is long enough.
                let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read(ptr.cast()) };
                Some(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                    sin6.sin6_addr.s6_addr.into(),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }
}

#[cfg(test)]
mod tests {
    use super::RawAddr;

    #[test]
    fn socket_addrs_round_trip() {
        for s in ["127.0.0.1:8080", "[::1]:53", "[fe80::1%2]:9", "0.0.0.0:0"] {
            let addr: std::net::SocketAddr = s.parse().unwrap();
            assert_eq!(RawAddr::from_std(addr).to_std(), Some(addr), "{s}");
        }
        assert_eq!(RawAddr::empty().to_std(), None);
    }

    #[test]
    fn unix_paths_fit_sockaddr_un_or_are_refused() {
        let raw = RawAddr::from_unix_path(std::path::Path::new("/tmp/x.sock")).unwrap();
        assert_eq!(i32::from(raw.storage.ss_family), libc::AF_UNIX);
        assert_eq!(raw.len as usize, 2 + "/tmp/x.sock".len() + 1);
        assert_eq!(raw.to_std(), None, "not an IP address");
        let long = "/".repeat(108);
        let err = RawAddr::from_unix_path(std::path::Path::new(&long)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        let abstract_name = RawAddr::from_unix_path(std::path::Path::new("\0name")).unwrap();
        assert_eq!(abstract_name.len as usize, 2 + 5, "no terminating NUL");
    }
}
