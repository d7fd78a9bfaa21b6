//! Per-node metadata: the occupancy bitmaps of one huge node and of the
//! page nodes carved from it.
//!
//! Metadata lives outside the pool memory (the way NTA kept it in
//! `struct page`), so allocated chunks carry no header and a reader process
//! that maps the pool sees only packet bytes.
//!
//! # Bitmaps (one bit per granule, 65 536 granules)
//!
//! - `free`: the granule belongs to a free extent *at its own level*. Inside
//!   a page node the bits describe the page node's extents; elsewhere they
//!   describe huge-level extents.
//! - `start`: the granule is the first granule of an allocated chunk.
//! - `pages` (one bit per 4 KiB): that page is a page node.
//!
//! `used = !free`. A chunk starting at granule `s` ends at the first granule
//! after `s` that is free or starts another chunk (or at its level's end):
//! this is how `free(ptr)` finds the size without being told.
//!
//! # Invariants (checked by `Pool::validate`)
//!
//! - `free[g] => !start[g]`.
//! - Every maximal run of free granules within one level region is exactly
//!   one free extent: no two adjacent free extents (immediate coalescing).
//! - No page node is wholly free (it would have gone back to its huge node).

use crate::granule::{HUGE_GRANULES, PAGES_PER_HUGE, PAGE_GRANULES};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

/// `owner` value of a node that no shard owns. Shard `i` is stored as `i + 1`
/// so that zeroed metadata (a segment never mapped) reads as unowned.
pub const NO_OWNER: u32 = 0;
/// End of an intrusive segment stack.
pub const NO_SEGMENT: u32 = u32::MAX;

/// Metadata of one huge node (one segment).
#[repr(C)]
pub struct NodeMeta {
    pub free: [AtomicU64; HUGE_GRANULES / 64],
    pub start: [AtomicU64; HUGE_GRANULES / 64],
    pub pages: [AtomicU64; PAGES_PER_HUGE / 64],
    /// Shard that owns the node plus one, or [`NO_OWNER`].
    pub owner: AtomicU32,
    /// `SegmentState` as u8.
    pub state: AtomicU8,
    /// `Backing` as u8.
    pub backing: AtomicU8,
    /// Link in the segment table's stacks of free or released segments.
    pub next: AtomicU32,
    /// When the segment was last parked free (ms since the pool started).
    pub parked_ms: AtomicU64,
    /// On a run head: the run's length in segments (0 elsewhere).
    pub run_segments: AtomicU32,
    /// On a run head: the bytes requested for the run's buffer.
    pub run_len: AtomicU64,
    /// The slot's generation while mapped (see `export`), 0 when unmapped.
    pub generation: AtomicU64,
    /// 1 when the segment's memfd is sealed against new writers.
    pub sealed: AtomicU8,
}

impl std::fmt::Debug for NodeMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMeta").field("owner", &self.owner).field("state", &self.state).finish_non_exhaustive()
    }
}

impl NodeMeta {
    /// Whether granule `g` lies in a page node.
    #[inline]
    pub fn in_page_node(&self, g: usize) -> bool {
        crate::bitmap::test(&self.pages, g / PAGE_GRANULES)
    }

    /// The level region around granule `g`: its page node, or the whole node.
    #[inline]
    pub fn level_bounds(&self, g: usize) -> (usize, usize, bool) {
        if self.in_page_node(g) {
            let lo = g & !(PAGE_GRANULES - 1);
            (lo, lo + PAGE_GRANULES, true)
        } else {
            (0, HUGE_GRANULES, false)
        }
    }

    /// Length in granules of the chunk that starts at `s`.
    #[inline]
    pub fn chunk_granules(&self, s: usize) -> usize {
        let (_, hi, _) = self.level_bounds(s);
        crate::bitmap::next_set_either(&self.start, &self.free, s + 1, hi) - s
    }
}
