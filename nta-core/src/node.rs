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
//! # Reading a chunk's length without the owner's lock
//!
//! Only the shard that owns a node writes its bitmaps, under its lock. An
//! unsized free on another thread reads a live chunk's length without that
//! lock ([`NodeMeta::chunk_granules_unlocked`]). The chunk's own granules
//! do not change while it is live, but the granule after it may go from a
//! chunk start to free and back (its chunk freed, a new one carved there),
//! each change being two stores a reader can see half of. So the owner
//! brackets every change of `start` or `free` bits at a chunk's edge with
//! `bits_seq` (a sequence lock: odd while a change is under way), and the
//! reader retries until it read the bits between two equal, even values.
//!
//! # Invariants (checked by `Pool::validate`)
//!
//! - `free[g] => !start[g]`.
//! - Every maximal run of free granules within one level region is exactly
//!   one free extent: no two adjacent free extents (immediate coalescing).
//! - No page node is wholly free (it would have gone back to its huge node).
//! - `bits_seq` is even while no one holds the owner shard's lock (every
//!   change of the bits is closed before the lock is released).

use crate::granule::{HUGE_GRANULES, PAGES_PER_HUGE, PAGE_GRANULES};
use std::sync::atomic::{
    fence, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

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
    /// The sequence lock over `start` and `free` (see the module notes).
    pub bits_seq: AtomicU32,
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
    /// While parked: 1 once its pages were given back, or found not to be
    /// givable (see `purge`); 0 from the moment it is parked.
    pub purged: AtomicU8,
    /// Per page node: its deferred frees (see `pending`): pending granules
    /// in bits 0..8, the first chunk of its chain plus one in bits 8..16.
    pub pend: [AtomicU16; PAGES_PER_HUGE],
    /// Per page node on its shard's pending list: previous page id in the
    /// high half, next in the low half (see `pending`).
    pub pend_link: [AtomicU64; PAGES_PER_HUGE],
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

    /// [`NodeMeta::chunk_granules`] for a free path under the owner's lock,
    /// between two changes of the bits: the chunk ends where the next
    /// `start` or `free` bit is. Read inline from the word `s` lies in and
    /// the next one (every chunk up to 64 granules ends within them), with
    /// no level bounds: the granule after a page node's last one is a
    /// boundary too (a chunk start, or free at its own level), so the bit
    /// found is never past the level's end. (P4's sized frees of 16 B in
    /// order: about 5% less time than with the level lookup and the
    /// out-of-line scan, median of twelve interleaved pairs, 2026-12-07.)
    #[inline]
    pub fn chunk_granules_settled(&self, s: usize) -> usize {
        let w = s >> 6;
        let mut word = (self.start[w].load(Relaxed) | self.free[w].load(Relaxed)) & (!1u64 << (s & 63));
        let mut base = w << 6;
        if word == 0 && w + 1 < self.start.len() {
            base += 64;
            word = self.start[w + 1].load(Relaxed) | self.free[w + 1].load(Relaxed);
        }
        if word == 0 {
            return self.chunk_granules(s);
        }
        let n = base + word.trailing_zeros() as usize - s;
        debug_assert_eq!(n, self.chunk_granules(s), "a chunk at {s} runs past its level");
        n
    }

    /// Opens a change of `start` or `free` bits: owner only, under its
    /// shard. Returns the token for [`NodeMeta::end_bits`].
    #[inline]
    pub fn begin_bits(&self) -> u32 {
        let odd = self.bits_seq.load(Relaxed).wrapping_add(1);
        self.bits_seq.store(odd, Relaxed);
        // The odd value is visible before any bit store that follows.
        fence(Release);
        odd
    }

    /// Closes the change opened by [`NodeMeta::begin_bits`].
    #[inline]
    pub fn end_bits(&self, odd: u32) {
        self.bits_seq.store(odd.wrapping_add(1), Release);
    }

    /// Runs `change` (stores to `start` or `free`) as one change under the
    /// sequence lock: owner only, under its shard.
    #[inline]
    pub fn change_bits(&self, change: impl FnOnce()) {
        let open = self.begin_bits();
        change();
        self.end_bits(open);
    }

    /// Length in granules of the live chunk that starts at `s`, read without
    /// the owner's lock (see the module notes); `None` if `s` does not start
    /// a chunk, if the chunk is longer than `limit`, or if the owner kept
    /// changing the node's bits meanwhile (the caller then takes the locked
    /// way).
    ///
    /// A chunk that starts at `s` must stay live during the call.
    #[inline]
    pub fn chunk_granules_unlocked(&self, s: usize, limit: usize) -> Option<usize> {
        // The common case inline: the chunk ends in the word it starts in
        // or the next one (every chunk a thread cache takes, 64 granules at
        // most), and the owner is not changing the bits. (The next word
        // inline: P1's unsized/sized time 1.26 -> 1.24, medians of ten
        // paired runs, 2026-12-07.)
        let before = self.bits_seq.load(Acquire);
        let w = s >> 6;
        let start = self.start[w].load(Relaxed);
        if start >> (s & 63) & 1 == 0 {
            // The chunk's own start bit does not change while it is live.
            return None;
        }
        let mut word = (start | self.free[w].load(Relaxed)) & (!1u64 << (s & 63));
        let mut base = w << 6;
        if word == 0 && w + 1 < self.start.len() {
            base += 64;
            word = self.start[w + 1].load(Relaxed) | self.free[w + 1].load(Relaxed);
        }
        if word != 0 && before & 1 == 0 {
            let n = base + word.trailing_zeros() as usize - s;
            // The bit loads above happen before the second read.
            fence(Acquire);
            if self.bits_seq.load(Relaxed) == before {
                return (n <= limit).then_some(n);
            }
        }
        self.chunk_granules_unlocked_slow(s, limit)
    }

    /// [`NodeMeta::chunk_granules_unlocked`] for a chunk that runs past the
    /// bitmap word after its first, or while the owner changes the bits: up
    /// to four tries.
    #[cold]
    #[inline(never)]
    fn chunk_granules_unlocked_slow(&self, s: usize, limit: usize) -> Option<usize> {
        // No level bounds needed (one cache line fewer): the granule after a
        // page node's last granule is a boundary too, a chunk start or free
        // at its own level, as is the one after any chunk.
        let stop = HUGE_GRANULES.min(s + limit + 1);
        for _ in 0..4 {
            let before = self.bits_seq.load(Acquire);
            if before & 1 == 0 {
                let end = crate::bitmap::next_set_either(&self.start, &self.free, s + 1, stop);
                fence(Acquire);
                if self.bits_seq.load(Relaxed) == before {
                    return (end - s <= limit).then_some(end - s);
                }
            }
            std::hint::spin_loop();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmap;
    use std::sync::atomic::AtomicBool;

    /// The owner frees and re-carves the chunk after a live one, over and
    /// over, in the heap's order (start bit cleared before the free bits
    /// are set: a reader without the sequence lock can see neither); a
    /// reader on another thread must only ever get the live chunk's exact
    /// length, or `None`.
    #[test]
    fn an_unlocked_length_is_exact_while_the_neighbour_changes() {
        // Within one bitmap word (the inline path), across a word boundary
        // and over more than two words (the out-of-line scan).
        neighbour_changes(130, 5);
        neighbour_changes(60, 10);
        neighbour_changes(1, 130);
    }

    fn neighbour_changes(s: usize, g: usize) {
        // SAFETY: all-zero metadata is valid (atomics), as for a fresh map.
        let m: Box<NodeMeta> = unsafe { Box::new_zeroed().assume_init() };
        let d = 7; // live chunk s..s+g; its neighbour d granules
        let e = s + g;
        bitmap::assign(&m.start, s, true);
        bitmap::assign(&m.start, e, true);
        bitmap::set_range(&m.free, e + d, HUGE_GRANULES);
        let stop = AtomicBool::new(false);
        // The reader's attempts so far: the writer keeps changing until the
        // reader has made some, even if it was not scheduled at first (a
        // loaded machine), so that its reads overlap the changes.
        let attempts = AtomicU64::new(0);
        let (exact, busy) = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let (mut exact, mut busy) = (0u64, 0u64);
                while !stop.load(Relaxed) {
                    attempts.fetch_add(1, Relaxed);
                    match m.chunk_granules_unlocked(s, 256) {
                        Some(n) => {
                            assert_eq!(n, g, "a live chunk's length read while its neighbour changed");
                            exact += 1;
                        }
                        None => busy += 1,
                    }
                }
                (exact, busy)
            });
            let mut i = 0u64;
            while i < 2_000_000 || attempts.load(Relaxed) < 10_000 {
                i += 1;
                if i % 4096 == 0 {
                    // Between changes: a reader that shares this CPU runs
                    // now and then while the bits are stable.
                    std::thread::yield_now();
                }
                m.change_bits(|| {
                    bitmap::assign(&m.start, e, false);
                    bitmap::set_range(&m.free, e, e + d);
                });
                m.change_bits(|| {
                    bitmap::clear_range(&m.free, e, e + d);
                    bitmap::assign(&m.start, e, true);
                });
            }
            stop.store(true, Relaxed);
            reader.join().unwrap()
        });
        assert!(exact > 0, "the reader got through ({busy} busy)");
        assert_eq!(m.chunk_granules_unlocked(s, g - 1), None, "longer than the limit");
        assert_eq!(m.chunk_granules_unlocked(s, g), Some(g));
    }
}
