//! The pool: shards over a segment table, and the public handle.
//!
//! # Routing
//!
//! - **alloc**: the current thread's shard (bound, or by CPU). Fast path:
//!   take the shard's try-lock, find a fit in its free lists, carve, unlock.
//!   Everything else — a busy shard, an empty list, remote frees to merge,
//!   exhaustion — leaves through the single cold exit, `alloc_slow`.
//! - **free**: the node's owner comes from its metadata. If this thread is on
//!   the owning shard and gets its try-lock, the chunk merges at once;
//!   otherwise it is pushed on the owner's remote-free queue (lock-free) and
//!   merged by the owner in a batch on its next alloc or free.
//! - **exhaustion**: a shard that cannot grow drains its own queue, then
//!   takes every idle shard it can lock, drains that shard's queue and takes
//!   its wholly free nodes; only then does the allocation fail (`None`).

use crate::bitmap;
use crate::checked::{invalid_free, FreeError, POISON, QUEUED_MAGIC};
use crate::error::Error;
use crate::granule::*;
use crate::heap::Loc;
use crate::meta_array::MetaArray;
use crate::node::NO_OWNER;
use crate::segment::{Backing, SegmentState, Segments};
use crate::shard::{Shard, ShardGuard};
use crate::stats::{bump, Stats};
use crate::sys;
use crate::thread_cache::{self, PoolRef, ThreadSlot, SLOTS};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

/// How huge nodes get their memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Hugetlb pages when reserved, else THP-advised pages, else 4 KiB pages.
    #[default]
    Try,
    /// Hugetlb pages only: building fails if none can be mapped, and the
    /// pool stops growing when they run out.
    Require,
    /// Regular 4 KiB pages, no THP advice.
    Off,
}

thread_local! {
    /// Shard the thread was bound to with `bind_current_thread`.
    static BOUND_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Home of an unbound thread: the CPU it first allocated on, or the
    /// shard it moved to when its home was busy.
    static HOME_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Settings of a pool. See [`PoolBuilder`].
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub capacity: usize,
    pub shards: usize,
    pub hugepages: HugePages,
    pub checked: bool,
    pub retain_bytes: usize,
    pub exportable: bool,
    pub premap: bool,
    pub release_delay_ms: u64,
}

impl Config {
    /// The defaults: capacity = physical memory, one shard per CPU, try
    /// hugepages, unchecked (unless the `checked` feature is on), keep 64 MiB
    /// of wholly free segments mapped for reuse, exportable memfd segments.
    pub fn default_for_machine() -> Config {
        Config {
            capacity: sys::phys_mem_bytes(),
            shards: sys::cpu_count(),
            hugepages: HugePages::Try,
            checked: cfg!(feature = "checked"),
            retain_bytes: 64 << 20,
            exportable: true,
            premap: false,
            release_delay_ms: 1000,
        }
    }
}

/// The shared state behind [`Pool`] handles (and behind `NtaGlobal`).
/// Building it allocates nothing from the Rust heap.
#[derive(Debug)]
pub struct PoolInner {
    segs: Segments,
    shards: MetaArray<Shard>,
    slots: MetaArray<ThreadSlot>,
    checked: bool,
}

