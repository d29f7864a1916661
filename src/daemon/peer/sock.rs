//! The few socket calls std lacks, on libc: a dial that binds the source address and can be
//! abandoned (a non-blocking connect, polled with the stop flag), poll(2) over several
//! sockets, a non-blocking "is it still open" peek, and SO_KEEPALIVE.
//!
//! Why bind the source: the peer refuses connections from any IP but the one configured
//! for us, and on a host with several addresses the kernel's choice of source may not be
//! it (DRBD binds its outgoing sockets to the local `address` with port 0 for the same
//! reason).

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a dial in progress looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// A socket address in the C layout, and its length.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn new(addr: SocketAddr) -> RawAddr {
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
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
                unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        (&raw const self.storage).cast()
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens a TCP connection to `peer` from `source` (any port; no bind when `None` or
/// unspecified). Gives up after `timeout` with `TimedOut`, and returns `Ok(None)` as soon
/// as `stop` is set (checked every 100 ms). The stream is returned in blocking mode.
pub(super) fn dial(
    source: Option<IpAddr>,
    peer: SocketAddr,
    timeout: Duration,
    stop: &AtomicBool,
) -> io::Result<Option<TcpStream>> {
    let domain = if peer.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall; the result is checked before it is used as a descriptor.
    let fd = check(unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Some(ip) = source.filter(|ip| !ip.is_unspecified()) {
        let local = RawAddr::new(SocketAddr::new(ip, 0));
        // SAFETY: the address pointer and length describe a live sockaddr of that family.
        check(unsafe { libc::bind(fd.as_raw_fd(), local.as_ptr(), local.len) })?;
    }
    let remote = RawAddr::new(peer);
    // SAFETY: as for bind.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), remote.as_ptr(), remote.len) };
    let stream = TcpStream::from(fd);
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {peer} timed out"),
                ));
            }
            let fds = [stream.as_fd()];
            if wait(&fds, libc::POLLOUT, (deadline - now).min(STOP_CHECK))? {
                break;
            }
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    stream.set_nonblocking(false)?;
    Ok(Some(stream))
}

/// Waits until one of `fds` has one of `events` (or an error or hang-up), at most
/// `timeout`. True if one has; false on timeout or a signal.
pub(super) fn wait(fds: &[BorrowedFd<'_>], events: i16, timeout: Duration) -> io::Result<bool> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        })
        .collect();
    // Round up, so that a wait for 0.5 ms does not turn into a busy loop.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfds` is a live array of `pfds.len()` pollfd structures.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(rc > 0)
}

/// False when the peer has closed or reset the connection; true while it is open, whether
/// or not bytes are waiting (they stay in the socket: this only peeks).
pub(crate) fn is_open(s: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: the buffer is live and one byte long; MSG_PEEK consumes nothing.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n > 0 {
        return true;
    }
    if n == 0 {
        return false;
    }
    matches!(
        io::Error::last_os_error().kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Turns on TCP keep-alive probes, so that a peer that vanished without a FIN or RST is
/// noticed even while nothing is sent.
pub(super) fn set_keepalive(s: &TcpStream) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the given size.
    check(unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_addresses_have_the_c_layout() {
        let v4 = RawAddr::new("10.1.2.3:7789".parse().unwrap());
        assert_eq!(v4.len as usize, size_of::<libc::sockaddr_in>());
        // SAFETY: RawAddr::new wrote a sockaddr_in for a V4 address.
        let sin = unsafe { &*v4.as_ptr().cast::<libc::sockaddr_in>() };
        assert_eq!(sin.sin_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(u16::from_be(sin.sin_port), 7789);
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [10, 1, 2, 3]);

        let v6 = RawAddr::new("[fd00::2]:7800".parse().unwrap());
        assert_eq!(v6.len as usize, size_of::<libc::sockaddr_in6>());
        // SAFETY: RawAddr::new wrote a sockaddr_in6 for a V6 address.
        let sin6 = unsafe { &*v6.as_ptr().cast::<libc::sockaddr_in6>() };
        assert_eq!(sin6.sin6_family, libc::AF_INET6 as libc::sa_family_t);
        assert_eq!(u16::from_be(sin6.sin6_port), 7800);
        assert_eq!(sin6.sin6_addr.s6_addr[0], 0xfd);
        assert_eq!(sin6.sin6_addr.s6_addr[15], 2);
    }
}
