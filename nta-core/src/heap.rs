//! The extent allocator of one shard: carving, freeing and merging chunks
//! inside the nodes the shard owns.
//!
//! This is the pure layer (rlsf's "core over a pool the caller supplies"): it
//! makes no system call. It gets whole huge nodes from [`Segments::acquire`]
//! and hands wholly free ones back to its caller, and otherwise only reads
//! and writes node metadata and the free memory's boundary tags.
//!
//! # Allocation (seed 002, "Network tree allocator", Jul 28 2006)
//!
//! A request of `g` granules up to [`SMALL_MAX_GRANULES`] takes the first
//! non-empty exact list at or above `g` (best fit). Larger requests search
//! the TLSF lists. The extent found is split: the chunk takes its head
//! (after any alignment padding), and the padding and the tail become free
//! extents on their own lists. When the exact lists are empty a new page
//! node is carved from a huge node; when the huge nodes are full a segment
//! is acquired. Only when no segment is left does a small request take
//! space at the huge level directly, so exhaustion happens as late as it can.
//!
//! # Free (seed 002, Aug 2 2006)
//!
//! The chunk's size comes from the start/free bitmaps (or the caller's
//! `free_sized` length). Its granules are marked free, and it merges at once
//! with a free left neighbour (found through that neighbour's footer) and a
//! free right neighbour (through its header); both are unlinked in O(1)
//! because the lists are doubly linked. A page node that becomes wholly free
//! goes back to its huge node and merges there. A huge node that becomes
//! wholly free is kept (up to [`KEEP_WHOLE_NODES`] per shard; its pages
//! go after the purge delay, see `purge`) or handed back.
//!
//! # Deferred coalescing
//!
//! Frees of chunks up to 2 KiB first go to the shard's bounded quick cache
//! (see `quick_cache`) and are served again to allocations of the same
//! size; the cache is flushed — merged for real — before the pool grows,
//! before an allocation fails, and on `Pool::collect`. When it is full, a
//! freed chunk of a page node is pending on its page node instead (see
//! `pending`): a page node whose every used granule is pending goes back
//! whole, and the rest are merged before a new page node is carved, and
//! where the quick cache is flushed.
//!
//! Invariant: `whole_free` equals the number of extents of exactly
//! `HUGE_GRANULES` on the TLSF lists.

use crate::bitmap;
use crate::extent::{footer_before, header_size, write_tags, FreeHdr};
use crate::free_list::FreeLists;
use crate::granule::*;
use crate::pending::Pending;
use crate::purge::Purge;
use crate::quick_cache::QuickCache;
use crate::segment::Segments;
use crate::size_class::{exact_index, tlsf_insert_index, tlsf_search_index, EXACT_LISTS, TLSF_LISTS};
use crate::stats::{bump, Counters};
use std::ptr::NonNull;

/// Wholly free huge nodes a shard keeps before handing them back.
pub const KEEP_WHOLE_NODES: usize = 1;

/// Longest list walk the slow path does looking for a fit that TLSF's
/// round-up skipped.
const WALK_LIMIT: usize = 64;

/// Free lists and bookkeeping of one shard.
#[derive(Debug)]
pub struct Heap {
    small: FreeLists<{ EXACT_LISTS / 64 }>,
    large: FreeLists<{ TLSF_LISTS / 64 }>,
    whole_free: usize,
    quick: QuickCache,
    /// Freed chunks of page nodes waiting on their page node (see `pending`).
    pending: Pending,
    /// When the wholly free node on the lists gives its pages back (see
    /// `purge`).
    purge: Purge,
    /// Checked mode: extent headers carry checksums (see `extent`).
    checked: bool,
}

/// Extra granules to search for so that an `align`ed start fits.
#[inline]
fn align_extra(align: usize) -> usize {
    if align <= GRANULE {
        0
    } else {
        align / GRANULE - 1
    }
}

/// Where a chunk or extent lies: segment and granule within its node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    pub seg: usize,
    pub granule: usize,
}

impl Loc {
    /// Locates `addr`, which must lie in a segment slot of `segs`.
    #[inline]
    pub fn of(segs: &Segments, addr: usize) -> Option<Loc> {
        let seg = segs.segment_of(addr)?;
        let off = addr - segs.base().as_ptr() as usize - (seg << HUGE_NODE_SHIFT);
        Some(Loc { seg, granule: off >> GRANULE_SHIFT })
    }
}

impl Heap {
    /// An empty heap; `checked` turns on extent checksums.
    pub const fn new(checked: bool) -> Self {
        Heap {
            small: FreeLists::new(checked),
            large: FreeLists::new(checked),
            whole_free: 0,
            quick: QuickCache::new(),
            pending: Pending::new(),
            purge: Purge::new(),
            checked,
        }
    }

    /// The quick cache of freed small chunks (see `quick_cache`).
    pub fn quick(&self) -> &QuickCache {
        &self.quick
    }