impl PoolInner {
    /// Reserves address space and metadata. No segment is mapped yet, except
    /// to verify `HugePages::Require`.
    pub fn new(cfg: Config) -> Result<PoolInner, Error> {
        if cfg.capacity == 0 {
            return Err(Error::InvalidConfig("capacity must be at least 1 byte"));
        }
        if cfg.shards == 0 || cfg.shards > 4096 {
            return Err(Error::InvalidConfig("shards must be between 1 and 4096"));
        }
        let count = cfg.capacity.div_ceil(HUGE_NODE_BYTES);
        if count >= u32::MAX as usize {
            return Err(Error::InvalidConfig("capacity too large"));
        }
        let retain = if cfg.premap { count * HUGE_NODE_BYTES } else { cfg.retain_bytes };
        let segs = Segments::new(count, cfg.hugepages, cfg.exportable, retain, cfg.release_delay_ms)?;
        let shards = MetaArray::new(cfg.shards, |_| Shard::default())?;
        let slots = MetaArray::new(SLOTS, |_| ThreadSlot::default())?;
        let inner = PoolInner { segs, shards, slots, checked: cfg.checked || cfg!(feature = "checked") };
        if cfg.premap {
            // Map every segment now and park it, so the whole range stays
            // mapped for the pool's life (io_uring buffer registration).
            // Fresh slots are handed out in order, so segments 0..taken are
            // the ones acquired here.
            let taken = (0..count).take_while(|_| inner.segs.acquire(0).is_some()).count();
            for seg in 0..taken {
                inner.segs.release(seg, false);
            }
            if taken < count {
                return Err(Error::Io(std::io::Error::other("could not map every segment of a premapped pool")));
            }
        } else if cfg.hugepages == HugePages::Require {
            let seg = inner.segs.acquire(0).ok_or(Error::HugePagesUnavailable)?;
            debug_assert_eq!(inner.segs.backing(seg), Some(Backing::Hugetlb));
            inner.segs.release(seg, false);
        }
        Ok(inner)
    }

    /// Number of shards.
    #[inline]
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The segment table.
    pub fn segments(&self) -> &Segments {
        &self.segs
    }

    /// The thread-cache slots (see `thread_cache`).
    pub(crate) fn thread_slots(&self) -> &[ThreadSlot] {
        &self.slots
    }

    /// Whether checked mode is on.
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// The calling thread's shard: the one it is bound to, else its home.
    /// An unbound thread's home is the shard of the CPU it first allocates
    /// on, and it moves only when another thread holds it (see
    /// `lock_some_shard`). Following every CPU migration instead would
    /// spread one thread's buffers over all shards' nodes and turn its own
    /// frees into remote frees.
    #[inline]
    fn current_shard(&self) -> usize {
        let n = self.shards.len();
        if n == 1 {
            return 0;
        }
        let bound = BOUND_SHARD.with(Cell::get);
        if bound != usize::MAX {
            return bound % n;
        }
        let home = HOME_SHARD.with(Cell::get);
        if home != usize::MAX {
            return home % n;
        }
        let cpu = sys::current_cpu();
        HOME_SHARD.with(|h| h.set(cpu));
        cpu % n
    }

    /// Whether `ptr` lies in this pool's address range.
    #[inline]
    pub fn contains(&self, ptr: *const u8) -> bool {
        self.segs.segment_of(ptr as usize).is_some()
    }

    /// Allocates `len` bytes at `align` (a power of two up to 4096).
    #[inline]
    pub fn alloc(&self, len: usize, align: usize) -> Option<NonNull<u8>> {
        let idx = self.current_shard();
        let shard = &self.shards[idx];
        if len <= MAX_ALLOC_BYTES && align <= MAX_ALIGN && align.is_power_of_two() {
            if let Some(mut g) = shard.try_lock() {
                // The owner merges remote frees in a batch on its next alloc.
                if !shard.remote.is_empty() {
                    self.drain(&mut g);
                }
                // SAFETY: we hold the shard; len and align are in range.
                if let Some(p) = unsafe { g.heap().alloc_fast(&self.segs, &shard.counters, len, align) } {
                    return Some(p);
                }
            }
        }
        self.alloc_slow(idx, len, align)
    }

