//! Deferred page frees: a burst of frees merged per page node, or not at all.
//!
//! Merging a freed chunk at once (seed 002's immediate coalescing) touches
//! its neighbours' boundary tags and two free lists, lines that a burst of
//! frees in random or interleaved order finds cold. mimalloc defers the same
//! work per page (`local_free`): a free is a push, and a page whose every
//! block is freed goes back whole. This module does that for page nodes.
//!
//! # What happens to a freed chunk of a page node
//!
//! When the shard's quick cache is full (see `quick_cache`), the chunk is
//! *pending*: it keeps its `start` bit, its granules stay used in the
//! bitmaps (so no neighbour merges into it and every length read off the
//! bitmaps stays exact), and it joins its page node's pending chain, linked
//! through its first word, with the shard's parked mark in its second (see
//! `mark`: a double free of it is confirmed on this chain). The shard's
//! counters already count it as free.
//!
//! When a free makes every used granule of its page node pending, the page
//! node goes back to its huge node whole: its free extents are unlinked,
//! its bitmaps are reset in one range store each, and it merges at the huge
//! level. None of its chunks is merged on its own.
//!
//! Otherwise pending chunks are merged for real, page by page, before the
//! shard carves a new page node or grows, before an allocation fails, and
//! on `Pool::collect` (the same points as the quick cache, plus the new page
//! node, so that pending memory is reused before fresh memory is touched).
//!
//! # Where the state lives
//!
//! - per page node, in the node metadata (`NodeMeta::pend`): the pending
//!   granules (bits 0..8) and the granule, plus one, of the first chunk of
//!   its chain (bits 8..16, 0 for none); the chain's links are granule
//!   indexes plus one, 0 ending it;
//! - the shard's pages with pending chunks form a doubly linked list through
//!   `NodeMeta::pend_link` (previous page id in the high half, next in the
//!   low half; a page id is `segment * 512 + page + 1`, 0 for none), whose
//!   head is [`Pending::first`].
//!
//! # Invariants (checked by `Pool::validate`)
//!
//! - a page node's record is non-zero exactly when it is on its shard's
//!   list, and its pending granules are the sum of its chain's chunks, each
//!   a used chunk start of this page node with the shard's mark;
//! - pending chunks are used in the bitmaps, so they never make a page node
//!   look wholly free. (A page node can end up with every used granule
//!   pending when a chunk of it leaves by another way. A quick-cache flush
//!   and a run of neighbours merged at once check for it and free the page
//!   node whole; after a shrink, it goes at the next flush.)
//! - `Pending::granules` is the sum over the shard's listed pages.

use crate::granule::{GRANULE, PAGES_PER_HUGE, PAGE_GRANULES};
use crate::mark;
use crate::segment::Segments;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One shard's pages with pending chunks.
#[derive(Debug)]
pub struct Pending {
    /// First listed page id (0: none).
    first: u32,
    /// Pending granules over every listed page.
    granules: usize,
}

/// Segments a pool may have: every page id (`seg * 512 + page + 1`) fits
/// in 32 bits. `Pool` caps its capacity to match (`MAX_CAPACITY`).
pub const MAX_SEGMENTS: usize = (u32::MAX as usize) / PAGES_PER_HUGE;

/// A page id: `seg * 512 + page + 1`.
#[inline]
fn page_id(seg: usize, page: usize) -> u32 {
    debug_assert!(seg < MAX_SEGMENTS);
    (seg * PAGES_PER_HUGE + page + 1) as u32
}

/// The segment and page of a page id (non-zero).
#[inline]
fn page_of(id: u32) -> (usize, usize) {
    let i = id as usize - 1;
    (i / PAGES_PER_HUGE, i % PAGES_PER_HUGE)
}

#[inline]
fn link_of(segs: &Segments, id: u32) -> &AtomicU64 {
    let (seg, page) = page_of(id);
    &segs.meta(seg).pend_link[page]
}

/// A page node's record: its pending granules and its chain's first link.
#[inline]
fn record(segs: &Segments, seg: usize, page: usize) -> (usize, usize) {
    let rec = usize::from(segs.meta(seg).pend[page].load(Relaxed));
    (rec & 0xff, rec >> 8)
}

/// Granules of page node `page` of `seg` that are free at the page level.
#[inline]
fn free_granules(segs: &Segments, seg: usize, page: usize) -> usize {
    let m = segs.meta(seg);
    let w = page * PAGE_GRANULES / 64;
    (m.free[w].load(Relaxed).count_ones() + m.free[w + 1].load(Relaxed).count_ones()) as usize
}

