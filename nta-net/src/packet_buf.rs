//! `PacketBuf`: an owned packet buffer in an NTA pool, like an mbuf.
//!
//! # Layout
//!
//! ```text
//!  ptr                ptr+head         ptr+head+len       ptr+alloc_bytes
//!   |<-- headroom -->|<---- data ---->|<---- spare ---->|
//!                    |<--------- capacity() ----------->|
//! ```
//!
//! - *headroom*: bytes reserved in front, so a header can be prepended
//!   without a copy ([`PacketBuf::prepend`]); bytes consumed from the front
//!   ([`PacketBuf::advance`], [`PacketBuf::split_to`]) join it.
//! - *data*: what `Deref` shows.
//! - *spare*: room that `BufMut` (tokio's `read_buf`, codecs) and the kernel
//!   fill.
//!
//! # Invariants
//!
//! - `head + len <= alloc_bytes`.
//! - `alloc_bytes` is the length the chunk was allocated or last shrunk
//!   with, which is what `Pool::free_sized` wants on drop.
//! - The chunk belongs to this value alone until drop; it never moves
//!   (shrinking is in place), which the io_uring buffer ring relies on.
//!
//! # Sizing: receive big, keep exact
//!
//! A receive path allocates the largest packet it may get (MTU, GRO size,
//! 64 KiB for UDP) and, once the kernel said how much arrived, calls
//! [`PacketBuf::trim`]: `Pool::shrink` gives the tail back in place, and the
//! pool coalesces it with its free neighbour at once, so the next receive
//! reuses the same memory. Buffers the application holds are exactly as
//! large as their packets (rounded to the 32-byte granule).
//!
//! # The pool handle
//!
//! A buffer keeps its pool alive with a [`PoolHandle`]: a counted clone (an
//! atomic increment when the buffer is made, a decrement when it drops),
//! or, for a pool made `'static` with [`Pool::leak`], an uncounted one that
//! costs neither. A server's pool that lives as long as the process should
//! be leaked once at start-up.
//!
//! # Threads
//!
//! A `PacketBuf` (and the `Bytes` from [`PacketBuf::freeze`]) may be dropped
//! on any thread: `Pool::free_sized` from a thread that does not own the
//! chunk's shard pushes it to the owner's lock-free remote-free queue, an
//! atomic push. `pool.collect()` drains those queues, so a test calls it
//! before comparing `in_use_bytes` with a baseline.

use std::fmt;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes};
use nta_core::{Pool, PoolHandle};

use crate::{BufSource, PoolExhausted, RxBuf};

/// An owned buffer in an NTA pool. See the module notes.
pub struct PacketBuf {
    pool: PoolHandle,
    ptr: NonNull<u8>,
    alloc_bytes: usize,
    head: usize,
    len: usize,
}

// SAFETY: a PacketBuf owns its chunk exclusively; the pool handle is Send +
// Sync and frees from any thread are part of its contract.
unsafe impl Send for PacketBuf {}
// SAFETY: `&PacketBuf` only gives shared reads of the data.
unsafe impl Sync for PacketBuf {}

impl PacketBuf {
    /// An empty buffer with room for `capacity_bytes` of data.
    ///
    /// # Panics
    ///
    /// If the pool is exhausted; see [`PacketBuf::try_with_capacity`].
    #[inline]
    pub fn with_capacity(pool: &Pool, capacity_bytes: usize) -> PacketBuf {
        Self::with_headroom(pool, 0, capacity_bytes)
    }

    /// An empty buffer with room for `capacity_bytes` of data, or
    /// [`PoolExhausted`] (also when more than `nta_core::MAX_ALLOC_BYTES`
    /// is asked for).
    #[inline]
    pub fn try_with_capacity(pool: &Pool, capacity_bytes: usize) -> Result<PacketBuf, PoolExhausted> {
        Self::try_with_headroom(pool, 0, capacity_bytes)
    }

    /// An empty buffer with `headroom_bytes` reserved in front and room for
    /// `capacity_bytes` of data.
    ///
    /// # Panics
    ///
    /// If the pool is exhausted.
    #[inline]
    pub fn with_headroom(pool: &Pool, headroom_bytes: usize, capacity_bytes: usize) -> PacketBuf {
        match Self::try_with_headroom(pool, headroom_bytes, capacity_bytes) {
            Ok(buf) => buf,
            Err(e) => exhausted(e),
        }
    }

