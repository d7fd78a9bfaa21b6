//! Socket reads into fresh buffers and vectored writes, for non-blocking
//! sockets driven by epoll.
//!
//! A read allocates a buffer of the largest size the socket can deliver
//! (64 KiB for UDP; the caller's choice for TCP), lets the kernel fill it,
//! then trims it, so the buffer the application keeps fits its packet
//! exactly. With the NTA pool the trim returns the tail to the pool in place;
//! the next allocation reuses it.
//!
//! When the pool is exhausted the read fails with an `io::Error` of kind
//! `OutOfMemory` (see [`crate::is_pool_exhausted`]) and the data stays in the
//! socket: nothing was consumed.

use std::io::{self, IoSlice};
use std::net::SocketAddr;

use socket2::{SockAddr, Socket};

use crate::{BufSource, DatagramTruncated, RxBuf};

pub use crate::tx_queue::MAX_IOVECS;

/// Receives one datagram into a fresh buffer of `capacity_bytes`, trimmed to
/// its length.
pub fn recv_from<S: BufSource>(socket: &Socket, source: &S, capacity_bytes: usize) -> io::Result<(S::Buf, SocketAddr)> {
    let mut buf = source.try_alloc(capacity_bytes)?;
    let peer = recv_from_into(socket, &mut buf)?;
    buf.trim();
    Ok((buf, peer))
}

/// Receives one datagram into the spare room of `buf` (which must be empty),
/// without trimming; on error `buf` is still empty and can be reused. A
/// datagram longer than the spare room is consumed and dropped with
/// [`crate::DatagramTruncated`] (`MSG_TRUNC` reports its real length).
pub fn recv_from_into<B: RxBuf>(socket: &Socket, buf: &mut B) -> io::Result<SocketAddr> {
    debug_assert!(buf.is_empty());
    let spare = buf.spare_mut();
    let capacity_bytes = spare.len();
    let (len_bytes, addr) = socket.recv_from_with_flags(spare, libc::MSG_TRUNC)?;
    if len_bytes > capacity_bytes {
        return Err(DatagramTruncated { len_bytes, capacity_bytes }.into());
    }
    // SAFETY: the kernel initialised the first `len_bytes` bytes of the
    // spare room, and `len_bytes` is at most its length (checked above).
    unsafe { buf.set_len(len_bytes) };
    addr.as_socket().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP peer"))
}

/// Reads once from a stream socket into a fresh buffer of `capacity_bytes`,
/// trimmed to what arrived. An empty buffer means end of stream.
pub fn recv<S: BufSource>(socket: &Socket, source: &S, capacity_bytes: usize) -> io::Result<S::Buf> {
    let mut buf = source.try_alloc(capacity_bytes)?;
    recv_into(socket, &mut buf)?;
    buf.trim();
    Ok(buf)
}

/// Reads once from a stream socket into the spare room of `buf`, appending.
pub fn recv_into<B: RxBuf>(socket: &Socket, buf: &mut B) -> io::Result<usize> {
    let filled = buf.len();
    let n = socket.recv(buf.spare_mut())?;
    // SAFETY: the kernel initialised `n` more bytes after the `filled` ones.
    unsafe { buf.set_len(filled + n) };
    Ok(n)
}

/// Sends `bufs` (skipping the first `offset_bytes` of the first one) with one
/// vectored `sendmsg`; returns the bytes sent. Works for `PacketBuf`, `Bytes`
/// and any byte slice.
pub fn send_vectored<B: AsRef<[u8]>>(socket: &Socket, bufs: &[B], offset_bytes: usize) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let mut count = 0;
    for (i, buf) in bufs.iter().take(MAX_IOVECS).enumerate() {
        let bytes = buf.as_ref();
        slices[count] = IoSlice::new(if i == 0 { &bytes[offset_bytes..] } else { bytes });
        count += 1;
    }
    socket.send_vectored_with_flags(&slices[..count], libc::MSG_NOSIGNAL)
}

/// Sends one datagram made of `bufs` to `peer` with one vectored `sendmsg`.
pub fn send_to_vectored<B: AsRef<[u8]>>(socket: &Socket, bufs: &[B], peer: SocketAddr) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let mut count = 0;
    for buf in bufs.iter().take(MAX_IOVECS) {
        slices[count] = IoSlice::new(buf.as_ref());
        count += 1;
    }
    socket.send_to_vectored(&slices[..count], &SockAddr::from(peer))
}
