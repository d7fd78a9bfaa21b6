//! The Rust allocator interfaces: `GlobalAlloc` and `allocator_api2`.
//!
//! # Which to use when
//!
//! - **`Pool` as an `Allocator`** (`Vec<u8, &Pool>`, `Box<T, Pool>` via
//!   allocator-api2): for packet and payload buffers you want in the
//!   exportable pool, next to plain heap data that stays in the system
//!   allocator. This is the intended use: the pool is a packet-buffer pool.
//! - **`NtaGlobal` as `#[global_allocator]`**: every allocation of the
//!   program goes to a private (non-exported) pool with one shard per CPU,
//!   requests above 2 MiB included (as runs of segments). Requests aligned
//!   above 4 KiB go to the system allocator, and so do runs the pool cannot
//!   place and all requests if the pool cannot be set up. Use it to measure
//!   NTA on a whole program; it cannot be exported. Small frees go through
//!   the freeing thread's cache (`thread_cache`), which each thread flushes
//!   when it exits. It survives `fork()` (see `fork`).
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: nta_core::NtaGlobal = nta_core::NtaGlobal::new();
//!
//! fn main() {
//!     let v: Vec<u64> = (0..10_000).collect();      // served by the pool
//!     let big = vec![0u8; 8 << 20];                 // > 2 MiB: a run of segments
//!     assert_eq!(v.iter().sum::<u64>(), 49_995_000);
//!     assert_eq!(big.len(), 8 << 20);
//! }
//! ```

use crate::granule::{GRANULE, MAX_ALIGN, MAX_ALLOC_BYTES};
use crate::inner::{Config, PoolInner};
use crate::pool::Pool;
use crate::stats::Stats;
use crate::thread_cache::{self, PoolRef};
use allocator_api2::alloc::{AllocError, Allocator, Layout};
use std::alloc::{GlobalAlloc, System};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

/// The process-wide pool behind [`NtaGlobal`]. A static (not a field) so
/// thread caches can hold a `'static` reference to it.
static GLOBAL_POOL: OnceLock<Option<PoolInner>> = OnceLock::new();

/// The global pool, if it has been created (for the fork handlers).
pub(crate) fn global_pool() -> Option<&'static PoolInner> {
    GLOBAL_POOL.get().and_then(Option::as_ref)
}

/// A process-wide NTA pool usable as `#[global_allocator]`. All values of
/// this type share one pool, created on first use.
#[derive(Debug)]
pub struct NtaGlobal {
    _private: (),
}

impl Default for NtaGlobal {
    fn default() -> Self {
        Self::new()
    }
}

impl NtaGlobal {
    /// A global allocator whose pool is created on first use.
    pub const fn new() -> Self {
        NtaGlobal { _private: () }
    }

    #[inline]
    fn pool(&self) -> Option<&'static PoolInner> {
        GLOBAL_POOL
            .get_or_init(|| {
                let cfg = Config { exportable: false, ..Config::default_for_machine() };
                PoolInner::new(cfg).ok()
            })
            .as_ref()
    }

    #[inline]
    fn pool_for(&self, ptr: *mut u8) -> Option<&'static PoolInner> {
        global_pool().filter(|p| p.contains(ptr))
    }

    #[inline]
    fn fits(layout: std::alloc::Layout) -> bool {
        layout.align() <= MAX_ALIGN
    }

    /// The global pool's counters, or `None` before its first use (or if it
    /// could not be set up and every request goes to the system allocator).
    pub fn stats(&self) -> Option<Stats> {
        global_pool().map(PoolInner::stats)
    }

    /// Whether `ptr` was allocated by the global pool (not by the system
    /// allocator it falls back to).
    pub fn owns(&self, ptr: *const u8) -> bool {
        global_pool().is_some_and(|p| p.contains(ptr))
    }
}