    /// Fallible [`PacketBuf::with_headroom`].
    #[inline]
    pub fn try_with_headroom(
        pool: &Pool,
        headroom_bytes: usize,
        capacity_bytes: usize,
    ) -> Result<PacketBuf, PoolExhausted> {
        let alloc_bytes =
            headroom_bytes.checked_add(capacity_bytes).ok_or(PoolExhausted { requested_bytes: usize::MAX })?.max(1);
        let ptr = pool.alloc(alloc_bytes).ok_or(PoolExhausted { requested_bytes: alloc_bytes })?;
        Ok(PacketBuf { pool: pool.handle(), ptr, alloc_bytes, head: headroom_bytes, len: 0 })
    }

    /// A trimmed copy of `data` in the pool.
    pub fn try_copy_from_slice(pool: &Pool, data: &[u8]) -> Result<PacketBuf, PoolExhausted> {
        let mut buf = Self::try_with_capacity(pool, data.len())?;
        buf.put_slice(data);
        Ok(buf)
    }

    /// Bytes of data.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Data plus spare room: how long the data can grow at the back.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.alloc_bytes - self.head
    }

    /// Bytes free in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.head
    }

    /// Bytes of the pool chunk this buffer holds (headroom, data, spare).
    #[inline]
    pub fn alloc_bytes(&self) -> usize {
        self.alloc_bytes
    }

    /// The pool the chunk belongs to.
    #[inline]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Shortens the data to `len_bytes`; no effect if it is shorter already.
    /// The allocation is unchanged (see [`PacketBuf::trim`]).
    #[inline]
    pub fn truncate(&mut self, len_bytes: usize) {
        self.len = self.len.min(len_bytes);
    }

    /// Empties the data; headroom and allocation are unchanged.
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops `n_bytes` from the front of the data; they become headroom.
    ///
    /// # Panics
    ///
    /// If `n_bytes > len()`.
    #[inline]
    pub fn advance(&mut self, n_bytes: usize) {
        assert!(n_bytes <= self.len, "advance {n_bytes} past the {} data bytes", self.len);
        self.head += n_bytes;
        self.len -= n_bytes;
    }

    /// Copies `header` in front of the data, into the headroom, without
    /// moving the data.
    ///
    /// # Panics
    ///
    /// If the headroom is smaller than `header`; see
    /// [`PacketBuf::try_prepend`].
    pub fn prepend(&mut self, header: &[u8]) {
        assert!(self.try_prepend(header), "prepend of {} bytes with {} bytes of headroom", header.len(), self.head);
    }

    /// Copies `header` in front of the data if the headroom allows; returns
    /// whether it did.
    #[inline]
    pub fn try_prepend(&mut self, header: &[u8]) -> bool {
        if header.len() > self.head {
            return false;
        }
        self.head -= header.len();
        self.len += header.len();
        // SAFETY: `head..head + header.len()` lies inside the chunk (it was
        // headroom), is owned by `self`, and cannot overlap `header`, which
        // is borrowed shared while `self` is borrowed exclusively.
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), self.ptr.as_ptr().add(self.head), header.len());
        }
        true
    }

    /// Shrinks the allocation in place to headroom + data and returns the
    /// tail to the pool. Afterwards `capacity() == len()` (for an empty
    /// buffer, one byte stays allocated).
    #[inline]
    pub fn trim(&mut self) {
        let keep_bytes = (self.head + self.len).max(1);
        if keep_bytes < self.alloc_bytes {
            // SAFETY: `ptr` is a live chunk of `pool` allocated (or last
            // resized) with `alloc_bytes`, and `keep_bytes` is smaller.
            unsafe { self.pool.shrink(self.ptr, keep_bytes) };
            self.alloc_bytes = keep_bytes;
        }
    }

    /// Splits off the first `at` bytes of data into a new buffer; `self`
    /// keeps the rest.
    ///
    /// Pool chunks cannot be shared, so this copies the smaller side into a
    /// fresh chunk: at most `len() / 2` bytes. For zero-copy splitting,
    /// [`PacketBuf::freeze`] and split the `Bytes`.
    ///
    /// # Panics
    ///
    /// If `at > len()`, or if the pool is exhausted (see
    /// [`PacketBuf::try_split_to`]).
    pub fn split_to(&mut self, at: usize) -> PacketBuf {
        match self.try_split_to(at) {
            Ok(front) => front,
            Err(e) => exhausted(e),
        }
    }

    /// Fallible [`PacketBuf::split_to`]; on error `self` is unchanged.
    ///
    /// # Panics
    ///
    /// If `at > len()`.
    pub fn try_split_to(&mut self, at: usize) -> Result<PacketBuf, PoolExhausted> {
        assert!(at <= self.len, "split_to {at} past the {} data bytes", self.len);
        if at <= self.len - at {
            // Copy the front out; it becomes headroom here.
            let front = PacketBuf::try_copy_from_slice(&self.pool, &self[..at])?;
            self.advance(at);
            Ok(front)
        } else {
            // Copy the back out; this chunk, cut to the front, is returned.
            let back = PacketBuf::try_copy_from_slice(&self.pool, &self[at..])?;
            let mut front = std::mem::replace(self, back);
            front.truncate(at);
            front.trim();
            Ok(front)
        }
    }

    /// Turns the buffer into `Bytes` without a copy (`Bytes::from_owner`).
    /// The chunk returns to the pool when the last clone drops, on whatever
    /// thread that is. Call [`PacketBuf::trim`] first if the spare room
    /// should not stay allocated meanwhile.
    #[inline]
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }

    #[inline]
    fn spare_ptr(&mut self) -> *mut u8 {
        // SAFETY: `head + len <= alloc_bytes`, so the pointer stays inside
        // (or one past) the chunk.
        unsafe { self.ptr.as_ptr().add(self.head + self.len) }
    }
}