/// A page taken off the list by [`Pending::take_page`]: its chain, to merge.
pub struct TakenPage {
    pub seg: usize,
    /// First granule of the page node.
    pub lo: usize,
    /// The chain's first link (granule within the page plus one, 0: end).
    pub head: usize,
}

impl Pending {
    pub const fn new() -> Self {
        Pending { first: 0, granules: 0 }
    }

    /// Whether no chunk is pending.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.first == 0
    }

    /// Bytes pending.
    pub fn bytes(&self) -> usize {
        self.granules * GRANULE
    }

    fn push_page(&mut self, segs: &Segments, id: u32) {
        if self.first != 0 {
            let l = link_of(segs, self.first);
            l.store(l.load(Relaxed) & 0xffff_ffff | u64::from(id) << 32, Relaxed);
        }
        link_of(segs, id).store(u64::from(self.first), Relaxed);
        self.first = id;
    }

    fn remove_page(&mut self, segs: &Segments, id: u32) {
        let l = link_of(segs, id).load(Relaxed);
        let (prev, next) = ((l >> 32) as u32, l as u32);
        if prev == 0 {
            self.first = next;
        } else {
            let p = link_of(segs, prev);
            p.store(p.load(Relaxed) & !0xffff_ffff | u64::from(next), Relaxed);
        }
        if next != 0 {
            let n = link_of(segs, next);
            n.store(n.load(Relaxed) & 0xffff_ffff | u64::from(prev) << 32, Relaxed);
        }
        link_of(segs, id).store(0, Relaxed);
    }

    /// Takes page node `page` of `seg`, which holds `count` pending
    /// granules, off the list and clears its record.
    fn forget(&mut self, segs: &Segments, seg: usize, page: usize, count: usize) {
        self.remove_page(segs, page_id(seg, page));
        self.granules -= count;
        segs.meta(seg).pend[page].store(0, Relaxed);
    }

    /// Makes the chunk at granule `s` of `seg` (`g` granules, in a page
    /// node) pending, writing the link and `mark_word` into it. Returns
    /// false when that would leave every used granule of its page node
    /// pending: then the page's record is cleared, the chunk is not
    /// written, and the caller must free the whole page node
    /// (`Heap::release_page`).
    ///
    /// # Safety
    /// The caller holds the shard that owns `seg`; the chunk is a live chunk
    /// start of `g` granules in a page node, given up, in no cache.
    #[inline]
    pub unsafe fn park(&mut self, segs: &Segments, seg: usize, s: usize, g: usize, mark_word: u64) -> bool {
        let (page, lo) = (s / PAGE_GRANULES, s & !(PAGE_GRANULES - 1));
        let (count, head) = record(segs, seg, page);
        if count + g + free_granules(segs, seg, page) == PAGE_GRANULES {
            if count > 0 {
                self.forget(segs, seg, page, count);
            }
            return false;
        }
        let p = segs.addr(seg, s);
        // SAFETY: the chunk is ours and at least one granule (32 bytes) long.
        unsafe {
            p.cast::<usize>().write(head);
            mark::write(p, mark_word);
        }
        // count + g < PAGE_GRANULES = 128 and s - lo + 1 <= 128: both fit
        // in 8 bits.
        segs.meta(seg).pend[page].store(((count + g) | (s - lo + 1) << 8) as u16, Relaxed);
        if count == 0 {
            self.push_page(segs, page_id(seg, page));
        }
        self.granules += g;
        true
    }

    /// Whether every used granule of the page node holding granule `s` of
    /// `seg` is pending (after some of them were merged another way): then
    /// its record is cleared and the caller must free the page node whole
    /// (`Heap::release_page`). False for a page with nothing pending, and
    /// for a granule outside page nodes.
    ///
    /// # Safety
    /// The caller holds the shard that owns `seg`.
    #[inline]
    pub unsafe fn settle(&mut self, segs: &Segments, seg: usize, s: usize) -> bool {
        let page = s / PAGE_GRANULES;
        let (count, _) = record(segs, seg, page);
        if count == 0 || count + free_granules(segs, seg, page) != PAGE_GRANULES {
            return false;
        }
        self.forget(segs, seg, page, count);
        true
    }

    /// Takes the first listed page off the list, clearing its record, and
    /// returns its chain for the caller to merge.
    ///
    /// # Safety
    /// The caller holds the shard.
    pub unsafe fn take_page(&mut self, segs: &Segments) -> Option<TakenPage> {
        if self.first == 0 {
            return None;
        }
        let (seg, page) = page_of(self.first);
        let (count, head) = record(segs, seg, page);
        self.forget(segs, seg, page, count);
        Some(TakenPage { seg, lo: page * PAGE_GRANULES, head })
    }

    /// Reads one link of a chain: the chunk at `lo + link - 1` and the next
    /// link.
    ///
    /// # Safety
    /// `link` is a non-zero link of a chain of segment `seg`'s page at `lo`
    /// (or taken from one), and the caller holds the shard.
    #[inline]
    pub unsafe fn follow(segs: &Segments, seg: usize, lo: usize, link: usize) -> (usize, usize) {
        let s = lo + link - 1;
        // SAFETY: pending chunks hold the next link in their first word.
        (s, unsafe { segs.addr(seg, s).cast::<usize>().read() })
    }

    /// Whether the chunk at `ptr` (granule `s` of `seg`) is pending here
    /// (double-free confirmation; cold).
    ///
    /// # Safety
    /// The caller holds the shard that owns `seg`.
    pub unsafe fn contains(&self, segs: &Segments, seg: usize, s: usize) -> bool {
        let (page, lo) = (s / PAGE_GRANULES, s & !(PAGE_GRANULES - 1));
        let (_, mut link) = record(segs, seg, page);
        // A chain holds at most 127 chunks; the bound guards a corrupt one.
        for _ in 0..PAGE_GRANULES {
            if link == 0 || link > PAGE_GRANULES {
                return false;
            }
            // SAFETY: a link of this page's chain, under the shard.
            let (c, next) = unsafe { Self::follow(segs, seg, lo, link) };
            if c == s {
                return true;
            }
            link = next;
        }
        false
    }

    /// Walks every listed page and its chain, calling `f(seg, granule,
    /// granules)` for each pending chunk, and checks the invariants above
    /// (except the records of unlisted pages, which the caller checks
    /// against the returned set of listed page ids). `mark_word` is the
    /// shard's parked mark.
    ///
    /// # Safety
    /// The caller holds the shard.
    pub unsafe fn check(
        &self,
        segs: &Segments,
        mark_word: u64,
        mut f: impl FnMut(usize, usize, usize),
    ) -> Result<HashSet<u32>, String> {
        let mut listed = HashSet::new();
        let (mut id, mut prev, mut total) = (self.first, 0u32, 0usize);
        while id != 0 {
            let (seg, page) = page_of(id);
            if seg >= segs.count() || !listed.insert(id) {
                return Err(format!("pending list: page id {id} out of range or listed twice"));
            }
            let m = segs.meta(seg);
            let l = m.pend_link[page].load(Relaxed);
            if (l >> 32) as u32 != prev {
                return Err(format!("pending list: segment {seg} page {page} links back to {} not {prev}", l >> 32));
            }
            let lo = page * PAGE_GRANULES;
            if !m.in_page_node(lo) {
                return Err(format!("pending list: segment {seg} page {page} is not a page node"));
            }
            let (count, mut link) = record(segs, seg, page);
            let mut sum = 0;
            for _ in 0..PAGE_GRANULES {
                if link == 0 {
                    break;
                }
                if link > PAGE_GRANULES {
                    return Err(format!("segment {seg} page {page}: pending link {link} out of the page"));
                }
                // SAFETY: a link of this page's chain, under the shard.
                let (s, next) = unsafe { Self::follow(segs, seg, lo, link) };
                if !crate::bitmap::test(&m.start, s) {
                    return Err(format!("segment {seg} granule {s}: pending but not a chunk start"));
                }
                // SAFETY: a chunk start of a mapped segment: 32 bytes of ours.
                if unsafe { mark::read(segs.addr(seg, s)) } != mark_word {
                    return Err(format!("segment {seg} granule {s}: pending without its shard's mark"));
                }
                let g = m.chunk_granules(s);
                sum += g;
                f(seg, s, g);
                link = next;
            }
            if link != 0 || sum != count || count == 0 {
                return Err(format!(
                    "segment {seg} page {page}: {count} pending granules recorded, chain holds {sum} (unterminated: {})",
                    link != 0
                ));
            }
            if count + free_granules(segs, seg, page) > PAGE_GRANULES {
                return Err(format!("segment {seg} page {page}: more granules pending than used"));
            }
            total += count;
            prev = id;
            id = l as u32;
        }
        if total != self.granules {
            return Err(format!("pending granules {} but the pages hold {total}", self.granules));
        }
        Ok(listed)
    }
}

