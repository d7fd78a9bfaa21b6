//! Reads into buffers from a [`BufSource`], vectored writes. See the module
//! notes of [`crate::async_io`].

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::UdpSocket;

use crate::epoll::io::recv_from_into;
use crate::tx_queue::MAX_IOVECS;
use crate::{BufSource, RxBuf};

/// Reads once from `reader` into a fresh buffer of `capacity_bytes`, trimmed
/// to what arrived. An empty buffer means end of stream. Fails with
/// `OutOfMemory` ([`crate::is_pool_exhausted`]) when no buffer can be had;
/// nothing was read then.
pub async fn read_packet<R, S>(reader: &mut R, source: &S, capacity_bytes: usize) -> io::Result<S::Buf>
where
    R: AsyncRead + Unpin + ?Sized,
    S: BufSource,
{
    let mut buf = source.try_alloc(capacity_bytes)?;
    read_into(reader, &mut buf).await?;
    buf.trim();
    Ok(buf)
}

/// Reads once from `reader` into the spare room of `buf`, appending; returns
/// the bytes read (0 at end of stream, or when `buf` is full).
///
/// A safe `AsyncRead` may replace the `ReadBuf` it is given with one of its
/// own (`*buf = ReadBuf::new(..)`); what it then reports as filled is not
/// in `buf` at all. Like tokio's own `read_buf`, this checks that the filled
/// part still starts at `buf`'s spare room, and that it is no longer than
/// that room, in every build (a swap is an `InvalidData` error, and `buf`
/// is unchanged).
pub async fn read_into<R, B>(reader: &mut R, buf: &mut B) -> io::Result<usize>
where
    R: AsyncRead + Unpin + ?Sized,
    B: RxBuf,
{
    let filled = buf.len();
    let n = poll_fn(|cx| {
        let spare = buf.spare_mut();
        let (spare_ptr, spare_bytes) = (spare.as_ptr().cast::<u8>(), spare.len());
        let mut read_buf = ReadBuf::uninit(spare);
        match Pin::new(&mut *reader).poll_read(cx, &mut read_buf) {
            Poll::Ready(Ok(())) => {
                let read = read_buf.filled();
                if read.as_ptr() != spare_ptr || read.len() > spare_bytes {
                    return Poll::Ready(Err(swapped_read_buf()));
                }
                Poll::Ready(Ok(read.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await?;
    // SAFETY: `poll_read` initialised `n` bytes at the start of the spare
    // room: the filled part was checked above to start there and to fit in
    // it (ReadBuf tracks what was filled, and never shrinks it).
    unsafe { buf.set_len(filled + n) };
    Ok(n)
}

/// Cold: an `AsyncRead` replaced the `ReadBuf` it was given.
#[cold]
#[inline(never)]
fn swapped_read_buf() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "the AsyncRead swapped the ReadBuf it was given")
}

/// Receives one datagram into a fresh buffer of `capacity_bytes`, trimmed to
/// its length. The buffer is taken only once the socket is readable, so a
/// quiet socket holds none. A datagram longer than `capacity_bytes` is
/// consumed and dropped with [`crate::DatagramTruncated`] (`MSG_TRUNC`).
pub async fn recv_from<S: BufSource>(
    socket: &UdpSocket,
    source: &S,
    capacity_bytes: usize,
) -> io::Result<(S::Buf, SocketAddr)> {
    loop {
        socket.readable().await?;
        let mut buf = source.try_alloc(capacity_bytes)?;
        match socket.try_io(Interest::READABLE, || recv_from_into(&SockRef::from(socket), &mut buf)) {
            Ok(peer) => {
                buf.trim();
                return Ok((buf, peer));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bufs` (`Bytes`, `PacketBuf`, slices) with vectored writes.
pub async fn write_all_vectored<W, B>(writer: &mut W, bufs: &[B]) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    B: AsRef<[u8]>,
{
    let mut index = 0;
    let mut offset = 0;
    while index < bufs.len() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        for (i, buf) in bufs[index..].iter().take(MAX_IOVECS).enumerate() {
            let bytes = buf.as_ref();
            slices[count] = IoSlice::new(if i == 0 { &bytes[offset..] } else { bytes });
            count += 1;
        }
        let mut written = writer.write_vectored(&slices[..count]).await?;
        if written == 0 && slices[..count].iter().any(|s| !s.is_empty()) {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Advance past what was written.
        while index < bufs.len() {
            let left = bufs[index].as_ref().len() - offset;
            if written < left {
                offset += written;
                break;
            }
            written -= left;
            index += 1;
            offset = 0;
        }
    }
    Ok(())
}