    /// The page nodes' pending frees (see `pending`).
    pub fn pending(&self) -> &Pending {
        &self.pending
    }

    /// Wholly free huge nodes on the lists.
    pub fn whole_free(&self) -> usize {
        self.whole_free
    }

    /// Makes `seg:s..s+n` a free extent on the list of its level.
    ///
    /// # Safety
    /// The range must be free at that level, owned by this heap, on no list,
    /// and its neighbours at that level must not be free.
    #[inline]
    unsafe fn insert(&mut self, segs: &Segments, seg: usize, s: usize, n: usize, page: bool) {
        // SAFETY: the caller owns the free range.
        let hdr = unsafe { write_tags(segs.addr(seg, s), n) };
        if page {
            // SAFETY: `hdr` heads a free extent on no list.
            unsafe { self.small.push(exact_index(n), hdr) };
        } else {
            // SAFETY: as above.
            unsafe { self.large.push(tlsf_insert_index(n), hdr) };
            self.whole_free += usize::from(n == HUGE_GRANULES);
        }
    }

    /// Takes the extent `hdr` of `n` granules off its list.
    ///
    /// # Safety
    /// `hdr` must be on the list of its size at that level.
    #[inline]
    unsafe fn unlink(&mut self, hdr: *mut FreeHdr, n: usize, page: bool) {
        if self.checked {
            // SAFETY: `hdr` points into mapped pool memory (per the caller);
            // verify before its size picks the list.
            unsafe { crate::free_list::verify(hdr) };
        }
        if page {
            // SAFETY: per the caller.
            unsafe { self.small.remove(exact_index(n), hdr) };
        } else {
            // SAFETY: per the caller.
            unsafe { self.large.remove(tlsf_insert_index(n), hdr) };
            self.whole_free -= usize::from(n == HUGE_GRANULES);
        }
    }

    /// The fast path: a fit from the free lists, or `None` (then the caller
    /// goes to [`Heap::alloc_slow`]).
    ///
    /// # Safety
    /// The caller holds the shard that owns this heap; `align` is a power of
    /// two no larger than [`MAX_ALIGN`]; `len <= MAX_ALLOC_BYTES`.
    #[inline]
    pub unsafe fn alloc_fast(
        &mut self,
        segs: &Segments,
        c: &Counters,
        len: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        let g = granules_for(len);
        if align <= GRANULE {
            if let Some(p) = self.quick.pop(g) {
                bump(&c.in_use_granules, g as i64);
                bump(&c.allocs, 1);
                // SAFETY: inside a mapped segment, hence not null.
                return Some(unsafe { NonNull::new_unchecked(p) });
            }
        }
        let need = g + align_extra(align);
        if g <= SMALL_MAX_GRANULES && need <= PAGE_GRANULES {
            let idx = self.small.find_ge(exact_index(need))?;
            let hdr = self.small.head(idx);
            // SAFETY: `hdr` heads list `idx`, an extent of `idx + 1 >= need` granules.
            return Some(unsafe { self.carve(segs, c, hdr, idx + 1, g, align, true) });
        }
        let idx = self.large.find_ge(tlsf_search_index(need)?)?;
        let hdr = self.large.head(idx);
        // SAFETY: `hdr` heads a TLSF list whose every extent holds `need` granules.
        Some(unsafe { self.carve(segs, c, hdr, header_size(hdr.cast()), g, align, false) })
    }

    /// Everything the fast path does not: new page nodes, flushing the
    /// quick cache, new segments, and fits that TLSF's round-up skipped.
    /// Cold: runs once per page node or segment, or when memory is nearly
    /// exhausted.
    ///
    /// # Safety
    /// As for [`Heap::alloc_fast`].
    #[cold]
    #[inline(never)]
    pub unsafe fn alloc_slow(
        &mut self,
        segs: &Segments,
        shard: usize,
        c: &Counters,
        len: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        let g = granules_for(len);
        let small = g <= SMALL_MAX_GRANULES && g + align_extra(align) <= PAGE_GRANULES;
        loop {
            // SAFETY: forwarded from the caller, who holds the shard.
            unsafe {
                if let Some(p) = self.alloc_fast(segs, c, len, align) {
                    return Some(p);
                }
                if small {
                    // Pending memory is reused before a new page node.
                    if !self.pending.is_empty() {
                        self.flush_pending(segs, c);
                        continue;
                    }
                    if self.new_page_node(segs, c) {
                        continue;
                    }
                } else if let Some(p) = self.alloc_large(segs, c, g, align) {
                    return Some(p);
                }
                // Before the pool grows, merge what the caches hold.
                if !self.quick.is_empty() || !self.pending.is_empty() {
                    self.flush_deferred(segs, c);
                    continue;
                }
                if self.grow(segs, shard) {
                    continue;
                }
                // No segment left: a small request takes space at the huge
                // level directly, so the pool fills up completely.
                return if small { self.alloc_large(segs, c, g, align) } else { None };
            }
        }
    }

