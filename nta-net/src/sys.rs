//! Every direct system call of the crate, on `libc`: epoll, the anonymous
//! mapping behind an io_uring buffer ring, and the raw `sockaddr` layouts the
//! kernel writes into io_uring buffers.
//!
//! Socket calls go through `socket2` (options, `recv_from`, vectored sends)
//! and io_uring calls through the `io-uring` crate; this module holds what
//! neither offers. Each wrapper returns `io::Result` built from `errno`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// Converts a libc return value into `io::Result`, reading `errno` on -1.
#[inline]
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the flag is valid.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(op)` for `fd` with `events`, tagging it with `token`.
pub fn epoll_ctl(epoll: BorrowedFd<'_>, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: `event` is a valid epoll_event for the duration of the call;
    // the kernel reports a bad fd as EBADF.
    cvt(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) })?;
    Ok(())
}

/// `epoll_wait` into `events`, for at most `timeout_ms`. EINTR counts as
/// zero events.
pub fn epoll_wait(epoll: BorrowedFd<'_>, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
    let max_events = events.len().min(i32::MAX as usize) as libc::c_int;
    // SAFETY: `events` is writable for `max_events` entries.
    let ret = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), max_events, timeout_ms) };
    match cvt(ret) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// Page-aligned, zeroed, private anonymous memory, unmapped on drop. Backs
/// the entries of an io_uring provided-buffer ring, which the kernel wants
/// page-aligned.
#[derive(Debug)]
pub struct AnonMap {
    ptr: NonNull<u8>,
    len_bytes: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access goes
// through `&self`/`&mut self` of its owner.
unsafe impl Send for AnonMap {}

impl AnonMap {
    /// Maps `len_bytes` (rounded up to a page by the kernel).
    pub fn new(len_bytes: usize) -> io::Result<AnonMap> {
        // SAFETY: a fresh private anonymous mapping aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(AnonMap { ptr, len_bytes })
    }

    /// A value owning nothing, to swap in for a mapping that must be leaked.
    pub fn dangling() -> AnonMap {
        AnonMap { ptr: NonNull::dangling(), len_bytes: 0 }
    }

    /// Start of the mapping.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        if self.len_bytes == 0 {
            return;
        }
        // SAFETY: `ptr`/`len_bytes` are exactly what mmap returned, mapped
        // once, and nothing borrows the mapping past its owner's life.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len_bytes);
        }
    }
}

/// Bytes of a `sockaddr_storage`: room for any address family.
pub const SOCKADDR_STORAGE_BYTES: usize = std::mem::size_of::<libc::sockaddr_storage>();

/// Reads an IPv4 or IPv6 socket address from the raw `sockaddr` bytes the
/// kernel wrote (native-endian family, network-order port and address).
/// `None` for other families or short input.
pub fn socket_addr_from_raw(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    match libc::c_int::from(family) {
        libc::AF_INET => {
            let octets: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(octets), port)))
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_be_bytes(raw.get(4..8)?.try_into().ok()?);
            let octets: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            let scope_id = u32::from_ne_bytes(raw.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(octets), port, flowinfo, scope_id)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_socket2_encodes() {
        for addr in ["127.0.0.1:4242", "[::1]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let raw = socket2::SockAddr::from(addr);
            // SAFETY: `as_ptr` points to `len()` initialised bytes of `raw`.
            let bytes = unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len() as usize) };
            assert_eq!(socket_addr_from_raw(bytes), Some(addr));
        }
        assert_eq!(socket_addr_from_raw(&[0; 3]), None);
    }
}