/// Cold: the infallible constructors panic like `Vec` does on allocation
/// failure, but with a message (the pool never aborts by itself).
#[cold]
#[inline(never)]
fn exhausted(e: PoolExhausted) -> ! {
    panic!("{e}")
}

impl Drop for PacketBuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `ptr` is a live chunk of `pool`, allocated or last shrunk
        // with `alloc_bytes`, owned by this value alone and freed once.
        unsafe { self.pool.free_sized(self.ptr, self.alloc_bytes) }
    }
}

impl Deref for PacketBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `head..head + len` lies inside the chunk and was
        // initialised (invariant of `len`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(self.head), self.len) }
    }
}

impl DerefMut for PacketBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.head), self.len) }
    }
}

impl AsRef<[u8]> for PacketBuf {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for PacketBuf {
    #[inline]
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketBuf")
            .field("ptr", &self.ptr)
            .field("headroom", &self.head)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

// SAFETY: `chunk_mut` is the spare room, `remaining_mut` its length, and
// `advance_mut` only moves `len` over bytes the caller initialised.
unsafe impl BufMut for PacketBuf {
    #[inline]
    fn remaining_mut(&self) -> usize {
        self.capacity() - self.len
    }

    #[inline]
    unsafe fn advance_mut(&mut self, cnt: usize) {
        assert!(cnt <= self.remaining_mut(), "advance_mut past the capacity");
        self.len += cnt;
    }

    #[inline]
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        UninitSlice::uninit(RxBuf::spare_mut(self))
    }
}

// SAFETY: the spare room is inside the pool chunk, which this value owns and
// which never moves when the value does.
unsafe impl RxBuf for PacketBuf {
    #[inline]
    fn capacity(&self) -> usize {
        PacketBuf::capacity(self)
    }

    #[inline]
    fn spare_ptr(&mut self) -> *mut u8 {
        PacketBuf::spare_ptr(self)
    }

    #[inline]
    unsafe fn set_len(&mut self, len_bytes: usize) {
        // A hard check: every later read of the data trusts `len`.
        assert!(len_bytes <= self.capacity(), "set_len {len_bytes} past the capacity {}", self.capacity());
        self.len = len_bytes;
    }

    #[inline]
    fn advance(&mut self, n_bytes: usize) {
        PacketBuf::advance(self, n_bytes)
    }

    #[inline]
    fn truncate(&mut self, len_bytes: usize) {
        PacketBuf::truncate(self, len_bytes)
    }

    #[inline]
    fn trim(&mut self) {
        PacketBuf::trim(self)
    }

    #[inline]
    fn freeze(self) -> Bytes {
        PacketBuf::freeze(self)
    }

    #[inline]
    fn spare_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        let spare_bytes = self.capacity() - self.len;
        // SAFETY: the spare room is `spare_bytes` bytes of the chunk after the
        // data, owned by `self`, borrowed exclusively for the slice's life.
        unsafe { std::slice::from_raw_parts_mut(self.spare_ptr().cast::<MaybeUninit<u8>>(), spare_bytes) }
    }
}

/// The pool as a source of receive buffers for every backend.
impl BufSource for Pool {
    type Buf = PacketBuf;

    #[inline]
    fn try_alloc(&self, capacity_bytes: usize) -> Result<PacketBuf, PoolExhausted> {
        PacketBuf::try_with_capacity(self, capacity_bytes)
    }
}