    /// Fills `out` with chunks of exactly `g` granules from what this heap
    /// already has (quick cache first, then runs carved from one free extent
    /// at a time, never growing the pool). Each chunk is accounted as
    /// allocated with its full length `g * 32`. Returns how many it stored.
    /// This is the thread caches' batch refill: carving a run of `k` chunks
    /// touches the lists and tags once instead of `k` times.
    ///
    /// # Safety
    /// The caller holds the shard; `1 <= g <= SMALL_MAX_GRANULES * 2`.
    pub unsafe fn alloc_run(&mut self, segs: &Segments, c: &Counters, g: usize, out: &mut [*mut u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some(p) = self.quick.pop(g) else { break };
            out[n] = p;
            n += 1;
        }
        if n > 0 {
            bump(&c.in_use_granules, (n * g) as i64);
            bump(&c.allocs, n as i64);
        }
        let small = g <= SMALL_MAX_GRANULES;
        while n < out.len() {
            let (hdr, e) = if small {
                let Some(idx) = self.small.find_ge(exact_index(g)) else { break };
                (self.small.head(idx), idx + 1)
            } else {
                let Some(idx) = tlsf_search_index(g).and_then(|i| self.large.find_ge(i)) else { break };
                let hdr = self.large.head(idx);
                // SAFETY: `hdr` heads a non-empty list.
                (hdr, unsafe { header_size(hdr.cast()) })
            };
            let k = (e / g).min(out.len() - n);
            // SAFETY: `hdr` is a listed extent of `e >= k * g` granules.
            let first = unsafe { self.carve(segs, c, hdr, e, k * g, GRANULE, small) };
            let Loc { seg, granule: s } = Loc::of(segs, first.as_ptr() as usize).expect("carved in a segment");
            let m = segs.meta(seg);
            m.change_bits(|| {
                for i in 0..k {
                    bitmap::assign(&m.start, s + i * g, true);
                    out[n + i] = segs.addr(seg, s + i * g);
                }
            });
            bump(&c.allocs, k as i64 - 1);
            n += k;
        }
        n
    }

    /// Merges every chunk in the quick cache into the free lists. Wholly
    /// free nodes that result go back to the segment table.
    ///
    /// # Safety
    /// The caller holds the shard.
    pub unsafe fn flush_quick(&mut self, segs: &Segments, c: &Counters) {
        while let Some((p, g)) = self.quick.pop_any() {
            // SAFETY: cached chunks are live-marked chunks of this heap.
            unsafe {
                let loc = Loc::of(segs, p as usize).unwrap_unchecked();
                if self.merge_chunk(segs, c, loc.seg, loc.granule, g) || self.settle_page(segs, c, loc.seg, loc.granule)
                {
                    segs.release(loc.seg, true);
                }
            }
        }
    }

    /// Merges every pending chunk (see `pending`), page by page. Wholly free
    /// nodes that result go back to the segment table.
    ///
    /// # Safety
    /// The caller holds the shard.
    pub unsafe fn flush_pending(&mut self, segs: &Segments, c: &Counters) {
        // SAFETY: we hold the shard (caller contract).
        while let Some(t) = unsafe { self.pending.take_page(segs) } {
            let m = segs.meta(t.seg);
            let mut link = t.head;
            // A chain holds at most 127 chunks; a link out of its page, to a
            // granule that starts no chunk, or a longer chain is a write
            // after free into a pending chunk.
            let mut left = PAGE_GRANULES;
            while link != 0 {
                if link > PAGE_GRANULES || left == 0 || !bitmap::test(&m.start, t.lo + link - 1) {
                    crate::checked::corruption(segs.addr(t.seg, t.lo), "a pending chain's link is out of range");
                }
                left -= 1;
                // SAFETY: `link` comes from the chain of the page just
                // taken. Each chunk on it is a live-marked chunk start of
                // this heap; merging one changes no other's bits (they are
                // disjoint, and each one's end stays a chunk start or free).
                unsafe {
                    let (s, next) = Pending::follow(segs, t.seg, t.lo, link);
                    link = next;
                    let p = segs.addr(t.seg, s);
                    crate::mark::clear(p);
                    if self.merge_chunk(segs, c, t.seg, s, m.chunk_granules(s)) {
                        segs.release(t.seg, true);
                    }
                }
            }
        }
    }

    /// Merges everything deferred: the quick cache and the pending chunks.
    ///
    /// # Safety
    /// The caller holds the shard.
    pub unsafe fn flush_deferred(&mut self, segs: &Segments, c: &Counters) {
        // SAFETY: forwarded.
        unsafe {
            self.flush_quick(segs, c);
            self.flush_pending(segs, c);
        }
    }