    /// Everything but a plain hit in the current shard's lists. Cold because
    /// it runs once per new page node or segment, on contention, when remote
    /// frees are waiting, or at exhaustion.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, idx: usize, len: usize, align: usize) -> Option<NonNull<u8>> {
        if len > MAX_ALLOC_BYTES || align > MAX_ALIGN || !align.is_power_of_two() {
            self.shards[idx].counters.failed_allocs.fetch_add(1, Relaxed);
            return None;
        }
        let (idx, mut g) = self.lock_some_shard(idx);
        self.drain(&mut g);
        let shard = &self.shards[idx];
        // SAFETY: we hold the shard; arguments are in range.
        if let Some(p) = unsafe { g.heap().alloc_slow(&self.segs, idx, &shard.counters, len, align) } {
            return Some(p);
        }
        // Exhausted: give back what this thread's cache holds and reclaim
        // what idle shards hold, then try once more.
        drop(g);
        thread_cache::flush_current(self);
        self.reclaim_from_others(idx);
        let mut g = shard.lock();
        self.drain(&mut g);
        // SAFETY: as above.
        let p = unsafe { g.heap().alloc_slow(&self.segs, idx, &shard.counters, len, align) };
        if p.is_none() {
            shard.counters.failed_allocs.fetch_add(1, Relaxed);
        }
        p
    }

    /// Takes shard `idx`, or any free shard if it is busy, or waits for `idx`.
    fn lock_some_shard(&self, idx: usize) -> (usize, ShardGuard<'_>) {
        if let Some(g) = self.shards[idx].try_lock() {
            return (idx, g);
        }
        let n = self.shards.len();
        for k in 1..n {
            let j = (idx + k) % n;
            if let Some(g) = self.shards[j].try_lock() {
                // Another thread works on our home shard: move home (unless
                // bound), so two threads do not keep colliding.
                if BOUND_SHARD.with(Cell::get) == usize::MAX {
                    HOME_SHARD.with(|h| h.set(j));
                }
                return (j, g);
            }
        }
        (idx, self.shards[idx].lock())
    }

    /// Drains the remote frees of the shard `g` holds.
    pub(crate) fn drain(&self, g: &mut ShardGuard<'_>) {
        let mut node = g.shard().remote.take_all();
        let mut drained = 0i64;
        while !node.is_null() {
            // SAFETY: queued chunks are live chunks of this shard's nodes,
            // given up by their freeing thread; the link words are theirs.
            let (next, len) = unsafe { ((*node).next, (*node).len) };
            let ptr = node.cast::<u8>();
            if self.checked {
                // SAFETY: as above; the third word exists (chunks are >= 32 B).
                unsafe { ptr.cast::<usize>().add(2).write(0) };
            }
            let loc = Loc::of(&self.segs, ptr as usize).unwrap_or_else(|| invalid_free(ptr, FreeError::NotInPool));
            let len = (len != usize::MAX).then_some(len);
            self.free_in_shard(g, loc, ptr, len);
            drained += 1;
            node = next;
        }
        if drained > 0 {
            bump(&g.shard().counters.remote_drained, drained);
        }
    }

    /// Moves the wholly free nodes and pending remote frees of every other
    /// shard that is idle right now into the segment table.
    #[cold]
    fn reclaim_from_others(&self, idx: usize) {
        for (j, shard) in self.shards.iter().enumerate() {
            if j == idx {
                continue;
            }
            if let Some(mut g) = shard.try_lock() {
                self.drain(&mut g);
                // SAFETY: we hold shard j.
                unsafe {
                    g.heap().flush_quick(&self.segs, &shard.counters);
                    g.heap().drain_whole_nodes(&self.segs, |seg| self.segs.release(seg, false));
                }
            }
        }
    }

    /// Frees a chunk of the shard `g` holds.
    fn free_in_shard(&self, g: &mut ShardGuard<'_>, loc: Loc, ptr: *mut u8, len: Option<usize>) {
        let m = self.segs.meta(loc.seg);
        let s = loc.granule;
        if !bitmap::test(&m.start, s) {
            invalid_free(ptr, self.reason_not_start(loc));
        }
        let granules = match len {
            Some(len) if !self.checked => {
                debug_assert_eq!(granules_for(len), m.chunk_granules(s), "nta-core: free_sized length mismatch");
                granules_for(len)
            }
            _ => m.chunk_granules(s),
        };
        if self.checked {
            if let Some(len) = len {
                if granules_for(len) != granules {
                    invalid_free(ptr, FreeError::WrongSize { len, chunk_bytes: granules * GRANULE });
                }
            }
            // SAFETY: the chunk is live and being freed by its owner.
            unsafe { ptr.write_bytes(POISON, granules * GRANULE) };
        }
        let shard = g.shard();
        // SAFETY: `loc` starts a live chunk of `granules` in this shard.
        let whole = unsafe { g.heap().free(&self.segs, &shard.counters, loc, granules, !self.checked) };
        if whole {
            self.segs.release(loc.seg, true);
        }
    }

    fn reason_not_start(&self, loc: Loc) -> FreeError {
        if bitmap::test(&self.segs.meta(loc.seg).free, loc.granule) {
            FreeError::DoubleFree
        } else {
            FreeError::Interior
        }
    }

    /// Locates a pointer being freed or resized and its owning shard.
    #[inline]
    fn locate(&self, ptr: *mut u8) -> (Loc, usize) {
        let Some(loc) = Loc::of(&self.segs, ptr as usize) else { invalid_free(ptr, FreeError::NotInPool) };
        let owner = self.segs.meta(loc.seg).owner.load(Acquire);
        if owner == NO_OWNER {
            invalid_free(ptr, FreeError::NotInPool);
        }
        if ptr as usize & (GRANULE - 1) != 0 {
            invalid_free(ptr, FreeError::Interior);
        }
        (loc, owner as usize - 1)
    }

    /// Frees `ptr`; `len` is the `free_sized` length when known.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool, not used afterwards.
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>, len: Option<usize>) {
        let ptr = ptr.as_ptr();
        let (loc, owner) = self.locate(ptr);
        if owner == self.current_shard() && !self.checked {
            let shard = &self.shards[owner];
            if let Some(mut g) = shard.try_lock() {
                self.free_in_shard(&mut g, loc, ptr, len);
                if !shard.remote.is_empty() {
                    self.drain(&mut g);
                }
                return;
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.free_slow(loc, owner, ptr, len) }
    }

    /// Frees chunks of `granules` each (from a thread cache that overflowed)
    /// under one acquisition of the current shard; chunks of other shards go
    /// to their owners' remote queues.
    ///
    /// # Safety
    /// Every pointer must be a live chunk of this pool of `granules`, given up.
    pub(crate) unsafe fn free_batch(&self, chunks: &[*mut u8], granules: usize) {
        let idx = self.current_shard();
        let Some(mut g) = self.shards[idx].try_lock() else {
            for &p in chunks {
                // SAFETY: forwarded from the caller.
                unsafe { self.free(NonNull::new_unchecked(p), Some(granules * GRANULE)) };
            }
            return;
        };
        for &p in chunks {
            let (loc, owner) = self.locate(p);
            if owner == idx {
                self.free_in_shard(&mut g, loc, p, Some(granules * GRANULE));
            } else {
                // SAFETY: the caller gives the live chunk up.
                unsafe { self.shards[owner].remote.push(p, granules * GRANULE) };
            }
        }
        self.drain(&mut g);
    }

    /// Allocates `len` bytes (granule alignment) and, under the same shard
    /// acquisition, up to `extra.len()` more chunks of the same granule count
    /// from the free lists only (never growing the pool for them). Returns
    /// the chunk and how many extras were stored. The extras are accounted
    /// as allocated with their full granule length.
    pub(crate) fn alloc_batch(&self, len: usize, extra: &mut [*mut u8]) -> Option<(NonNull<u8>, usize)> {
        let idx = self.current_shard();
        let shard = &self.shards[idx];
        let Some(mut g) = shard.try_lock() else { return self.alloc(len, GRANULE).map(|p| (p, 0)) };
        if !shard.remote.is_empty() {
            self.drain(&mut g);
        }
        // SAFETY: we hold the shard; len is within the small range.
        let Some(first) = (unsafe { g.heap().alloc_fast(&self.segs, &shard.counters, len, GRANULE) }) else {
            drop(g);
            return self.alloc_slow(idx, len, GRANULE).map(|p| (p, 0));
        };
        // SAFETY: as above; thread caches only hold chunks up to 64 granules.
        let n = unsafe { g.heap().alloc_run(&self.segs, &shard.counters, granules_for(len), extra) };
        Some((first, n))
    }

    /// A free that cannot merge right here: checked-mode validation, a busy
    /// owner, or a chunk owned by another shard.
    ///
    /// # Safety
    /// As for [`PoolInner::free`].
    #[cold]
    #[inline(never)]
    unsafe fn free_slow(&self, loc: Loc, owner: usize, ptr: *mut u8, len: Option<usize>) {
        if self.checked {
            self.check_free(loc, ptr, len);
        }
        let shard = &self.shards[owner];
        if owner == self.current_shard() {
            if let Some(mut g) = shard.try_lock() {
                self.free_in_shard(&mut g, loc, ptr, len);
                self.drain(&mut g);
                return;
            }
        }
        if self.checked {
            // SAFETY: chunks are at least 32 bytes, so the third word exists.
            unsafe { ptr.cast::<usize>().add(2).write(QUEUED_MAGIC) };
        }
        // SAFETY: the caller gives the live chunk up; it is granule aligned
        // and at least 32 bytes.
        unsafe { shard.remote.push(ptr, len.unwrap_or(usize::MAX)) };
    }

    /// Checked mode: validates a free on the freeing thread. Reads the
    /// owner's bitmaps without its lock; the bits of a live chunk are stable,
    /// so a valid free always passes.
    fn check_free(&self, loc: Loc, ptr: *mut u8, len: Option<usize>) {
        let m = self.segs.meta(loc.seg);
        if !bitmap::test(&m.start, loc.granule) {
            invalid_free(ptr, self.reason_not_start(loc));
        }
        // SAFETY: the start bit says a live chunk of >= 32 bytes is here.
        if unsafe { ptr.cast::<usize>().add(2).read() } == QUEUED_MAGIC {
            invalid_free(ptr, FreeError::QueuedTwice);
        }
        let _ = len; // verified by the owner, which can read the size safely
    }

    /// Runs `f` on the owning shard's heap with the shard held (cold paths:
    /// resizing and size queries).
    fn with_owner<R>(&self, ptr: *mut u8, f: impl FnOnce(&mut ShardGuard<'_>, Loc, usize) -> R) -> R {
        let (loc, owner) = self.locate(ptr);
        let mut g = self.shards[owner].lock();
        let m = self.segs.meta(loc.seg);
        if !bitmap::test(&m.start, loc.granule) {
            drop(g);
            invalid_free(ptr, self.reason_not_start(loc));
        }
        let granules = m.chunk_granules(loc.granule);
        f(&mut g, loc, granules)
    }

    /// Shrinks in place; the tail returns to the pool.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool.
    pub unsafe fn shrink(&self, ptr: NonNull<u8>, new_len: usize) {
        self.with_owner(ptr.as_ptr(), |g, loc, granules| {
            assert!(
                granules_for(new_len) <= granules,
                "nta-core: shrink of {ptr:p} to {new_len} bytes would grow its {} bytes",
                granules * GRANULE
            );
            let c = &g.shard().counters;
            // SAFETY: we hold the owner; `loc` starts a live chunk of `granules`.
            unsafe { g.heap().shrink(&self.segs, c, loc, granules, new_len) }
        })
    }

    /// Grows in place into a free right neighbour.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool.
    pub unsafe fn try_grow(&self, ptr: NonNull<u8>, new_len: usize) -> bool {
        if new_len > MAX_ALLOC_BYTES {
            return false;
        }
        self.with_owner(ptr.as_ptr(), |g, loc, granules| {
            let c = &g.shard().counters;
            if granules_for(new_len) < granules {
                // SAFETY: we hold the owner; the chunk is live.
                unsafe { g.heap().shrink(&self.segs, c, loc, granules, new_len) };
                return true;
            }
            // SAFETY: as above.
            unsafe { g.heap().try_grow(&self.segs, c, loc, granules, new_len) }
        })
    }

    /// Granule-rounded size of a live chunk.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool.
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        self.with_owner(ptr.as_ptr(), |_, _, granules| granules * GRANULE)
    }

    /// Resizes, in place when the chunk can shrink or grow there, else by
    /// allocating, copying and freeing.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool; on `Some`, the old pointer is
    /// no longer valid (unless it is the one returned).
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, new_len: usize, align: usize) -> Option<NonNull<u8>> {
        // SAFETY: forwarded from the caller.
        if unsafe { self.try_grow(ptr, new_len) } {
            return Some(ptr);
        }
        // SAFETY: as above.
        let old = unsafe { self.usable_size(ptr) };
        let new = self.alloc(new_len, align)?;
        // SAFETY: both chunks are live and distinct; we copy what fits.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old.min(new_len));
            self.free(ptr, None);
        }
        Some(new)
    }

    /// Flushes the calling thread's cache for this pool, drains every
    /// shard's remote-free queue and merges every chunk held in the shards'
    /// quick caches, now. (Other threads' caches are flushed by those
    /// threads: on their own `collect`, or when they exit.)
    pub fn collect(&self) {
        thread_cache::flush_current(self);
        for shard in self.shards.iter() {
            let mut g = shard.lock();
            self.drain(&mut g);
            // SAFETY: we hold the shard.
            unsafe { g.heap().flush_quick(&self.segs, &shard.counters) };
        }
    }

    /// Locks every shard, in index order (cold: stats and validation).
    pub(crate) fn lock_all(&self) -> Vec<ShardGuard<'_>> {
        self.shards.iter().map(Shard::lock).collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut st = Stats::default();
        let mut largest = 0;
        for shard in self.shards.iter() {
            let c = &shard.counters;
            // In-use, live and op counters are deltas that move between
            // shards and thread slots, so they are summed with wrapping.
            st.live_requested_bytes = st.live_requested_bytes.wrapping_add(c.live_requested.load(Relaxed));
            st.in_use_bytes =
                st.in_use_bytes.wrapping_add(c.in_use_granules.load(Relaxed).wrapping_mul(GRANULE as u64));
            st.allocs = st.allocs.wrapping_add(c.allocs.load(Relaxed));
            st.frees = st.frees.wrapping_add(c.frees.load(Relaxed));
            st.page_nodes += c.page_nodes.load(Relaxed);
            st.remote_frees_drained += c.remote_drained.load(Relaxed);
            st.remote_frees_queued += shard.remote.pushed();
            st.failed_allocs += c.failed_allocs.load(Relaxed);
            let mut g = shard.lock();
            largest = largest.max(g.heap().largest_free() * GRANULE);
            st.cached_bytes += g.heap().quick().bytes() as u64;
        }
        for slot in self.slots.iter() {
            let c = &slot.counters;
            st.live_requested_bytes = st.live_requested_bytes.wrapping_add(c.live_requested.load(Relaxed));
            st.in_use_bytes =
                st.in_use_bytes.wrapping_add(c.in_use_granules.load(Relaxed).wrapping_mul(GRANULE as u64));
            st.allocs = st.allocs.wrapping_add(c.allocs.load(Relaxed));
            st.frees = st.frees.wrapping_add(c.frees.load(Relaxed));
            st.thread_cached_bytes += slot.bytes() as u64;
        }
        if self.segs.has_free() {
            largest = largest.max(HUGE_NODE_BYTES);
        }
        st.mapped_bytes = self.segs.mapped_bytes() as u64;
        st.free_bytes = st.mapped_bytes.saturating_sub(st.in_use_bytes);
        st.largest_free_bytes = largest as u64;
        st.metadata_bytes =
            (self.segs.metadata_bytes() + self.shards.mapped_bytes() + self.slots.mapped_bytes()) as u64;
        let (h, t, s) = self.segs.backing_counts();
        st.segments_hugetlb = h as u64;
        st.segments_thp = t as u64;
        st.segments_small = s as u64;
        st.huge_nodes = (h + t + s) as u64;
        st
    }

    /// Segments currently mapped, in slot order.
    pub fn mapped_segments(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.segs.count()).filter(|&s| self.segs.state(s) != SegmentState::Unmapped)
    }
}

