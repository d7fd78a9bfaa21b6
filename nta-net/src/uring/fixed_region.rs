//! A memory region registered with io_uring as fixed buffer 0, so that
//! `IORING_OP_SEND_ZC` can send from it without pinning pages per send.
//!
//! For the NTA pool, the region is the pool's whole address range, which
//! must be mapped when it is registered (io_uring pins the pages then) and
//! stay mapped while any ring uses it. nta-core maps segments lazily and may
//! release wholly free ones, so the pool must be built with
//! `PoolBuilder::premap(true)`, which maps the whole capacity up front and
//! never releases it; [`FixedRegion::of_premapped_pool`] checks that.

use std::io;

use nta_core::Pool;

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

    /// The whole range of a pool built with `premap(true)`.
    ///
    /// Fails when the pool is not wholly mapped (built without `premap`).
    ///
    /// # Safety
    ///
    /// `pool` must outlive every ring that registers the region.
    pub unsafe fn of_premapped_pool(pool: &Pool) -> io::Result<FixedRegion> {
        let (base, len_bytes) = pool.memory_range();
        if pool.stats().mapped_bytes as usize != len_bytes {
            return Err(io::Error::other("the pool is not premapped: build it with PoolBuilder::premap(true)"));
        }
        // SAFETY: a premapped pool keeps its whole range mapped for its
        // life, and the caller keeps the pool alive.
        Ok(unsafe { FixedRegion::new(base.as_ptr(), len_bytes) })
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
