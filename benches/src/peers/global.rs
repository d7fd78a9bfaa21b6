//! glibc malloc, mimalloc and jemalloc as peers.
//!
//! None of them is the process's global allocator here (that stays glibc via
//! Rust's default): mimalloc and jemalloc are called through their
//! `GlobalAlloc` values, which go straight to `mi_malloc` / `_rjem_malloc`.
//! Requests use alignment 8; every one of them returns at least 16-aligned
//! blocks anyway.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;

use super::Peer;

/// Alignment requested from the general-purpose allocators.
const ALIGN: usize = 8;

/// The layout for a request of `len` bytes (0 becomes 1: `GlobalAlloc` forbids
/// zero-sized layouts). `None` for lengths no layout can describe.
#[inline]
fn layout(len: usize) -> Option<Layout> {
    Layout::from_size_align(len.max(1), ALIGN).ok()
}

macro_rules! global_alloc_peer {
    ($(#[$doc:meta])* $peer:ident, $name:literal, $alloc:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $peer;

        impl $peer {
            #[inline]
            fn raw_alloc(len: usize) -> Option<NonNull<u8>> {
                let layout = layout(len)?;
                // SAFETY: layout has a non-zero size.
                NonNull::new(unsafe { $alloc.alloc(layout) })
            }

            /// # Safety
            /// `ptr` came from `raw_alloc(len)` (or a realloc to `len`) and is live.
            #[inline]
            unsafe fn raw_free(ptr: NonNull<u8>, len: usize) {
                if let Some(layout) = layout(len) {
                    // SAFETY: the caller guarantees ptr was allocated with this layout.
                    unsafe { $alloc.dealloc(ptr.as_ptr(), layout) }
                }
            }

            /// # Safety
            /// As for `raw_free`, with `old_len` the block's length.
            #[inline]
            unsafe fn raw_realloc(ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
                let old_layout = layout(old_len)?;
                layout(new_len)?;
                // SAFETY: ptr was allocated with old_layout; the new size is
                // non-zero and fits a layout of the same alignment.
                NonNull::new(unsafe { $alloc.realloc(ptr.as_ptr(), old_layout, new_len.max(1)) })
            }
        }

        impl Peer for $peer {
            fn name(&self) -> &'static str {
                $name
            }

            #[inline]
            fn alloc(&self, len: usize) -> Option<NonNull<u8>> {
                Self::raw_alloc(len)
            }

            #[inline]
            unsafe fn free(&self, ptr: NonNull<u8>, len: usize) {
                // SAFETY: forwarded contract of Peer::free.
                unsafe { Self::raw_free(ptr, len) }
            }

            unsafe fn resize(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
                // SAFETY: forwarded contract of Peer::resize.
                unsafe { Self::raw_realloc(ptr, old_len, new_len) }
            }

            unsafe fn usable_size(&self, ptr: NonNull<u8>, _len: usize) -> usize {
                // SAFETY: ptr is a live block of this allocator.
                unsafe { usable_size_of(self, ptr) }
            }

            fn held_bytes(&self) -> Option<u64> {
                held_bytes_of(self)
            }

            fn held_bytes_is_exact(&self) -> bool {
                held_bytes_exact_of(self)
            }
        }
    };
}

global_alloc_peer!(
    /// glibc malloc through `std::alloc::System`.
    SystemPeer,
    "system",
    System
);
global_alloc_peer!(
    /// mimalloc, called directly.
    MimallocPeer,
    "mimalloc",
    mimalloc::MiMalloc
);
global_alloc_peer!(
    /// jemalloc (tikv-jemallocator, prefixed symbols), called directly.
    JemallocPeer,
    "jemalloc",
    tikv_jemallocator::Jemalloc
);

/// Per-allocator usable size and held-bytes queries.
trait MallocStats {
    /// # Safety
    /// `ptr` is a live block of this allocator.
    unsafe fn usable(ptr: NonNull<u8>) -> usize;
    fn held() -> Option<u64>;
    fn exact() -> bool;
}

impl MallocStats for SystemPeer {
    unsafe fn usable(ptr: NonNull<u8>) -> usize {
        // SAFETY: ptr is a live glibc block.
        unsafe { libc::malloc_usable_size(ptr.as_ptr().cast()) }
    }

    fn held() -> Option<u64> {
        // SAFETY: mallinfo2 only reads glibc's arena statistics.
        let info = unsafe { libc::mallinfo2() };
        // arena: bytes obtained with brk/mmap'd arenas; hblkhd: bytes in
        // blocks served directly by mmap.
        Some((info.arena + info.hblkhd) as u64)
    }

    fn exact() -> bool {
        // The benchmark's own vectors also live in glibc's heap.
        false
    }
}

impl MallocStats for MimallocPeer {
    unsafe fn usable(ptr: NonNull<u8>) -> usize {
        // SAFETY: ptr is a live mimalloc block.
        unsafe { libmimalloc_sys::mi_usable_size(ptr.as_ptr().cast()) }
    }

    fn held() -> Option<u64> {
        let mut fields = [0usize; 8];
        let [elapsed, user, system, rss, peak_rss, commit, peak_commit, faults] = &mut fields;
        // SAFETY: every out-pointer points at a live usize.
        unsafe { libmimalloc_sys::mi_process_info(elapsed, user, system, rss, peak_rss, commit, peak_commit, faults) };
        // On Linux mimalloc estimates commit as the read/write memory it has
        // reserved and not decommitted: its own footprint.
        Some(fields[5] as u64)
    }

    fn exact() -> bool {
        true
    }
}

impl MallocStats for JemallocPeer {
    unsafe fn usable(ptr: NonNull<u8>) -> usize {
        // SAFETY: ptr is a live jemalloc block.
        unsafe { tikv_jemallocator::usable_size(ptr.as_ptr()) }
    }

    fn held() -> Option<u64> {
        // jemalloc caches its statistics; advancing the epoch refreshes them.
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        tikv_jemalloc_ctl::stats::resident::read().ok().map(|bytes| bytes as u64)
    }

    fn exact() -> bool {
        true
    }
}

/// # Safety
/// `ptr` is a live block of `M`.
unsafe fn usable_size_of<M: MallocStats>(_peer: &M, ptr: NonNull<u8>) -> usize {
    // SAFETY: forwarded.
    unsafe { M::usable(ptr) }
}

fn held_bytes_of<M: MallocStats>(_peer: &M) -> Option<u64> {
    M::held()
}

fn held_bytes_exact_of<M: MallocStats>(_peer: &M) -> bool {
    M::exact()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<P: Peer>(peer: &P) {
        let ptr = peer.alloc(100).unwrap();
        // SAFETY: ptr is live with length 100.
        unsafe {
            assert!(peer.usable_size(ptr, 100) >= 100);
            let grown = peer.resize(ptr, 100, 5000).unwrap();
            let shrunk = peer.resize(grown, 5000, 10).unwrap();
            peer.free(shrunk, 10);
        }
        assert!(peer.held_bytes().unwrap() > 0);
    }

    #[test]
    fn each_general_purpose_allocator_round_trips() {
        round_trip(&SystemPeer);
        round_trip(&MimallocPeer);
        round_trip(&JemallocPeer);
    }
}
