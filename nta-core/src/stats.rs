//! Pool statistics: per-shard counters, summed on demand.
//!
//! Each shard's counters are written only while holding that shard, with a
//! relaxed load and store (no locked instruction), and read by anyone with
//! relaxed loads. A snapshot taken while other threads allocate is therefore
//! approximate; taken at rest (or after `Pool::collect`) it is exact.
//!
//! Equations that hold at rest:
//! `in_use_bytes + free_bytes == mapped_bytes`.
//!
//! The pool does not count the bytes callers asked for, only the granules
//! it gave them (at most 31 bytes more per chunk): keeping the requested
//! length meant a slack byte per granule (3.1% of the pool in metadata) and
//! a metadata store on every allocation, for a figure callers can count
//! themselves.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a pool's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Granule bytes in live chunks (including chunks queued for remote free).
    pub in_use_bytes: u64,
    /// `mapped_bytes - in_use_bytes`.
    pub free_bytes: u64,
    /// Bytes of segments currently mapped.
    pub mapped_bytes: u64,
    /// Freed small chunks parked in the shards' quick caches (deferred
    /// coalescing); counted in `free_bytes`.
    pub cached_bytes: u64,
    /// Freed small chunks parked in threads' caches; counted in
    /// `free_bytes`.
    pub thread_cached_bytes: u64,
    /// Freed chunks of page nodes pending on their page node (deferred
    /// coalescing, merged before a new page node is carved); counted in
    /// `free_bytes`.
    pub pending_bytes: u64,
    /// The largest single free extent, in bytes.
    pub largest_free_bytes: u64,
    /// Metadata outside the pool memory: node bitmaps and fields of the
    /// mapped segments (about 0.8% of `mapped_bytes`), the shard table, and
    /// the pages of the thread-slot table that threads have used (up to the
    /// last slot ever claimed; the rest is mapped but never touched).
    pub metadata_bytes: u64,
    /// Huge nodes (= mapped segments).
    pub huge_nodes: u64,
    /// Page nodes currently carved out of huge nodes.
    pub page_nodes: u64,
    /// Mapped segments backed by hugetlb pages.
    pub segments_hugetlb: u64,
    /// Mapped segments advised for transparent huge pages.
    pub segments_thp: u64,
    /// Mapped segments on 4 KiB pages.
    pub segments_small: u64,
    /// Frees pushed to an owner's remote queue.
    pub remote_frees_queued: u64,
    /// Remote frees merged by their owner.
    pub remote_frees_drained: u64,
    /// Allocations that returned `None`.
    pub failed_allocs: u64,
    /// Successful allocations.
    pub allocs: u64,
    /// Live runs (buffers above 2 MiB, each a run of whole segments).
    pub runs: u64,
    /// Frees merged (local and drained remote).
    pub frees: u64,
    /// Bytes of free pages given back to the OS while their segments stay
    /// mapped (inside segments with live chunks, retained wholly free
    /// segments, and the last segment of a buffer above 2 MiB past its
    /// length), summed over every decay, purge, `Pool::trim` and run
    /// allocation or shrink so far; a page given back twice counts twice.
    /// They count in `free_bytes` (a run's tail in `in_use_bytes`); they
    /// are simply not resident.
    pub discarded_bytes: u64,
}

/// Counters one shard keeps.
#[derive(Debug, Default)]
pub struct Counters {
    pub in_use_granules: AtomicU64,
    pub page_nodes: AtomicU64,
    pub remote_drained: AtomicU64,
    /// Updated with `fetch_add` by any thread (failures happen off-lock too).
    pub failed_allocs: AtomicU64,
    pub allocs: AtomicU64,
    pub frees: AtomicU64,
}

/// Adds `delta` to a single-writer counter without a locked instruction.
#[inline]
pub fn bump(c: &AtomicU64, delta: i64) {
    c.store(c.load(Relaxed).wrapping_add(delta as u64), Relaxed);
}
