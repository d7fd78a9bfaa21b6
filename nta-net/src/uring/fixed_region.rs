//! A memory region registered with io_uring as fixed buffer 0, so that
//! `IORING_OP_SEND_ZC` can send from it without pinning pages per send.
//!
//! For the NTA pool, the region is the pool's whole reserved range, which
//! must be mapped when it is registered (io_uring pins the pages then) and
//! stay mapped while any ring uses it. nta-core maps segments lazily and may
//! release wholly free ones, so [`FixedRegion::premap_pool`] maps every
//! segment first, and the caller must have built the pool with
//! `retain_bytes(capacity)` so none is released later. A first-class pool
//! API for this (pre-mapping, and the mapped range) would replace the
//! `PoolInner::segments()` call used here.

use std::io;

use nta_core::{Pool, MAX_ALLOC_BYTES};

/// A registered (or registrable) memory range: `[base, base + len_bytes)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedRegion {
    base: usize,
    len_bytes: usize,
}

impl FixedRegion {
    /// A region from its bounds.
    ///
    /// # Safety
    ///
    /// The range must be mapped, and stay mapped (and not be reused for other
    /// data that must not leak onto the network) for as long as any ring
    /// that registers it lives.
    pub unsafe fn new(base: *const u8, len_bytes: usize) -> FixedRegion {
        FixedRegion { base: base as usize, len_bytes }
    }

    /// Maps every segment of `pool` (by filling it once and freeing it
    /// again) and returns its whole range.
    ///
    /// # Safety
    ///
    /// `pool` must be built with `retain_bytes` at least its capacity, so no
    /// segment is released while the region is registered, and must outlive
    /// every ring that registers the region.
    pub unsafe fn premap_pool(pool: &Pool) -> io::Result<FixedRegion> {
        let mut chunks = Vec::new();
        while let Some(chunk) = pool.alloc(MAX_ALLOC_BYTES) {
            chunks.push(chunk);
        }
        for chunk in chunks {
            // SAFETY: each chunk was just allocated from `pool` with
            // `MAX_ALLOC_BYTES` and is freed once.
            unsafe { pool.free_sized(chunk, MAX_ALLOC_BYTES) };
        }
        pool.collect();
        let mapped_bytes = pool.stats().mapped_bytes as usize;
        if mapped_bytes == 0 {
            return Err(io::Error::other("the pool mapped no memory"));
        }
        let base = pool.inner().segments().base().as_ptr();
        // SAFETY: `mapped_bytes` from the start of the reservation are mapped
        // (every segment was just used), and the caller keeps them mapped.
        Ok(unsafe { FixedRegion::new(base, mapped_bytes) })
    }

    /// Whether `[ptr, ptr + len_bytes)` lies inside the region.
    #[inline]
    pub fn contains(&self, ptr: *const u8, len_bytes: usize) -> bool {
        let start = ptr as usize;
        start >= self.base && start + len_bytes <= self.base + self.len_bytes
    }

    /// The iovec to register.
    pub(crate) fn iovec(&self) -> libc::iovec {
        libc::iovec { iov_base: self.base as *mut libc::c_void, iov_len: self.len_bytes }
    }
}