    /// Finds a huge-level extent that can hold `g` granules at `align`.
    fn find_large(&self, g: usize, align: usize) -> Option<(*mut FreeHdr, usize)> {
        let need = g + align_extra(align);
        if let Some(idx) = tlsf_search_index(need).and_then(|i| self.large.find_ge(i)) {
            let hdr = self.large.head(idx);
            // SAFETY: `hdr` heads a non-empty list, so it is a free extent.
            return Some((hdr, unsafe { header_size(hdr.cast()) }));
        }
        // TLSF rounds the request up to a class boundary; extents in the
        // classes it skipped may still fit. Walk a bounded number of them.
        let first = tlsf_insert_index(g.min(HUGE_GRANULES));
        let last = tlsf_search_index(need).unwrap_or(TLSF_LISTS);
        let mut walked = 0;
        for idx in first..last.min(TLSF_LISTS) {
            let mut hdr = self.large.head(idx);
            while !hdr.is_null() && walked < WALK_LIMIT {
                // SAFETY: list members are free extents owned by this heap.
                let e = unsafe { header_size(hdr.cast()) };
                let front = (hdr as usize).next_multiple_of(align.max(GRANULE)) - hdr as usize;
                if front / GRANULE + g <= e {
                    return Some((hdr, e));
                }
                walked += 1;
                // SAFETY: as above.
                hdr = unsafe { (*hdr).next };
            }
        }
        None
    }

    /// Allocates at the huge level from the nodes this heap has.
    ///
    /// # Safety
    /// As for [`Heap::alloc_fast`].
    unsafe fn alloc_large(&mut self, segs: &Segments, c: &Counters, g: usize, align: usize) -> Option<NonNull<u8>> {
        let (hdr, e) = self.find_large(g, align)?;
        // SAFETY: `hdr` is a free extent of `e` granules that holds the request.
        Some(unsafe { self.carve(segs, c, hdr, e, g, align, false) })
    }

    /// Adds a fresh huge node from the segment table.
    fn grow(&mut self, segs: &Segments, shard: usize) -> bool {
        let Some(seg) = segs.acquire(shard) else { return false };
        // SAFETY: the acquired segment is wholly free, owned by this shard,
        // and on no list.
        unsafe { self.insert(segs, seg, 0, HUGE_GRANULES, false) };
        true
    }

    /// Carves a 4 KiB aligned page node out of a huge node this heap has and
    /// puts it on the exact lists as one free 128-granule extent.
    ///
    /// # Safety
    /// The caller holds the shard.
    unsafe fn new_page_node(&mut self, segs: &Segments, c: &Counters) -> bool {
        let Some((hdr, e)) = self.find_large(PAGE_GRANULES, PAGE_NODE_BYTES) else { return false };
        // SAFETY: `hdr` is a huge-level free extent that holds an aligned page.
        unsafe {
            self.unlink(hdr, e, false);
            let Loc { seg, granule: s } = Loc::of(segs, hdr as usize).unwrap_unchecked();
            let a = (hdr as usize).next_multiple_of(PAGE_NODE_BYTES);
            let front = (a - hdr as usize) / GRANULE;
            let back = e - front - PAGE_GRANULES;
            if front > 0 {
                self.insert(segs, seg, s, front, false);
            }
            if back > 0 {
                self.insert(segs, seg, s + front + PAGE_GRANULES, back, false);
            }
            let p = s + front;
            bitmap::assign(&segs.meta(seg).pages, p / PAGE_GRANULES, true);
            // The page's granules stay marked free: now at the page level.
            self.insert(segs, seg, p, PAGE_GRANULES, true);
        }
        bump(&c.page_nodes, 1);
        true
    }

