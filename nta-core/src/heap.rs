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
//! # Free: marked now, merged by the node later (seed 002, Aug 2 2006)
//!
//! NTA merges a freed chunk with its free neighbours, so free space stays in
//! as few, as large extents as possible. Doing that on every free costs a
//! visit to both neighbours' boundary tags and two list operations, which
//! dominates a burst of frees. So a free only *marks* the chunk: its
//! granules are set in the free bitmap, its start bit is cleared, and a
//! small *raw* header (its length, and `prev` = [`RAW`]) goes into its first
//! granule; the node joins the heap's list of dirty nodes. The merge is
//! done per node, later, in one pass: `consolidate` walks the node's free
//! bitmap, and every maximal free run (raw pieces and listed extents, each
//! found through its header) becomes one listed extent. A wholly free page
//! node goes back to its huge node in the same pass; a wholly free huge
//! node is kept (up to [`KEEP_WHOLE_NODES`] per shard) or handed back.
//! (mimalloc defers its frees to a page-local list for the same reason; here
//! the node is the unit of deferral, and merging stays exact.)
//!
//! A node is consolidated when the allocation path finds no fit and the
//! heap holds at least as many pending granules as the request (before it
//! carves a new page node or grows the pool), when the node's last chunk is
//! freed (so an empty node goes back at once), and before anything reads
//! the lists as a whole (stats, validation, reclaim, growing a chunk in
//! place).
//!
//! # Deferred reuse
//!
//! Frees of chunks up to 2 KiB first go to the shard's bounded quick cache
//! (see `quick_cache`) and are served again to allocations of the same
//! size; the cache is flushed — marked free for real — before the pool
//! grows, before an allocation fails, and on `Pool::collect`.
//!
//! Invariants: `whole_free` equals the number of extents of exactly
//! `HUGE_GRANULES` on the TLSF lists; a node is on the dirty list iff its
//! `pending > 0`; `pending_total` is the sum of `pending` over the list.

use crate::bitmap;
use crate::extent::{header_size, write_tags, FreeHdr};
use crate::free_list::FreeLists;
use crate::granule::*;
use crate::node::NO_SEGMENT;
use crate::quick_cache::QuickCache;
use crate::segment::Segments;
use crate::size_class::{exact_index, tlsf_insert_index, tlsf_search_index, EXACT_LISTS, TLSF_LISTS};
use crate::stats::{bump, Counters};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;

/// Wholly free huge nodes a shard keeps before handing them back.
pub const KEEP_WHOLE_NODES: usize = 1;

/// Longest list walk the slow path does looking for a fit that TLSF's
/// round-up skipped.
const WALK_LIMIT: usize = 64;

/// `prev` of a raw piece's header: a chunk freed but not yet merged. No
/// listed extent has it (their `prev` is null or a real header).
pub const RAW: *mut FreeHdr = 1 as *mut FreeHdr;

