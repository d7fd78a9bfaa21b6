//! The quick cache: deferred coalescing for recently freed small chunks.
//!
//! Merging a freed chunk touches its neighbours' boundary tags and the free
//! lists; splitting on the next allocation touches them again. Packet
//! workloads free and allocate the same few sizes over and over (IMIX: 64,
//! 594 and 1518 bytes), so each shard keeps a small LIFO stack of freed
//! chunks per exact granule count, and serves an allocation of that size
//! from it without touching bitmaps, tags or lists — the same trade the
//! Linux SLAB "array caches" and glibc's tcache make. The link lives in the
//! chunk's first word.
//!
//! Bounds, so the footprint stays that of a coalescing allocator:
//!
//! - only chunks of up to [`QUICK_MAX_GRANULES`] (2 KiB, covering 1518-byte
//!   frames) are cached, at most [`QUICK_PER_CLASS`] per size, and at most
//!   [`QUICK_MAX_BYTES`] per shard in all;
//! - the cache is flushed (its chunks freed and merged for real) whenever
//!   an allocation would otherwise grow the pool or fail, and by
//!   `Pool::collect`;
//! - checked mode bypasses it, so every free is verified and merged at once.
//!
//! A cached chunk keeps its `start` bit and its granules stay marked used in
//! the node bitmaps; the shard's counters already count it as free. Its
//! second word holds the parked mark (see `mark`) while it is cached.
//! Invariant: `bytes == sum over classes of count[g] * g * 32`.

use crate::granule::GRANULE;
use crate::mark;
use std::ptr;

/// Largest chunk, in granules, the cache holds.
pub const QUICK_MAX_GRANULES: usize = 64;
/// Chunks cached per size.
pub const QUICK_PER_CLASS: u16 = 32;
/// Bytes cached per shard at most.
pub const QUICK_MAX_BYTES: usize = 128 << 10;

/// Per-shard stacks of freed chunks, indexed by granule count.
#[derive(Debug)]
pub struct QuickCache {
    heads: [*mut u8; QUICK_MAX_GRANULES + 1],
    counts: [u16; QUICK_MAX_GRANULES + 1],
    bytes: usize,
}

impl Default for QuickCache {
    fn default() -> Self {
        Self::new()
    }
}

impl QuickCache {
    pub const fn new() -> Self {
        QuickCache { heads: [ptr::null_mut(); QUICK_MAX_GRANULES + 1], counts: [0; QUICK_MAX_GRANULES + 1], bytes: 0 }
    }

    /// Caches a chunk of `granules` if there is room, writing `mark_word`
    /// into it; false otherwise.
    ///
    /// # Safety
    /// `chunk` must be a live chunk of exactly `granules` that the caller
    /// gives up, owned by the shard that owns this cache.
    #[inline]
    pub unsafe fn push(&mut self, chunk: *mut u8, granules: usize, mark_word: u64) -> bool {
        if granules > QUICK_MAX_GRANULES
            || self.counts[granules] >= QUICK_PER_CLASS
            || self.bytes + granules * GRANULE > QUICK_MAX_BYTES
        {
            return false;
        }
        // SAFETY: the chunk is ours and at least one granule long.
        unsafe {
            chunk.cast::<*mut u8>().write(self.heads[granules]);
            mark::write(chunk, mark_word);
        }
        self.heads[granules] = chunk;
        self.counts[granules] += 1;
        self.bytes += granules * GRANULE;
        true
    }

    /// Takes a cached chunk of exactly `granules`, if any, with its mark
    /// cleared.
    #[inline]
    pub fn pop(&mut self, granules: usize) -> Option<*mut u8> {
        if granules > QUICK_MAX_GRANULES {
            return None;
        }
        let chunk = self.heads[granules];
        if chunk.is_null() {
            return None;
        }
        // SAFETY: cached chunks hold the link to the next one in their first
        // word and their mark in the second.
        self.heads[granules] = unsafe {
            mark::clear(chunk);
            chunk.cast::<*mut u8>().read()
        };
        self.counts[granules] -= 1;
        self.bytes -= granules * GRANULE;
        Some(chunk)
    }

    /// Takes any cached chunk, with its granule count (for flushing).
    pub fn pop_any(&mut self) -> Option<(*mut u8, usize)> {
        if self.bytes == 0 {
            return None;
        }
        let g = (1..=QUICK_MAX_GRANULES).find(|&g| !self.heads[g].is_null())?;
        self.pop(g).map(|p| (p, g))
    }

    /// Whether anything is cached.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Bytes cached.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `chunk` is cached (double-free confirmation; cold).
    pub fn contains(&self, chunk: *mut u8) -> bool {
        let mut found = false;
        self.for_each(|c, _| found |= c == chunk);
        found
    }

    /// Calls `f(chunk, granules)` for every cached chunk (validation).
    pub fn for_each(&self, mut f: impl FnMut(*mut u8, usize)) {
        for g in 1..=QUICK_MAX_GRANULES {
            let mut c = self.heads[g];
            while !c.is_null() {
                f(c, g);
                // SAFETY: as in `pop`.
                c = unsafe { c.cast::<*mut u8>().read() };
            }
        }
    }
}