// SAFETY: alloc returns null or a fresh chunk of at least `size` bytes at
// `align`; dealloc and realloc route each pointer back to the allocator
// that made it (pool range check, else System).
unsafe impl GlobalAlloc for NtaGlobal {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if Self::fits(layout) {
            if let Some(p) = self.pool() {
                let c = if layout.align() <= GRANULE {
                    if let Some(c) = thread_cache::alloc(p, layout.size()) {
                        return c.as_ptr();
                    }
                    thread_cache::alloc_refill(p, || PoolRef::Static(p), layout.size())
                } else {
                    p.alloc(layout.size(), layout.align().max(GRANULE))
                };
                if let Some(c) = c {
                    return c.as_ptr();
                }
                if layout.size() <= MAX_ALLOC_BYTES {
                    return ptr::null_mut();
                }
                // A run the pool cannot place: the system allocator may.
            }
        }
        // SAFETY: forwarded; layout has non-zero size per GlobalAlloc's contract.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        match self.pool_for(ptr) {
            // SAFETY: the pointer is a live chunk of this pool (it lies in
            // the pool's range and GlobalAlloc's caller gives it up).
            Some(p) => unsafe {
                let c = NonNull::new_unchecked(ptr);
                if !thread_cache::free_sized(p, || PoolRef::Static(p), c, layout.size()) {
                    p.free(c, Some(layout.size()))
                }
            },
            // SAFETY: not ours, so System made it.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if let Some(p) = self.pool_for(ptr) {
            // SAFETY: `ptr` is a live chunk of `p`.
            if unsafe { p.try_grow(NonNull::new_unchecked(ptr), new_size) } {
                return ptr;
            }
        }
        // SAFETY: layout of the new block is valid per realloc's contract.
        let new_layout = unsafe { std::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

fn allocate_in(pool: &Pool, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
    let p = pool.alloc_aligned(layout.size(), layout.align()).ok_or(AllocError)?;
    Ok(NonNull::slice_from_raw_parts(p, layout.size()))
}

macro_rules! impl_allocator {
    ($t:ty) => {
        // SAFETY: allocate returns fresh chunks of at least layout.size()
        // bytes at layout.align(); deallocate frees chunks of this pool;
        // cloning a Pool handle shares the same pool, so any clone may free.
        unsafe impl Allocator for $t {
            #[inline]
            fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
                allocate_in(self, layout)
            }

            #[inline]
            unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
                // SAFETY: per Allocator's contract the block is ours and live.
                unsafe { self.free_sized(ptr, layout.size()) }
            }

            unsafe fn shrink(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
                if new.align() > old.align() && ptr.as_ptr() as usize % new.align() != 0 {
                    let q = allocate_in(self, new)?;
                    // SAFETY: both blocks are live; the new one is smaller.
                    unsafe {
                        ptr::copy_nonoverlapping(ptr.as_ptr(), q.as_ptr().cast::<u8>(), new.size());
                        self.free_sized(ptr, old.size());
                    }
                    return Ok(q);
                }
                // SAFETY: per Allocator's contract the block is ours and live.
                unsafe { Pool::shrink(self, ptr, new.size()) };
                Ok(NonNull::slice_from_raw_parts(ptr, new.size()))
            }

            unsafe fn grow(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
                // SAFETY: per Allocator's contract the block is ours and live.
                if ptr.as_ptr() as usize % new.align() == 0 && unsafe { Pool::try_grow(self, ptr, new.size()) } {
                    return Ok(NonNull::slice_from_raw_parts(ptr, new.size()));
                }
                let q = allocate_in(self, new)?;
                // SAFETY: both blocks are live and distinct.
                unsafe {
                    ptr::copy_nonoverlapping(ptr.as_ptr(), q.as_ptr().cast::<u8>(), old.size());
                    self.free_sized(ptr, old.size());
                }
                Ok(q)
            }
        }
    };
}

// `&Pool` is covered by allocator-api2's blanket `impl Allocator for &A`.
impl_allocator!(Pool);