/// A handle to a pool. Cheap to clone; `Send + Sync`.
///
/// ```
/// let pool = nta_core::Pool::builder().capacity(8 << 20).build().unwrap();
/// let p = pool.alloc(1500).expect("pool has room");
/// // SAFETY: `p` is a live chunk of `pool`, freed once.
/// unsafe { pool.free(p) };
/// ```
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

/// Builds a [`Pool`]; see [`Config::default_for_machine`] for the defaults.
#[derive(Clone, Copy, Debug)]
pub struct PoolBuilder {
    cfg: Config,
}

impl PoolBuilder {
    /// Hard cap on mapped bytes, rounded up to whole 2 MiB segments.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.cfg.capacity = bytes;
        self
    }
    /// Number of shards (default: one per CPU).
    pub fn shards(mut self, n: usize) -> Self {
        self.cfg.shards = n;
        self
    }
    /// Hugepage policy (default [`HugePages::Try`]).
    pub fn hugepages(mut self, h: HugePages) -> Self {
        self.cfg.hugepages = h;
        self
    }
    /// Checked mode: invalid frees panic with a message naming the pointer
    /// and the reason, `free_sized` lengths are verified, freed memory is
    /// poisoned. Off by default (on with the `checked` feature).
    pub fn checked(mut self, on: bool) -> Self {
        self.cfg.checked = on;
        self
    }
    /// Wholly free segments kept mapped for reuse; beyond this, freed
    /// segments go back to the OS (default 64 MiB: a packet pool that cycles
    /// through its memory should not fault it back in on every burst).
    pub fn retain_bytes(mut self, bytes: usize) -> Self {
        self.cfg.retain_bytes = bytes;
        self
    }
    /// Memfd `MAP_SHARED` segments that reader processes can map (default),
    /// or private anonymous memory when false.
    pub fn exportable(mut self, on: bool) -> Self {
        self.cfg.exportable = on;
        self
    }
    /// How long a wholly free segment beyond the retain watermark stays
    /// mapped before it goes back to the OS (default 1 s; `Pool::collect`
    /// releases at once). Zero releases as soon as a segment is free.
    pub fn release_delay(mut self, delay: std::time::Duration) -> Self {
        self.cfg.release_delay_ms = delay.as_millis().min(u64::MAX as u128) as u64;
        self
    }
    /// Maps the whole capacity at build time and never releases it (the
    /// retain watermark becomes the capacity), so `Pool::memory_range` stays
    /// valid memory for the pool's life — what registering the pool with
    /// io_uring (`register_buffers`) or an RDMA device needs. Default false.
    pub fn premap(mut self, on: bool) -> Self {
        self.cfg.premap = on;
        self
    }
    /// Builds the pool. Nothing is mapped until the first allocation, unless
    /// [`PoolBuilder::premap`] is set.
    pub fn build(self) -> Result<Pool, Error> {
        Ok(Pool { inner: Arc::new(PoolInner::new(self.cfg)?) })
    }
}

