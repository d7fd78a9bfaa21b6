//! The heap baseline: a receive buffer in a `Vec<u8>`.
//!
//! It exists so that the packets-per-second comparison runs the very same
//! backend code with NTA chunks and with the global allocator, and so that
//! the backends can be exercised without a pool. [`HeapSource`] never reports
//! exhaustion (the global allocator aborts instead).
//!
//! Layout: `vec[..head]` is headroom (skipped bytes), `vec[head..]` is the
//! data, `vec.capacity() - vec.len()` is the spare room. `trim` is
//! `shrink_to_fit`, i.e. a `realloc`, the heap's nearest analogue of
//! `Pool::shrink`.

use std::ops::{Deref, DerefMut};

use bytes::Bytes;

use crate::{BufSource, PoolExhausted, RxBuf};

/// A receive buffer on the heap. See the module notes.
#[derive(Debug, Default)]
pub struct VecBuf {
    vec: Vec<u8>,
    head: usize,
}

impl VecBuf {
    /// An empty buffer with room for `capacity_bytes`.
    pub fn with_capacity(capacity_bytes: usize) -> VecBuf {
        VecBuf { vec: Vec::with_capacity(capacity_bytes), head: 0 }
    }
}

impl Deref for VecBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.vec[self.head..]
    }
}

impl DerefMut for VecBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.vec[self.head..]
    }
}

impl AsRef<[u8]> for VecBuf {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self
    }
}

// SAFETY: the spare room is the Vec's own spare capacity, which lives in its
// heap allocation; moving a Vec does not move that allocation.
unsafe impl RxBuf for VecBuf {
    #[inline]
    fn capacity(&self) -> usize {
        self.vec.capacity() - self.head
    }

    #[inline]
    fn spare_ptr(&mut self) -> *mut u8 {
        self.vec.spare_capacity_mut().as_mut_ptr().cast()
    }

    #[inline]
    unsafe fn set_len(&mut self, len_bytes: usize) {
        // A hard check: every later read of the data trusts the length.
        assert!(len_bytes <= self.capacity(), "set_len {len_bytes} past the capacity {}", self.capacity());
        // SAFETY: the caller guarantees the bytes are initialised and within
        // capacity.
        unsafe { self.vec.set_len(self.head + len_bytes) }
    }

    #[inline]
    fn advance(&mut self, n_bytes: usize) {
        assert!(n_bytes <= self.len(), "advance past the end of the data");
        self.head += n_bytes;
    }

    #[inline]
    fn truncate(&mut self, len_bytes: usize) {
        self.vec.truncate(self.head + len_bytes);
    }

    #[inline]
    fn trim(&mut self) {
        self.vec.shrink_to_fit();
    }

    fn freeze(self) -> Bytes {
        let head = self.head;
        Bytes::from(self.vec).slice(head..)
    }
}

/// Hands out [`VecBuf`]s from the global allocator.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapSource;

impl BufSource for HeapSource {
    type Buf = VecBuf;

    #[inline]
    fn try_alloc(&self, capacity_bytes: usize) -> Result<VecBuf, PoolExhausted> {
        Ok(VecBuf::with_capacity(capacity_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_advance_trim_freeze() {
        let mut buf = HeapSource.try_alloc(64).unwrap();
        assert_eq!(RxBuf::capacity(&buf), 64);
        buf.spare_mut()[..5].copy_from_slice(&b"hello".map(std::mem::MaybeUninit::new));
        // SAFETY: five bytes were just written.
        unsafe { buf.set_len(5) };
        assert_eq!(&buf[..], b"hello");
        buf.advance(1);
        buf.truncate(3);
        assert_eq!(&buf[..], b"ell");
        buf.trim();
        assert_eq!(RxBuf::capacity(&buf), 3);
        assert_eq!(&buf.freeze()[..], b"ell");
    }
}