    /// Splits the free extent `hdr` (`e` granules) into optional alignment
    /// padding, the new chunk of `g` granules, and an optional tail.
    ///
    /// # Safety
    /// `hdr` must be on a list of this heap at level `page`, and must hold
    /// `g` granules at `align`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn carve(
        &mut self,
        segs: &Segments,
        c: &Counters,
        hdr: *mut FreeHdr,
        e: usize,
        g: usize,
        align: usize,
        page: bool,
    ) -> NonNull<u8> {
        // SAFETY: `hdr` lies in a segment this heap owns (caller contract).
        let Loc { seg, granule: s } = unsafe { Loc::of(segs, hdr as usize).unwrap_unchecked() };
        // SAFETY: per the caller.
        unsafe { self.unlink(hdr, e, page) };
        let front =
            if align <= GRANULE { 0 } else { ((hdr as usize).next_multiple_of(align) - hdr as usize) / GRANULE };
        debug_assert!(front + g <= e);
        let at = s + front;
        // SAFETY: the padding and tail are free, at this level, and bordered
        // by the new chunk and by the used neighbours of the old extent.
        unsafe {
            if front > 0 {
                self.insert(segs, seg, s, front, page);
            }
            if e > front + g {
                self.insert(segs, seg, at + g, e - front - g, page);
            }
        }
        let m = segs.meta(seg);
        m.change_bits(|| {
            bitmap::clear_range(&m.free, at, at + g);
            bitmap::assign(&m.start, at, true);
        });
        bump(&c.in_use_granules, g as i64);
        bump(&c.allocs, 1);
        // SAFETY: inside the mapped segment, hence not null.
        unsafe { NonNull::new_unchecked(segs.addr(seg, at)) }
    }

    /// Frees the chunk at `loc` of `g` granules (the caller checked it),
    /// into the quick cache with the mark `park` when given and there is
    /// room, else (with `park`, in a page node) pending on its page node,
    /// else merging it at once. Returns true when its huge node became
    /// wholly free and must be handed back to the segment table by the
    /// caller.
    ///
    /// # Safety
    /// `loc` must start a live, unmarked chunk of exactly `g` granules in a
    /// node this heap owns, and the caller holds the shard.
    #[inline]
    pub unsafe fn free(&mut self, segs: &Segments, c: &Counters, loc: Loc, g: usize, park: Option<u64>) -> bool {
        let m = segs.meta(loc.seg);
        let s = loc.granule;
        bump(&c.in_use_granules, -(g as i64));
        bump(&c.frees, 1);
        if let Some(mark_word) = park {
            // SAFETY: the caller gives up the live chunk.
            if unsafe { self.quick.push(segs.addr(loc.seg, s), g, mark_word) } {
                return false;
            }
            if m.in_page_node(s) {
                // SAFETY: a live chunk start of a page node, given up, in no
                // cache; the caller holds the shard.
                if unsafe { self.pending.park(segs, loc.seg, s, g, mark_word) } {
                    return false;
                }
                // Every used granule of its page node is free now.
                // SAFETY: as above.
                return unsafe { self.release_page(segs, c, loc.seg, s & !(PAGE_GRANULES - 1)) };
            }
        }
        // SAFETY: per the caller.
        unsafe { self.merge_chunk(segs, c, loc.seg, s, g) }
    }

    /// Marks the chunk at granule `s` of `seg` (`g` granules) free and
    /// merges it with its free neighbours. Returns true when its huge node
    /// became wholly free (see [`Heap::free`]).
    ///
    /// # Safety
    /// `s` starts a chunk of exactly `g` granules, given up and in no cache,
    /// in a node of this heap; the caller holds the shard.
    #[inline]
    unsafe fn merge_chunk(&mut self, segs: &Segments, c: &Counters, seg: usize, s: usize, g: usize) -> bool {
        let m = segs.meta(seg);
        m.change_bits(|| {
            bitmap::assign(&m.start, s, false);
            bitmap::set_range(&m.free, s, s + g);
        });
        // SAFETY: the range was just made free; the caller holds the shard.
        unsafe { self.release_range(segs, c, seg, s, g) }
    }

    /// Frees `k` adjacent chunks of `g` granules each, the first at `loc`,
    /// in one level region (the caller checked each): as many as fit go to
    /// the quick cache with the mark `park`, the rest become one free range
    /// that merges with its neighbours once, not once per chunk. Returns
    /// true when the huge node became wholly free (see [`Heap::free`]).
    ///
    /// # Safety
    /// Each of the `k` chunks must be as [`Heap::free`] requires, and they
    /// must lie back to back in one level region.
    pub unsafe fn free_adjacent(
        &mut self,
        segs: &Segments,
        c: &Counters,
        loc: Loc,
        g: usize,
        mut k: usize,
        park: Option<u64>,
    ) -> bool {
        bump(&c.in_use_granules, -((k * g) as i64));
        bump(&c.frees, k as i64);
        if let Some(mark_word) = park {
            // SAFETY: the caller gives up the live chunks.
            while k > 0 && unsafe { self.quick.push(segs.addr(loc.seg, loc.granule + (k - 1) * g), g, mark_word) } {
                k -= 1;
            }
        }
        if k == 0 {
            return false;
        }
        let m = segs.meta(loc.seg);
        let (s, e) = (loc.granule, loc.granule + k * g);
        // The only chunk starts in s..e are the k chunks' own.
        m.change_bits(|| {
            bitmap::clear_range(&m.start, s, e);
            bitmap::set_range(&m.free, s, e);
        });
        // SAFETY: the range was just made free, in one level region; the
        // caller holds the shard.
        unsafe { self.release_range(segs, c, loc.seg, s, k * g) || self.settle_page(segs, c, loc.seg, s) }
    }

    /// After chunks of a page node were merged another way than pending:
    /// if every used granule left in the page node at granule `s` of `seg`
    /// is pending, frees the page node whole (see `pending`). Returns true
    /// when the huge node became wholly free (see [`Heap::free`]).
    ///
    /// # Safety
    /// The caller holds the shard, which owns `seg`.
    #[inline]
    unsafe fn settle_page(&mut self, segs: &Segments, c: &Counters, seg: usize, s: usize) -> bool {
        // SAFETY: forwarded.
        if unsafe { self.pending.settle(segs, seg, s) } {
            // SAFETY: every used granule of the page node is pending, and
            // its record was cleared.
            unsafe { self.release_page(segs, c, seg, s & !(PAGE_GRANULES - 1)) }
        } else {
            false
        }
    }

    /// Frees the page node at granule `lo` of `seg` whole: every used
    /// granule in it is a chunk given up (pending, or being freed), and its
    /// pending record is already cleared. Its free extents leave their
    /// lists, its bitmaps are reset, and it merges at the huge level.
    /// Returns true when the huge node became wholly free (see
    /// [`Heap::free`]).
    ///
    /// # Safety
    /// As described; the caller holds the shard, which owns `seg`.
    unsafe fn release_page(&mut self, segs: &Segments, c: &Counters, seg: usize, lo: usize) -> bool {
        let m = segs.meta(seg);
        let hi = lo + PAGE_GRANULES;
        let mut k = bitmap::next_set(&m.free, lo, hi);
        while k < hi {
            // SAFETY: a maximal free run in a page node is one listed extent
            // of this heap (the heap invariant): `k` holds its header.
            let n = unsafe { header_size(segs.addr(seg, k)) };
            // SAFETY: as above.
            unsafe { self.unlink(segs.addr(seg, k).cast(), n, true) };
            k = bitmap::next_set(&m.free, k + n, hi);
        }
        m.change_bits(|| {
            bitmap::clear_range(&m.start, lo, hi);
            bitmap::set_range(&m.free, lo, hi);
        });
        bitmap::assign(&m.pages, lo / PAGE_GRANULES, false);
        bump(&c.page_nodes, -1);
        // SAFETY: the page is now a free range at the huge level, on no list.
        unsafe { self.release_range(segs, c, seg, lo, PAGE_GRANULES) }
    }

    /// Merges the free range `s..s+n` (bits already set) with its free
    /// neighbours and lists the result. Returns true when the whole huge node
    /// is free and should leave this heap (it is then on no list).
    ///
    /// # Safety
    /// `s..s+n` must be free at its level, on no list, in a node of this heap.
    unsafe fn release_range(&mut self, segs: &Segments, c: &Counters, seg: usize, mut s: usize, mut n: usize) -> bool {
        let m = segs.meta(seg);
        let (lo, hi, page) = m.level_bounds(s);
        if s > lo && bitmap::test(&m.free, s - 1) && (page || !m.in_page_node(s - 1)) {
            // SAFETY: granule s-1 ends a free extent at this level, so its
            // footer is valid and the extent is on its list.
            unsafe {
                let l = footer_before(segs.addr(seg, s));
                if self.checked && (l == 0 || l > s - lo || !bitmap::test(&m.free, s - l)) {
                    crate::checked::corruption(segs.addr(seg, s).sub(4), "a free extent's footer is out of range");
                }
                self.unlink(segs.addr(seg, s - l).cast(), l, page);
                s -= l;
                n += l;
            }
        }
        let r = s + n;
        if r < hi && bitmap::test(&m.free, r) && (page || !m.in_page_node(r)) {
            // SAFETY: granule r starts a free extent at this level.
            unsafe {
                let rn = header_size(segs.addr(seg, r));
                self.unlink(segs.addr(seg, r).cast(), rn, page);
                n += rn;
            }
        }
        if page && n == PAGE_GRANULES {
            // The page node is wholly free: it returns to its huge node.
            bitmap::assign(&m.pages, s / PAGE_GRANULES, false);
            bump(&c.page_nodes, -1);
            // SAFETY: the page is now a free range at the huge level.
            return unsafe { self.release_range(segs, c, seg, s, n) };
        }
        if !page && n == HUGE_GRANULES {
            if self.whole_free >= KEEP_WHOLE_NODES {
                return true;
            }
            // Kept: its pages go after the purge delay (see `purge`).
            self.purge.dirtied();
        }
        // SAFETY: maximal free range at this level, on no list.
        unsafe { self.insert(segs, seg, s, n, page) };
        false
    }

    /// Shrinks the chunk at `loc` from `g` granules to fit `new_len`,
    /// returning the tail to the free lists.
    ///
    /// # Safety
    /// `loc` starts a live chunk of `g` granules; `granules_for(new_len) <= g`.
    pub unsafe fn shrink(&mut self, segs: &Segments, c: &Counters, loc: Loc, g: usize, new_len: usize) {
        let m = segs.meta(loc.seg);
        let s = loc.granule;
        let keep = granules_for(new_len);
        debug_assert!(keep <= g);
        if keep < g {
            m.change_bits(|| {
                bitmap::set_range(&m.free, s + keep, s + g);
            });
            bump(&c.in_use_granules, -((g - keep) as i64));
            // SAFETY: the tail is free now; the chunk itself borders it on the
            // left, so the node cannot become wholly free.
            let whole = unsafe { self.release_range(segs, c, loc.seg, s + keep, g - keep) };
            debug_assert!(!whole);
        }
    }

    /// Grows the chunk at `loc` from `g` granules to hold `new_len` by
    /// taking from a free right neighbour. Returns false (and changes
    /// nothing) when the neighbour is missing or too small.
    ///
    /// # Safety
    /// `loc` starts a live chunk of `g` granules; `granules_for(new_len) >= g`.
    pub unsafe fn try_grow(&mut self, segs: &Segments, c: &Counters, loc: Loc, g: usize, new_len: usize) -> bool {
        let m = segs.meta(loc.seg);
        let s = loc.granule;
        let want = granules_for(new_len);
        let (_, hi, page) = m.level_bounds(s);
        if want > g {
            let r = s + g;
            if r >= hi || !bitmap::test(&m.free, r) || (!page && m.in_page_node(r)) {
                return false;
            }
            // SAFETY: granule r starts a free extent at this level.
            let rn = unsafe { header_size(segs.addr(loc.seg, r)) };
            let more = want - g;
            if rn < more {
                return false;
            }
            // SAFETY: the right neighbour is on its list; its tail beyond the
            // grown chunk is free and bordered by a used or level-edge granule.
            unsafe {
                self.unlink(segs.addr(loc.seg, r).cast(), rn, page);
                if rn > more {
                    self.insert(segs, loc.seg, r + more, rn - more, page);
                }
            }
            m.change_bits(|| {
                bitmap::clear_range(&m.free, r, r + more);
            });
            bump(&c.in_use_granules, more as i64);
        }
        true
    }

    /// Takes every wholly free huge node off the lists and returns their
    /// segments through `out`.
    ///
    /// # Safety
    /// The caller holds the shard.
    pub unsafe fn drain_whole_nodes(&mut self, segs: &Segments, mut out: impl FnMut(usize)) {
        let idx = tlsf_insert_index(HUGE_GRANULES);
        loop {
            let hdr = self.large.head(idx);
            if hdr.is_null() {
                break;
            }
            // SAFETY: `hdr` heads the list of wholly free nodes.
            unsafe {
                let n = header_size(hdr.cast());
                if n != HUGE_GRANULES {
                    break;
                }
                self.unlink(hdr, n, false);
            }
            if let Some(loc) = Loc::of(segs, hdr as usize) {
                out(loc.seg);
            }
        }
    }

    /// A node of this heap with a free extent that could serve `len` bytes
    /// at `align` (directly, or by carving a page node): the node to hand
    /// to a shard that has run dry (see `reclaim`).
    pub fn donor_node(&self, segs: &Segments, len: usize, align: usize) -> Option<usize> {
        let g = granules_for(len);
        let need = g + align_extra(align);
        let hdr = if g <= SMALL_MAX_GRANULES && need <= PAGE_GRANULES {
            match self.small.find_ge(exact_index(need)) {
                Some(idx) => self.small.head(idx),
                None => self.find_large(PAGE_GRANULES, PAGE_NODE_BYTES)?.0,
            }
        } else {
            self.find_large(g, align)?.0
        };
        Loc::of(segs, hdr as usize).map(|l| l.seg)
    }

    /// Moves node `seg`, which this heap owns, to `to`: every free extent of
    /// the node leaves this heap's lists for `to`'s, and the page-node
    /// count moves with it. Live chunks stay where they are; the caller
    /// stores the node's new owner. This heap's quick cache and pending
    /// chains must hold no chunk of the node (flush them first).
    ///
    /// # Safety
    /// The caller holds both shards; `seg` is owned by this heap.
    pub unsafe fn give_node(&mut self, to: &mut Heap, segs: &Segments, seg: usize, from_c: &Counters, to_c: &Counters) {
        let m = segs.meta(seg);
        let mut pages = 0i64;
        let mut lo = 0;
        while lo < HUGE_GRANULES {
            let page = m.in_page_node(lo);
            let hi = if page {
                lo + PAGE_GRANULES
            } else {
                let mut j = lo;
                while j < HUGE_GRANULES && !m.in_page_node(j) {
                    j += PAGE_GRANULES - (j % PAGE_GRANULES);
                }
                j
            };
            pages += i64::from(page);
            let mut k = bitmap::next_set(&m.free, lo, hi);
            while k < hi {
                // SAFETY: a maximal free run at one level is exactly one
                // listed extent of this heap (the heap invariant), so `k`
                // holds its header.
                let n = unsafe { header_size(segs.addr(seg, k)) };
                debug_assert!(n >= 1 && k + n <= hi);
                // SAFETY: the extent is on this heap's list for its size;
                // `to` receives it on no list, with non-free neighbours.
                unsafe {
                    self.unlink(segs.addr(seg, k).cast(), n, page);
                    to.insert(segs, seg, k, n, page);
                }
                k = bitmap::next_set(&m.free, k + n, hi);
            }
            lo = hi;
        }
        bump(&from_c.page_nodes, -pages);
        bump(&to_c.page_nodes, pages);
    }

    /// Gives back the whole pages inside this heap's free extents (see
    /// [`Segments::discard`] for which segments qualify). An extent keeps
    /// the pages that hold its boundary tags: the
    /// header's page and the footer's. Returns the bytes given back (pages
    /// that were already gone count again: the heap does not remember
    /// which ones it gave back).
    ///
    /// # Safety
    /// The caller holds the shard.
    pub unsafe fn discard_free(&mut self, segs: &Segments) -> usize {
        // An extent of a page or less has no page clear of both tags.
        // SAFETY: forwarded from the caller.
        unsafe { self.discard_extents(segs, tlsf_insert_index(PAGE_GRANULES)) }
    }

    /// Whether a wholly free node waits for its purge (see `purge`): one
    /// load, for the slow paths' check.
    #[inline]
    pub fn purge_pending(&self) -> bool {
        self.purge.pending()
    }

    /// Counts a slow-path call of the shard; true when it is time to read
    /// the clock (every `purge::PURGE_TICKS`-th call).
    #[inline]
    pub fn purge_tick(&mut self) -> bool {
        self.purge.tick()
    }

    /// Gives back the pages of the wholly free nodes on the lists if they
    /// have stayed wholly free for `delay_ms` at `now_ms` (see `purge`).
    /// Returns the bytes given back.
    ///
    /// # Safety
    /// The caller holds the shard.
    pub unsafe fn purge_whole(&mut self, segs: &Segments, now_ms: u64, delay_ms: u64) -> usize {
        if !self.purge.due(now_ms, delay_ms, self.whole_free > 0) {
            return 0;
        }
        // That list holds wholly free nodes only: no extent is longer.
        // SAFETY: forwarded from the caller.
        unsafe { self.discard_extents(segs, tlsf_insert_index(HUGE_GRANULES)) }
    }

    /// [`Heap::discard_free`] for the extents on the TLSF lists from
    /// `first` up.
    ///
    /// # Safety
    /// As for [`Heap::discard_free`].
    unsafe fn discard_extents(&mut self, segs: &Segments, first: usize) -> usize {
        let mut bytes = 0;
        for idx in first..TLSF_LISTS {
            let mut hdr = self.large.head(idx);
            while !hdr.is_null() {
                // SAFETY: list members are free extents owned by this heap.
                let (n, next) = unsafe { (header_size(hdr.cast()), (*hdr).next) };
                let at = hdr as usize;
                if let Some(loc) = Loc::of(segs, at) {
                    let node = at - (loc.granule << GRANULE_SHIFT);
                    // The header's granule and the footer's last 4 bytes stay.
                    let from = (at + GRANULE - node).next_multiple_of(PAGE_NODE_BYTES);
                    let to = (at + n * GRANULE - 4 - node) & !(PAGE_NODE_BYTES - 1);
                    // SAFETY: `from..to` lies inside the extent, past its
                    // header and before its footer; the rest of a free
                    // extent is never read until it is carved again.
                    if from < to && unsafe { segs.discard(loc.seg, from, to) } {
                        bytes += to - from;
                    }
                }
                hdr = next;
            }
        }
        bytes
    }

    /// The largest free extent, in granules.
    pub fn largest_free(&self) -> usize {
        let small = self.small.last_nonempty().map_or(0, |i| i + 1);
        let large = self.large.last_nonempty().map_or(0, |idx| {
            let mut best = 0;
            let mut hdr = self.large.head(idx);
            while !hdr.is_null() {
                // SAFETY: list members are free extents owned by this heap.
                unsafe {
                    best = best.max(header_size(hdr.cast()));
                    hdr = (*hdr).next;
                }
            }
            best
        });
        small.max(large)
    }

    /// Calls `f(page_level, list_index, hdr)` for every listed extent.
    pub fn for_each_free(&self, mut f: impl FnMut(bool, usize, *mut FreeHdr)) {
        for idx in 0..EXACT_LISTS {
            let mut hdr = self.small.head(idx);
            while !hdr.is_null() {
                f(true, idx, hdr);
                // SAFETY: list members are free extents owned by this heap.
                hdr = unsafe { (*hdr).next };
            }
        }
        for idx in 0..TLSF_LISTS {
            let mut hdr = self.large.head(idx);
            while !hdr.is_null() {
                f(false, idx, hdr);
                // SAFETY: as above.
                hdr = unsafe { (*hdr).next };
            }
        }
    }

    /// Whether both list bitmaps agree with their heads.
    pub fn lists_consistent(&self) -> bool {
        self.small.bitmap_consistent() && self.large.bitmap_consistent()
    }
}