impl Pool {
    /// A builder with the machine defaults.
    pub fn builder() -> PoolBuilder {
        PoolBuilder { cfg: Config::default_for_machine() }
    }

    /// Allocates `len` bytes (granule aligned), or `None` when the pool is
    /// exhausted or `len > MAX_ALLOC_BYTES`. A zero length takes one granule.
    #[inline]
    pub fn alloc(&self, len: usize) -> Option<NonNull<u8>> {
        if let Some(p) = thread_cache::alloc(&self.inner, len) {
            return Some(p);
        }
        thread_cache::alloc_refill(&self.inner, || PoolRef::Shared(self.inner.clone()), len)
    }

    /// Allocates at `align`, a power of two up to 4096; `None` otherwise or
    /// when exhausted.
    #[inline]
    pub fn alloc_aligned(&self, len: usize, align: usize) -> Option<NonNull<u8>> {
        if align <= GRANULE {
            return self.alloc(len);
        }
        self.inner.alloc(len, align.max(GRANULE))
    }

    /// Frees a chunk; no size needed. Any thread may free.
    ///
    /// # Safety
    /// `ptr` must come from this pool, be live, and not be used afterwards.
    /// Invalid pointers are caught (and panic) when the check is cheap, and
    /// always in checked mode; see [`crate::checked`].
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded.
        unsafe { self.inner.free(ptr, None) }
    }

    /// Frees a chunk whose length is known, skipping the size lookup.
    ///
    /// # Safety
    /// As for [`Pool::free`], and `len` must be the length the chunk was
    /// allocated with or last resized to. A length with the same granule
    /// count frees the right memory but skews `live_requested_bytes`. The
    /// granule count is checked in debug builds and in checked mode.
    #[inline]
    pub unsafe fn free_sized(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded.
        unsafe {
            if !thread_cache::free_sized(&self.inner, || PoolRef::Shared(self.inner.clone()), ptr, len) {
                self.inner.free(ptr, Some(len))
            }
        }
    }

    /// Shrinks a chunk in place; its tail returns to the pool and merges
    /// with a free right neighbour. Panics if `new_len` would grow it.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool.
    pub unsafe fn shrink(&self, ptr: NonNull<u8>, new_len: usize) {
        // SAFETY: forwarded.
        unsafe { self.inner.shrink(ptr, new_len) }
    }

    /// Grows a chunk in place when its right neighbour is free and large
    /// enough; returns false (changing nothing) otherwise.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool.
    pub unsafe fn try_grow(&self, ptr: NonNull<u8>, new_len: usize) -> bool {
        // SAFETY: forwarded.
        unsafe { self.inner.try_grow(ptr, new_len) }
    }

    /// Resizes: shrinks or grows in place when possible, else moves.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool; after `Some(q)`, only `q` is.
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, new_len: usize) -> Option<NonNull<u8>> {
        // SAFETY: forwarded.
        unsafe { self.inner.realloc(ptr, new_len, GRANULE) }
    }

    /// Granule-rounded size of a live chunk.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool.
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded.
        unsafe { self.inner.usable_size(ptr) }
    }

    /// A snapshot of the pool's counters. Exact when the pool is at rest.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Walks every node and checks every invariant (see [`crate::validate`]).
    /// Drains the remote-free queues first. Cold: locks every shard.
    pub fn validate(&self) -> Result<(), String> {
        crate::validate::validate(&self.inner)
    }

    /// Merges every pending remote free and every chunk in this thread's
    /// and the shards' caches now (like `mi_collect`). Memory stays mapped.
    pub fn collect(&self) {
        self.inner.collect()
    }

    /// [`Pool::collect`], then gives every wholly free segment beyond the
    /// retain watermark back to the OS now, without waiting for the release
    /// delay (like `mi_collect(true)`).
    pub fn trim(&self) {
        self.inner.collect();
        self.inner.segments().purge_now();
    }

    /// Pins the calling thread to `shard` (modulo the shard count) for this
    /// and every other pool, until [`Pool::unbind_current_thread`].
    pub fn bind_current_thread(&self, shard: usize) {
        BOUND_SHARD.with(|b| b.set(shard));
    }

    /// Unpins the calling thread: it works on its home shard again.
    pub fn unbind_current_thread(&self) {
        BOUND_SHARD.with(|b| b.set(usize::MAX));
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shard_count()
    }

    /// Whether `ptr` lies in this pool's address range.
    pub fn contains(&self, ptr: *const u8) -> bool {
        self.inner.contains(ptr)
    }

    /// The pool's address range: every chunk lies in `base..base + len`.
    /// The range is reserved, not all mapped, unless the pool was built with
    /// [`PoolBuilder::premap`].
    pub fn memory_range(&self) -> (NonNull<u8>, usize) {
        let segs = self.inner.segments();
        (segs.base(), segs.count() * HUGE_NODE_BYTES)
    }

    /// The shared state (for occupancy views and exporters).
    pub fn inner(&self) -> &PoolInner {
        &self.inner
    }
}
