//! What a receive path needs from a buffer, so that the backends are written
//! once and fed either by the NTA pool ([`crate::PacketBuf`]) or by the heap
//! ([`crate::VecBuf`], the baseline of the packets-per-second comparison).
//!
//! # Life of a receive buffer
//!
//! 1. [`BufSource::try_alloc`] gives an empty buffer with room for the largest
//!    packet the socket can deliver (MTU, GRO size, or 64 KiB for UDP).
//! 2. The kernel writes into [`RxBuf::spare_ptr`]; on io_uring that happens
//!    later, from a provided-buffer ring, so the memory must not move while
//!    the buffer value itself moves (it lives in the heap or the pool).
//! 3. [`RxBuf::set_len`] records what arrived, [`RxBuf::advance`] skips a
//!    prefix that is not payload (io_uring's `recvmsg` header), and
//!    [`RxBuf::trim`] gives the unused tail back, so that a buffer the
//!    application keeps is exactly as large as its packet.
//!
//! Invariant for every implementor: `len() <= capacity()`, and
//! `spare_ptr()` is valid for `capacity() - len()` bytes of writes.

use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};

use bytes::Bytes;

use crate::PoolExhausted;

/// A receive buffer: filled bytes (`Deref`), then spare room.
///
/// # Safety
///
/// Implementors guarantee that [`RxBuf::spare_ptr`] points to
/// `capacity() - len()` writable bytes that belong to this buffer alone, and
/// that this memory stays at the same address when the buffer value is moved
/// (it is heap or pool memory, never inline), until the buffer is dropped,
/// trimmed, or its length changes. The io_uring backend hands that address to
/// the kernel and relies on it.
pub unsafe trait RxBuf: Deref<Target = [u8]> + DerefMut + AsRef<[u8]> + Send + 'static {
    /// Bytes that can be filled after the current data, plus the data.
    fn capacity(&self) -> usize;

    /// The first byte after the data.
    fn spare_ptr(&mut self) -> *mut u8;

    /// Declares that the first `len_bytes` bytes from the start of the data
    /// are initialised.
    ///
    /// # Safety
    ///
    /// `len_bytes <= capacity()`, and every byte up to it was written (by the
    /// kernel or through [`RxBuf::spare_ptr`]).
    unsafe fn set_len(&mut self, len_bytes: usize);

    /// Drops `n_bytes` from the front of the data (they become headroom).
    ///
    /// # Panics
    ///
    /// If `n_bytes > len()`.
    fn advance(&mut self, n_bytes: usize);

    /// Shortens the data to `len_bytes` (no effect if it is already shorter).
    fn truncate(&mut self, len_bytes: usize);

    /// Gives the spare room back to its allocator, in place. Afterwards
    /// `capacity() == len()`.
    fn trim(&mut self);

    /// Turns the buffer into shared, immutable `Bytes` without copying.
    fn freeze(self) -> Bytes;

    /// The spare room as a slice of possibly uninitialised bytes.
    #[inline]
    fn spare_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        let spare_bytes = self.capacity() - self.len();
        let ptr = self.spare_ptr().cast::<MaybeUninit<u8>>();
        // SAFETY: the trait's contract says `spare_ptr` is valid for
        // `capacity() - len()` bytes owned by `self`, and `&mut self` is held
        // for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(ptr, spare_bytes) }
    }
}

/// Where receive buffers come from: the NTA pool or the heap.
///
/// Cloning a source is cheap (a reference count), so each backend keeps its
/// own handle.
pub trait BufSource: Clone + Send + Sync + 'static {
    /// The buffer this source hands out.
    type Buf: RxBuf;

    /// An empty buffer with room for `capacity_bytes`, or
    /// [`PoolExhausted`] when none is available right now.
    fn try_alloc(&self, capacity_bytes: usize) -> Result<Self::Buf, PoolExhausted>;
}