/// A page id for validation: is `page` of `seg` listed in `set`?
pub fn is_listed(set: &HashSet<u32>, seg: usize, page: usize) -> bool {
    set.contains(&page_id(seg, page))
}

#[cfg(test)]
mod tests {
    use crate::{HugePages, Pool};
    use std::ptr::NonNull;

    /// One shard, 4 KiB pages, and `n` chunks of 32 bytes (one granule):
    /// `n / 128` page nodes, filled in address order.
    fn filled(n: usize) -> (Pool, Vec<NonNull<u8>>) {
        let pool = Pool::builder().capacity(64 << 20).shards(1).hugepages(HugePages::Off).build().unwrap();
        let chunks: Vec<_> = (0..n).map(|_| pool.alloc(32).unwrap()).collect();
        (pool, chunks)
    }

    /// The chunks pending in the pool's only shard.
    fn pending_chunks(pool: &Pool) -> Vec<*mut u8> {
        let inner = pool.inner();
        let segs = inner.segments();
        let mark_word = inner.key().mark(crate::mark::Parked::Quick(0));
        let mut g = inner.shards()[0].lock();
        let mut out = Vec::new();
        // SAFETY: we hold the shard.
        unsafe { g.heap().pending().check(segs, mark_word, |seg, s, _| out.push(segs.addr(seg, s))) }.unwrap();
        out
    }

