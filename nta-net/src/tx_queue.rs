//! `TxQueue`: the bytes a connection still has to send, as a queue of
//! `Bytes` (pool chunks frozen without a copy, cached file bodies shared by
//! reference count, static headers).
//!
//! # Invariants
//!
//! - No buffer in `bufs` is empty.
//! - `sent_bytes < bufs[0].len()` when `bufs` is not empty, else 0.
//! - `queued_bytes == sum(len of bufs) - sent_bytes`: the bytes still to
//!   send, which is what the per-connection bound of the drivers counts.
//!
//! Drivers fill vectored sends from the front ([`TxQueue::io_slices`],
//! [`TxQueue::fill_iovecs`]) and report what the kernel took with
//! [`TxQueue::consume`], which drops every buffer that went out whole.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

/// Most buffers one vectored send carries (the kernel allows `IOV_MAX` =
/// 1024; a few are enough to amortise the call).
pub const MAX_IOVECS: usize = 16;

/// The send queue of one connection. See the module notes.
#[derive(Debug, Default)]
pub struct TxQueue {
    bufs: VecDeque<Bytes>,
    sent_bytes: usize,
    queued_bytes: usize,
}

impl TxQueue {
    /// Appends `buf` (an empty one is skipped).
    #[inline]
    pub fn push(&mut self, buf: Bytes) {
        if !buf.is_empty() {
            self.queued_bytes += buf.len();
            self.bufs.push_back(buf);
        }
    }

    /// Bytes still to send.
    #[inline]
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// True when everything was sent.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Takes everything queued, in order, as if it had been sent (the first
    /// buffer whole, even if part of it went out already). For protocols
    /// that pass a queue on, and for tests that play the driver.
    pub fn drain(&mut self) -> impl Iterator<Item = Bytes> + '_ {
        self.sent_bytes = 0;
        self.queued_bytes = 0;
        self.bufs.drain(..)
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.bufs.clear();
        self.sent_bytes = 0;
        self.queued_bytes = 0;
    }

    /// The unsent bytes of the first buffers, for a vectored send; returns
    /// how many entries of `slices` were filled.
    pub(crate) fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut count = 0;
        for (i, buf) in self.bufs.iter().take(MAX_IOVECS).enumerate() {
            slices[i] = IoSlice::new(if i == 0 { &buf[self.sent_bytes..] } else { buf });
            count += 1;
        }
        count
    }

    /// As [`TxQueue::io_slices`], into raw iovecs for io_uring. The memory
    /// they point to stays valid while the buffers stay queued (they are only
    /// dropped by [`TxQueue::consume`] and [`TxQueue::clear`]) and does not
    /// move when the queue does.
    pub(crate) fn fill_iovecs(&self, iovecs: &mut [libc::iovec; MAX_IOVECS]) -> usize {
        let mut count = 0;
        for (i, buf) in self.bufs.iter().take(MAX_IOVECS).enumerate() {
            let bytes = if i == 0 { &buf[self.sent_bytes..] } else { &buf[..] };
            iovecs[i] = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
            count += 1;
        }
        count
    }

    /// The kernel took `sent` more bytes: drops each buffer that went out
    /// whole, after handing it to `on_sent` (counters, the hook).
    pub(crate) fn consume(&mut self, sent: usize, mut on_sent: impl FnMut(&Bytes)) {
        debug_assert!(sent <= self.queued_bytes, "sent more than was queued");
        let sent = sent.min(self.queued_bytes);
        self.queued_bytes -= sent;
        let mut left = self.sent_bytes + sent;
        while let Some(front) = self.bufs.front() {
            if left < front.len() {
                break;
            }
            left -= front.len();
            on_sent(front);
            self.bufs.pop_front();
        }
        self.sent_bytes = left;
        debug_assert!(self.bufs.front().map_or(self.sent_bytes == 0, |f| self.sent_bytes < f.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_drops_whole_buffers_and_keeps_the_offset() {
        let mut queue = TxQueue::default();
        queue.push(Bytes::from_static(b"hello "));
        queue.push(Bytes::new());
        queue.push(Bytes::from_static(b"world"));
        assert_eq!(queue.queued_bytes(), 11);
        let mut sent = Vec::new();
        queue.consume(8, |b| sent.push(b.clone()));
        assert_eq!(sent, [Bytes::from_static(b"hello ")]);
        assert_eq!(queue.queued_bytes(), 3);
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = queue.io_slices(&mut slices);
        assert_eq!((n, &*slices[0]), (1, &b"rld"[..]));
        let mut iovecs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_IOVECS];
        assert_eq!(queue.fill_iovecs(&mut iovecs), 1);
        assert_eq!(iovecs[0].iov_len, 3);
        queue.consume(3, |b| sent.push(b.clone()));
        assert!(queue.is_empty());
        assert_eq!(queue.queued_bytes(), 0);
        assert_eq!(sent.len(), 2);
    }
}
