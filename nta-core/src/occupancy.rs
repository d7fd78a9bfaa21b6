//! A read-only view of node occupancy, for exporters and fragmentation maps.
//!
//! A snapshot copies each mapped node's bitmaps with relaxed loads, without
//! taking any shard: it may be a few operations stale, like a photograph of
//! a busy street, but never tears a word.

use crate::granule::{GRANULE, HUGE_GRANULES, PAGE_GRANULES};
use crate::pool::Pool;
use crate::segment::{Backing, SegmentState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What one granule holds in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GranuleState {
    /// Part of a free extent.
    Free,
    /// First granule of an allocated chunk.
    Start,
    /// Inside an allocated chunk.
    Used,
}

/// Occupancy of one huge node (segment) and its page nodes.
#[derive(Clone, Debug)]
pub struct NodeOccupancy {
    /// Segment slot (its offset in the pool is `segment * 2 MiB`).
    pub segment: usize,
    /// Owning shard, or `None` for a parked free segment.
    pub owner: Option<usize>,
    /// Memory backing the segment.
    pub backing: Option<Backing>,
    /// One bit per granule: free.
    pub free: Vec<u64>,
    /// One bit per granule: a chunk starts here.
    pub start: Vec<u64>,
    /// One bit per 4 KiB page: the page is a page node.
    pub pages: Vec<u64>,
}

fn copy(words: &[AtomicU64]) -> Vec<u64> {
    words.iter().map(|w| w.load(Relaxed)).collect()
}

fn bit(words: &[u64], i: usize) -> bool {
    words[i / 64] >> (i % 64) & 1 == 1
}

impl NodeOccupancy {
    /// State of granule `i` (0..65536).
    pub fn granule(&self, i: usize) -> GranuleState {
        if bit(&self.free, i) {
            GranuleState::Free
        } else if bit(&self.start, i) {
            GranuleState::Start
        } else {
            GranuleState::Used
        }
    }

    /// Whether 4 KiB page `p` (0..512) is a page node.
    pub fn is_page_node(&self, p: usize) -> bool {
        bit(&self.pages, p)
    }

    /// Bytes in allocated chunks.
    pub fn used_bytes(&self) -> usize {
        (HUGE_GRANULES - self.free.iter().map(|w| w.count_ones() as usize).sum::<usize>()) * GRANULE
    }

    /// Granules per page node, for drawing page boundaries.
    pub const PAGE_GRANULES: usize = PAGE_GRANULES;
}

impl Pool {
    /// Snapshots the occupancy of every mapped node.
    pub fn occupancy(&self) -> Vec<NodeOccupancy> {
        let segs = self.inner().segments();
        self.inner()
            .mapped_segments()
            .map(|seg| {
                let m = segs.meta(seg);
                // `release` clears the owner before the state changes, so an
                // Owned state may come with no owner: treat it as unowned.
                let owner = match segs.state(seg) {
                    SegmentState::Owned => (m.owner.load(Relaxed) as usize).checked_sub(1),
                    _ => None,
                };
                let (free, start) = if segs.state(seg) == SegmentState::Run {
                    // A run segment is one buffer (its bitmaps stay all-free):
                    // all used, a chunk start at the head.
                    let mut start = vec![0u64; HUGE_GRANULES / 64];
                    start[0] = u64::from(segs.run(seg).is_some());
                    (vec![0u64; HUGE_GRANULES / 64], start)
                } else {
                    (copy(&m.free), copy(&m.start))
                };
                NodeOccupancy { segment: seg, owner, backing: segs.backing(seg), free, start, pages: copy(&m.pages) }
            })
            .collect()
    }
}
