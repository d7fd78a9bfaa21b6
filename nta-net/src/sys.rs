//! Every direct system call of the crate, on `libc`: epoll, the anonymous
//! mapping behind an io_uring buffer ring, the raw `sockaddr` layouts the
//! kernel writes into io_uring buffers, and the exporter's memfds, shared
//! mappings, `SCM_RIGHTS` and peer credentials.
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

// ----- export: memfds, shared mappings, SCM_RIGHTS, peer credentials -----

/// Creates a sealable memfd of `len` bytes named `name` (what
/// `/proc/PID/maps` shows as `memfd:<name>`), zero-filled.
pub fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(|_| io::Error::other("memfd name with a NUL"))?;
    // SAFETY: `name` is a valid C string; the descriptor is owned below.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
    // SAFETY: `fd` was just created and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::ftruncate(fd, len as libc::off_t) })?;
    Ok(owned)
}

/// Seals a memfd's size (`F_SEAL_SHRINK | F_SEAL_GROW`), and with
/// `read_only` also against every new writer (`F_SEAL_FUTURE_WRITE`), then
/// against further seals. A peer that was handed the file can then neither
/// truncate it under our mapping (which would fault us) nor, if
/// `read_only`, map it writable.
pub fn seal(fd: BorrowedFd<'_>, read_only: bool) -> io::Result<()> {
    let mut seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    if read_only {
        seals |= libc::F_SEAL_FUTURE_WRITE;
    }
    // SAFETY: plain syscall on a descriptor the caller holds.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// A new read-only open file description of the file behind `fd`, through
/// `/proc/self/fd`: handed to readers so that even `mprotect(PROT_WRITE)`
/// on their mapping fails.
pub fn reopen_read_only(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::File::open(path).map(OwnedFd::from)
}

/// Maps `len` bytes of `fd` shared, read-write.
pub fn map_shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh mapping chosen by the kernel; nothing is overwritten.
    let raw = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0)
    };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(raw.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Unmaps a mapping made by [`map_shared`].
///
/// # Safety
/// `addr..addr + len` is a whole mapping from [`map_shared`] that nothing
/// uses any more.
pub unsafe fn unmap_shared(addr: NonNull<u8>, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { libc::munmap(addr.as_ptr().cast(), len) };
}

/// Sends one packet with `fds` attached (`SCM_RIGHTS`), without blocking.
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let data_len = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = if raw.is_empty() { 0 } else { (unsafe { libc::CMSG_SPACE(data_len as u32) }) as usize };
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(data_len) bytes, so
        // the first header and its data fit; the fds are copied in whole.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), data_len);
        }
    }
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let sent = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if sent as usize != bytes.len() {
        return Err(io::Error::other("short send of a packet"));
    }
    Ok(())
}

/// Receives one packet into `buf` without blocking; descriptors that came
/// with it are closed (a reader has none to send). Returns the packet's
/// length (0: the peer closed), or an error with `WouldBlock` when there is
/// none; a packet longer than `buf` is an error (`InvalidData`).
pub fn recv_packet(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut control = [0u64; 32];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // Close whatever descriptors a peer pushed on us.
    // SAFETY: the kernel filled `msg_controllen` bytes of `control`; the
    // CMSG macros walk only inside them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    drop(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "packet longer than the buffer"));
    }
    Ok(n as usize)
}

/// The uid of the process at the other end of a Unix socket
/// (`SO_PEERCRED`, as it was when it connected).
pub fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: all-zero is a valid ucred.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` has room for `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

/// Our effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// `poll(2)` on `fds`; returns how many have events.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
    }
    Ok(n as usize)
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`, one vDSO call; 0 if
/// the clock fails, which it does not on Linux).
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
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