    #[test]
    fn a_burst_freed_alternately_gives_its_page_nodes_back_whole() {
        let (pool, chunks) = filled(128 * 128);
        let st = pool.stats();
        assert_eq!(st.page_nodes, 128);
        for p in chunks.iter().step_by(2) {
            // SAFETY: each chunk is live and freed once.
            unsafe { pool.free_sized(*p, 32) };
        }
        let st = pool.stats();
        // Past the thread cache (64) and the quick cache (32), the evens
        // wait on their page nodes: nothing merged, no page node went back.
        assert!(st.pending_bytes >= (8192 - 96) * 32, "{st:?}");
        assert_eq!(st.page_nodes, 128);
        pool.validate().unwrap();
        for p in chunks.iter().skip(1).step_by(2) {
            // SAFETY: as above.
            unsafe { pool.free_sized(*p, 32) };
        }
        let st = pool.stats();
        // Every page node whose chunks all reached the shard went back
        // whole; only those holding a chunk the caches kept are left.
        assert!(st.page_nodes <= 96, "{st:?}");
        assert!(st.pending_bytes <= 96 * 64 * 32, "{st:?}");
        pool.validate().unwrap();
        pool.collect();
        let st = pool.stats();
        assert_eq!((st.page_nodes, st.pending_bytes, st.in_use_bytes), (0, 0, 0), "{st:?}");
        pool.validate().unwrap();
    }

    #[test]
    fn pending_memory_is_reused_before_a_new_page_node() {
        let (pool, chunks) = filled(128 * 128);
        for p in chunks.iter().step_by(2) {
            // SAFETY: each chunk is live and freed once.
            unsafe { pool.free_sized(*p, 32) };
        }
        let before = pool.stats();
        assert!(before.pending_bytes > 0);
        // Twice the size: no page-level extent fits, so the first miss
        // merges the pending chunks before it carves a page node.
        let again: Vec<_> = (0..2000).map(|_| pool.alloc(64).unwrap()).collect();
        let st = pool.stats();
        assert_eq!(st.mapped_bytes, before.mapped_bytes);
        assert!(st.pending_bytes < before.pending_bytes, "{st:?}");
        pool.validate().unwrap();
        for p in again {
            // SAFETY: as above.
            unsafe { pool.free_sized(p, 64) };
        }
        for p in chunks.iter().skip(1).step_by(2) {
            // SAFETY: as above.
            unsafe { pool.free_sized(*p, 32) };
        }
        pool.validate().unwrap();
        pool.collect();
        assert_eq!(pool.stats().in_use_bytes, 0);
        pool.validate().unwrap();
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn a_pending_chunk_freed_again_is_a_double_free() {
        let (pool, chunks) = filled(4096);
        for p in chunks.iter().step_by(2) {
            // SAFETY: each chunk is live and freed once.
            unsafe { pool.free_sized(*p, 32) };
        }
        let pending = pending_chunks(&pool);
        assert!(pending.len() > 1000);
        // SAFETY: none: this is the double free under test. The chunk is
        // pending, so its memory is still the pool's and mapped.
        unsafe { pool.free(NonNull::new(pending[0]).unwrap()) };
    }
}
