//! Every system call the sniffer makes, in one place (built on rustix).
//!
//! The export socket is a Unix `SOCK_SEQPACKET` socket: one `recvmsg` is one
//! whole message, and the descriptors that travel with it arrive as
//! `SCM_RIGHTS` ancillary data. A message or a descriptor list that the
//! kernel had to truncate is an error, never a partial message: a truncated
//! descriptor list would silently drop fds the protocol counts on.
//! Descriptors are received with `MSG_CMSG_CLOEXEC`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nta_net::export::proto::MAX_RINGS;
use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendFlags,
    SocketAddrUnix, SocketFlags, SocketType,
};

/// Most descriptors one message may carry: the hold region and one ring
/// per shard.
pub(crate) const MAX_FDS: usize = MAX_RINGS + 1;

/// Connects a `SOCK_SEQPACKET` socket to the Unix socket at `path`.
pub(crate) fn connect_seqpacket(path: &Path) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
    let addr = SocketAddrUnix::new(path)?;
    rustix::net::connect(&fd, &addr)?;
    Ok(fd)
}

/// Sends one message without descriptors.
pub(crate) fn send(fd: impl AsFd, message: &[u8]) -> io::Result<()> {
    let mut control = SendAncillaryBuffer::default();
    let sent = rustix::net::sendmsg(fd, &[IoSlice::new(message)], &mut control, SendFlags::NOSIGNAL)?;
    if sent != message.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send on a SOCK_SEQPACKET socket"));
    }
    Ok(())
}

/// Receives one message into `buf` and its descriptors into `fds`.
/// `Ok(None)` when the peer has closed the socket. A message longer than
/// `buf` or a descriptor list the kernel truncated is an error.
pub(crate) fn recv(fd: impl AsFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<Option<usize>> {
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(
            &fd,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::TRUNC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "descriptors were truncated"));
    }
    if msg.flags.contains(ReturnFlags::TRUNC) || msg.bytes > buf.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message longer than the protocol allows"));
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some(msg.bytes))
}

/// Waits until `fd` is readable (or hung up) or `timeout` passes.
pub(crate) fn wait_readable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    let timeout =
        rustix::event::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: i64::from(timeout.subsec_nanos()) };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Bytes in the file behind `fd`.
pub(crate) fn file_len(fd: impl AsFd) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_size.max(0) as u64)
}

/// Whether the file behind `fd` is sealed against shrinking (a mapping of
/// it then cannot fault with SIGBUS).
pub(crate) fn sealed_against_shrink(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_get_seals(fd).is_ok_and(|s| s.contains(rustix::fs::SealFlags::SHRINK))
}

/// Whether standard error is a terminal (the live line is drawn only then).
pub(crate) fn stderr_is_terminal() -> bool {
    rustix::termios::isatty(std::io::stderr())
}