/// Free lists and bookkeeping of one shard.
#[derive(Debug)]
pub struct Heap {
    small: FreeLists<{ EXACT_LISTS / 64 }>,
    large: FreeLists<{ TLSF_LISTS / 64 }>,
    whole_free: usize,
    quick: QuickCache,
    /// Checked mode: extent headers carry checksums (see `extent`).
    checked: bool,
    /// First node with pending frees, or `NO_SEGMENT`.
    dirty_head: u32,
    /// Pending granules over all dirty nodes.
    pending_total: usize,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
            checked,
            dirty_head: NO_SEGMENT,
            pending_total: 0,
        }
    }

    /// Whether the dirty list is consistent with the nodes' `pending`
    /// counters (validation).
    pub fn dirty_consistent(&self, segs: &Segments) -> bool {
        let (mut seg, mut total, mut prev) = (self.dirty_head, 0usize, NO_SEGMENT);
        let mut steps = 0;
        while seg != NO_SEGMENT {
            let m = segs.meta(seg as usize);
            let p = m.pending.load(Relaxed) as usize;
            if p == 0 || m.dirty_prev.load(Relaxed) != prev || steps > segs.count() {
                return false;
            }
            total += p;
            prev = seg;
            seg = m.dirty_next.load(Relaxed);
            steps += 1;
        }
        total == self.pending_total
    }

    /// The quick cache of freed small chunks (see `quick_cache`).
    pub fn quick(&self) -> &QuickCache {
        &self.quick
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
                // SAFETY: cached chunks are chunks of this heap's nodes.
                let loc = unsafe { Loc::of(segs, p as usize).unwrap_unchecked() };
                segs.meta(loc.seg).slack[loc.granule].store(slack_for(len, g) as u8, Relaxed);
                bump(&c.in_use_granules, g as i64);
                bump(&c.live_requested, len as i64);
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
            return Some(unsafe { self.carve(segs, c, hdr, idx + 1, g, len, align, true) });
        }
        let idx = self.large.find_ge(tlsf_search_index(need)?)?;
        let hdr = self.large.head(idx);
        // SAFETY: `hdr` heads a TLSF list whose every extent holds `need` granules.
        Some(unsafe { self.carve(segs, c, hdr, header_size(hdr.cast()), g, len, align, false) })
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
                // Merge what frees left pending before carving new space,
                // when there is enough of it to matter.
                if self.pending_total >= g {
                    self.consolidate_all(segs, c);
                    continue;
                }
                if small {
                    if self.new_page_node(segs, c) {
                        continue;
                    }
                } else if let Some(p) = self.alloc_large(segs, c, g, len, align) {
                    return Some(p);
                }
                // Before the pool grows, merge what the quick cache holds
                // and whatever is still pending.
                if !self.quick.is_empty() {
                    self.flush_quick(segs, c);
                    self.consolidate_all(segs, c);
                    continue;
                }
                if self.pending_total > 0 {
                    self.consolidate_all(segs, c);
                    continue;
                }
                if self.grow(segs, shard) {
                    continue;
                }
                // No segment left: a small request takes space at the huge
                // level directly, so the pool fills up completely.
                return if small { self.alloc_large(segs, c, g, len, align) } else { None };
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
            bump(&c.live_requested, (n * g * GRANULE) as i64);
            bump(&c.allocs, n as i64);
            // Their slack becomes 0 (full length), like carved ones below.
            for &p in &out[..n] {
                // SAFETY: cached chunks are chunks of this heap's nodes.
                let loc = unsafe { Loc::of(segs, p as usize).unwrap_unchecked() };
                segs.meta(loc.seg).slack[loc.granule].store(0, Relaxed);
            }
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
            let first = unsafe { self.carve(segs, c, hdr, e, k * g, k * g * GRANULE, GRANULE, small) };
            let Loc { seg, granule: s } = Loc::of(segs, first.as_ptr() as usize).expect("carved in a segment");
            let m = segs.meta(seg);
            for i in 0..k {
                bitmap::assign(&m.start, s + i * g, true);
                m.slack[s + i * g].store(0, Relaxed);
                out[n + i] = segs.addr(seg, s + i * g);
            }
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
            // SAFETY: cached chunks are live-marked, unmarked-again chunks of
            // this heap's nodes.
            unsafe {
                let loc = Loc::of(segs, p as usize).unwrap_unchecked();
                if self.mark_free(segs, c, loc.seg, loc.granule, g) {
                    segs.release(loc.seg, true);
                }
            }
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
    unsafe fn alloc_large(
        &mut self,
        segs: &Segments,
        c: &Counters,
        g: usize,
        len: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        let (hdr, e) = self.find_large(g, align)?;
        // SAFETY: `hdr` is a free extent of `e` granules that holds the request.
        Some(unsafe { self.carve(segs, c, hdr, e, g, len, align, false) })
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
        len: usize,
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
        // Start bit first, then the free bits: a reader scanning for this
        // chunk's left neighbour's end without the lock always finds a
        // start or a free bit at the boundary.
        bitmap::assign(&m.start, at, true);
        bitmap::clear_range(&m.free, at, at + g);
        m.slack[at].store(slack_for(len, g) as u8, Relaxed);
        m.used.store(m.used.load(Relaxed) + g as u32, Relaxed);
        bump(&c.in_use_granules, g as i64);
        bump(&c.live_requested, len as i64);
        bump(&c.allocs, 1);
        // SAFETY: inside the mapped segment, hence not null.
        unsafe { NonNull::new_unchecked(segs.addr(seg, at)) }
    }

    /// Frees the chunk at `loc` of `g` granules (the caller checked it),
    /// into the quick cache with the mark `park` when given and there is
    /// room, else marking it free (merged later, see the module notes).
    /// Returns true when its huge node became wholly free and must be
    /// handed back to the segment table by the caller.
    ///
    /// # Safety
    /// `loc` must start a live, unmarked chunk of exactly `g` granules in a
    /// node this heap owns, and the caller holds the shard.
    #[inline]
    pub unsafe fn free(&mut self, segs: &Segments, c: &Counters, loc: Loc, g: usize, park: Option<u64>) -> bool {
        let m = segs.meta(loc.seg);
        let s = loc.granule;
        let requested = g * GRANULE - m.slack[s].load(Relaxed) as usize;
        bump(&c.in_use_granules, -(g as i64));
        bump(&c.live_requested, -(requested as i64));
        bump(&c.frees, 1);
        if let Some(mark_word) = park {
            // SAFETY: the caller gives up the live chunk.
            if unsafe { self.quick.push(segs.addr(loc.seg, s), g, mark_word) } {
                return false;
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.mark_free(segs, c, loc.seg, s, g) }
    }

    /// Marks the chunk `seg:s..s+g` free: a raw piece (header in its first
    /// granule), free bits set, start bit cleared, pending on its node.
    /// When the node's last chunk goes, the node is consolidated at once;
    /// returns true when it is then wholly free and must be handed back.
    ///
    /// # Safety
    /// `s..s+g` must be a chunk of this heap's node (live, not parked), or
    /// the tail of one being shrunk; the caller holds the shard.
    #[inline]
    unsafe fn mark_free(&mut self, segs: &Segments, c: &Counters, seg: usize, s: usize, g: usize) -> bool {
        let m = segs.meta(seg);
        // SAFETY: the chunk is ours; its first granule takes the header.
        unsafe { self.write_raw(segs.addr(seg, s), g) };
        // Free bits first, then the start bit (see `carve`).
        bitmap::set_range(&m.free, s, s + g);
        bitmap::assign(&m.start, s, false);
        let used = m.used.load(Relaxed) - g as u32;
        m.used.store(used, Relaxed);
        self.add_pending(segs, seg, g);
        if used == 0 {
            // SAFETY: the caller holds the shard; the node is ours.
            return unsafe { self.consolidate(segs, c, seg) };
        }
        false
    }

    /// Writes a raw piece's header at `at` (`g` granules).
    ///
    /// # Safety
    /// `at` starts `g` free granules of this heap that no one else uses.
    #[inline]
    unsafe fn write_raw(&self, at: *mut u8, g: usize) {
        let hdr = at.cast::<FreeHdr>();
        // SAFETY: per the caller; a granule holds a header.
        unsafe {
            std::ptr::addr_of_mut!((*hdr).prev).write(RAW);
            std::ptr::addr_of_mut!((*hdr).granules).write(g as u32);
            if self.checked {
                std::ptr::addr_of_mut!((*hdr).next).write(std::ptr::null_mut());
                (*hdr).check = crate::extent::checksum(hdr);
            }
        }
    }

    /// Adds `g` pending granules to node `seg`, listing it as dirty.
    #[inline]
    fn add_pending(&mut self, segs: &Segments, seg: usize, g: usize) {
        let m = segs.meta(seg);
        let before = m.pending.load(Relaxed);
        m.pending.store(before + g as u32, Relaxed);
        self.pending_total += g;
        if before == 0 {
            m.dirty_prev.store(NO_SEGMENT, Relaxed);
            m.dirty_next.store(self.dirty_head, Relaxed);
            if self.dirty_head != NO_SEGMENT {
                segs.meta(self.dirty_head as usize).dirty_prev.store(seg as u32, Relaxed);
            }
            self.dirty_head = seg as u32;
        }
    }

    /// Takes node `seg` off the dirty list and zeroes its pending count.
    fn clear_pending(&mut self, segs: &Segments, seg: usize) {
        let m = segs.meta(seg);
        let p = m.pending.load(Relaxed) as usize;
        if p == 0 {
            return;
        }
        let (prev, next) = (m.dirty_prev.load(Relaxed), m.dirty_next.load(Relaxed));
        if prev == NO_SEGMENT {
            self.dirty_head = next;
        } else {
            segs.meta(prev as usize).dirty_next.store(next, Relaxed);
        }
        if next != NO_SEGMENT {
            segs.meta(next as usize).dirty_prev.store(prev, Relaxed);
        }
        m.pending.store(0, Relaxed);
        self.pending_total -= p;
    }

    /// Consolidates every dirty node; wholly free ones go back to the
    /// segment table.
    ///
    /// # Safety
    /// The caller holds the shard.
    pub unsafe fn consolidate_all(&mut self, segs: &Segments, c: &Counters) {
        while self.dirty_head != NO_SEGMENT {
            let seg = self.dirty_head as usize;
            // SAFETY: a dirty node is owned by this heap; we hold the shard.
            if unsafe { self.consolidate(segs, c, seg) } {
                segs.release(seg, true);
            }
        }
    }

    /// Merges node `seg`'s pending frees: every maximal free run at each
    /// level becomes one listed extent; wholly free page nodes go back to
    /// the huge level. Returns true when the whole node is free and must
    /// leave this heap (it is then on no list).
    ///
    /// # Safety
    /// The caller holds the shard; `seg` is a node of this heap.
    pub unsafe fn consolidate(&mut self, segs: &Segments, c: &Counters, seg: usize) -> bool {
        let m = segs.meta(seg);
        if m.pending.load(Relaxed) == 0 {
            return false;
        }
        self.clear_pending(segs, seg);
        // Page nodes first: a wholly free one rejoins the huge level as one
        // raw piece, merged in the second pass.
        let mut p = bitmap::next_set(&m.pages, 0, PAGES_PER_HUGE);
        while p < PAGES_PER_HUGE {
            let (lo, hi) = (p * PAGE_GRANULES, (p + 1) * PAGE_GRANULES);
            let mut k = bitmap::next_set(&m.free, lo, hi);
            while k < hi {
                let e = bitmap::next_clear(&m.free, k, hi);
                if k == lo && e == hi {
                    // SAFETY: the run is free page-level memory of ours.
                    unsafe {
                        self.unlink_run(segs, seg, k, e, true);
                        self.write_raw(segs.addr(seg, lo), PAGE_GRANULES);
                    }
                    bitmap::assign(&m.pages, p, false);
                    bump(&c.page_nodes, -1);
                } else {
                    // SAFETY: as above.
                    unsafe { self.merge_run(segs, seg, k, e, true) };
                }
                k = bitmap::next_set(&m.free, e, hi);
            }
            p = bitmap::next_set(&m.pages, p + 1, PAGES_PER_HUGE);
        }
        // The huge level: the spans between page nodes.
        let mut lo = 0;
        while lo < HUGE_GRANULES {
            if m.in_page_node(lo) {
                lo += PAGE_GRANULES;
                continue;
            }
            let mut hi = lo;
            while hi < HUGE_GRANULES && !m.in_page_node(hi) {
                hi += PAGE_GRANULES - (hi % PAGE_GRANULES);
            }
            let mut k = bitmap::next_set(&m.free, lo, hi);
            while k < hi {
                let e = bitmap::next_clear(&m.free, k, hi);
                if e - k == HUGE_GRANULES && self.whole_free >= KEEP_WHOLE_NODES {
                    // SAFETY: the whole node is free memory of ours.
                    unsafe { self.unlink_run(segs, seg, k, e, false) };
                    return true;
                }
                // SAFETY: as above.
                unsafe { self.merge_run(segs, seg, k, e, false) };
                k = bitmap::next_set(&m.free, e, hi);
            }
            lo = hi;
        }
        false
    }

    /// Makes the maximal free run `seg:a..b` at one level one listed extent.
    ///
    /// # Safety
    /// `a..b` is a maximal free run of this heap's node at that level.
    unsafe fn merge_run(&mut self, segs: &Segments, seg: usize, a: usize, b: usize, page: bool) {
        let hdr = segs.addr(seg, a).cast::<FreeHdr>();
        // SAFETY: every free run starts with a piece header.
        let (first_raw, first_len) = unsafe { ((*hdr).prev == RAW, header_size(hdr.cast())) };
        if !first_raw && first_len == b - a {
            return; // already one listed extent
        }
        // SAFETY: forwarded.
        unsafe {
            self.unlink_run(segs, seg, a, b, page);
            self.insert(segs, seg, a, b - a, page);
        }
    }

    /// Takes every listed extent in the free run `seg:a..b` off its list,
    /// walking the run piece by piece through the headers.
    ///
    /// # Safety
    /// As for [`Heap::merge_run`].
    unsafe fn unlink_run(&mut self, segs: &Segments, seg: usize, a: usize, b: usize, page: bool) {
        let mut k = a;
        while k < b {
            let hdr = segs.addr(seg, k).cast::<FreeHdr>();
            // SAFETY: pieces tile the run, each starting with a header.
            let (raw, n) = unsafe { ((*hdr).prev == RAW, header_size(hdr.cast())) };
            if n == 0 || n > b - k {
                crate::checked::corruption(hdr.cast(), "a free piece's length runs past its free run");
            }
            if raw {
                if self.checked {
                    // SAFETY: as above.
                    unsafe { crate::free_list::verify(hdr) };
                }
            } else {
                // SAFETY: a listed extent of `n` granules at this level.
                unsafe { self.unlink(hdr, n, page) };
            }
            k += n;
        }
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
        let old_requested = g * GRANULE - m.slack[s].load(Relaxed) as usize;
        m.slack[s].store(slack_for(new_len, keep) as u8, Relaxed);
        bump(&c.live_requested, new_len as i64 - old_requested as i64);
        if keep < g {
            bump(&c.in_use_granules, -((g - keep) as i64));
            let tail = s + keep;
            // SAFETY: the tail is ours; its first granule takes the header.
            unsafe { self.write_raw(segs.addr(loc.seg, tail), g - keep) };
            bitmap::set_range(&m.free, tail, s + g);
            m.used.store(m.used.load(Relaxed) - (g - keep) as u32, Relaxed);
            self.add_pending(segs, loc.seg, g - keep);
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
        if want > g && m.pending.load(Relaxed) > 0 {
            // The right neighbour may be a raw piece: merge first. The chunk
            // is live, so the node cannot become wholly free.
            // SAFETY: the caller holds the shard.
            let whole = unsafe { self.consolidate(segs, c, loc.seg) };
            debug_assert!(!whole);
        }
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
            bitmap::clear_range(&m.free, r, r + more);
            m.used.store(m.used.load(Relaxed) + more as u32, Relaxed);
            bump(&c.in_use_granules, more as i64);
        }
        let old_requested = g * GRANULE - m.slack[s].load(Relaxed) as usize;
        let now = want.max(g);
        m.slack[s].store(slack_for(new_len, now) as u8, Relaxed);
        bump(&c.live_requested, new_len as i64 - old_requested as i64);
        true
    }

    /// Takes every wholly free huge node off the lists and returns their
    /// segments through `out`.
    ///
    /// # Safety
    /// The caller holds the shard.
    pub unsafe fn drain_whole_nodes(&mut self, segs: &Segments, c: &Counters, mut out: impl FnMut(usize)) {
        // SAFETY: the caller holds the shard.
        unsafe { self.consolidate_all(segs, c) };
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
    /// stores the node's new owner. This heap's quick cache must hold no
    /// chunk of the node (flush it first).
    ///
    /// # Safety
    /// The caller holds both shards; `seg` is owned by this heap.
    pub unsafe fn give_node(&mut self, to: &mut Heap, segs: &Segments, seg: usize, from_c: &Counters, to_c: &Counters) {
        let m = segs.meta(seg);
        debug_assert_eq!(m.pending.load(Relaxed), 0, "consolidate a node before giving it away");
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
