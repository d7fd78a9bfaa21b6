//! The public handle: [`Pool`], its builder, and its documented behaviour.
//!
//! Everything a `Pool` does is routed by the shared state behind it
//! (`inner`); this file holds only the supported surface.
//!
//! # Fork
//!
//! After `fork()`, an exportable pool (the default) is frozen in the child:
//! `alloc` returns `None` and frees do nothing, because its memory is shared
//! with the parent (see `fork`). A pool built with `exportable(false)`
//! works in the child like any private memory.

use crate::error::Error;
use crate::export::{ChunkLocation, FreeHook, SegmentExport, SegmentListener};
use crate::granule::*;
use crate::handle::PoolHandle;
use crate::heap::Loc;
use crate::inner::{Config, PoolInner, BOUND_SHARD};
use crate::node::NO_OWNER;
use crate::segment::SegmentState;
use crate::stats::Stats;
use crate::thread_cache::{self, PoolRef};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
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

/// A handle to a pool. Cheap to clone; `Send + Sync`.
///
/// The pool's internals (shards, segment table, node metadata) are not
/// reachable from safe code: every public call keeps its invariants.
///
/// ```compile_fail
/// let pool = nta_core::Pool::builder().capacity(8 << 20).build().unwrap();
/// // Releasing a segment with live chunks handed memory out twice before
/// // the internals became private; now this does not compile.
/// pool.inner().segments().release(0, true);
/// ```
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

// A panic inside nta-core (an invalid free, a shrink that would grow) is
// raised before the pool changes anything and after it releases its locks,
// so a pool observed after a caught panic is consistent: it is unwind safe.
impl std::panic::UnwindSafe for Pool {}
impl std::panic::RefUnwindSafe for Pool {}

/// Builds a [`Pool`]. Defaults: capacity = physical memory, one shard per
/// CPU, [`HugePages::Try`], unchecked (unless the `checked` feature is on),
/// 64 MiB of wholly free segments kept mapped for reuse with a 1 s release
/// delay beyond that, their pages purged after 10 s, exportable memfd
/// segments, not premapped, no decay.
#[derive(Clone, Copy, Debug)]
pub struct PoolBuilder {
    cfg: Config,
}

impl PoolBuilder {
    /// Hard cap on mapped bytes, rounded up to whole 2 MiB segments; at
    /// most [`MAX_CAPACITY`](crate::MAX_CAPACITY) (`build` fails beyond).
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
    /// Retained segments keep their mapping, but their pages go once they
    /// have been free for the purge delay ([`PoolBuilder::purge_delay`]).
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
    /// How long wholly free memory keeps its pages while the pool works
    /// (default 10 s, jemalloc's decay time; mimalloc's 10 ms made P4's
    /// allocations three times slower, as memfd pages cost more to fault
    /// back in than anonymous ones): the wholly free node each
    /// shard keeps, and the free segments kept mapped for reuse
    /// ([`PoolBuilder::retain_bytes`]), stay mapped but give their pages
    /// back once they have stayed wholly free this long. The check runs in
    /// the pool's own slow paths, so a pool that no one calls keeps its
    /// pages (see [`PoolBuilder::decay`] for that). [`Duration::MAX`]
    /// keeps them for good. Segments on huge pages, sealed (exported)
    /// segments and a premapped pool never give pages back.
    ///
    /// [`Duration::MAX`]: std::time::Duration::MAX
    pub fn purge_delay(mut self, delay: std::time::Duration) -> Self {
        self.cfg.purge_delay_ms = if delay == std::time::Duration::MAX {
            u64::MAX
        } else {
            delay.as_millis().min(u64::MAX as u128 - 1) as u64
        };
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
    /// Decay (default off): a background thread (`nta-decay`) gives the
    /// pool's free memory back to the OS once no allocation or free has
    /// happened for `after`: it empties idle threads' caches and the
    /// shards' caches and unmaps every wholly free segment, the retained
    /// ones too (not those of a premapped pool). What stays mapped is the
    /// segments that hold live chunks. See the `decay` module notes; about
    /// 10 s is jemalloc's decay time.
    pub fn decay(mut self, after: std::time::Duration) -> Self {
        self.cfg.decay = Some(after);
        self
    }
    /// Builds the pool. Nothing is mapped until the first allocation, unless
    /// [`PoolBuilder::premap`] is set. Fails if the decay thread cannot be
    /// started.
    pub fn build(self) -> Result<Pool, Error> {
        let inner = Arc::new(PoolInner::new(self.cfg)?);
        crate::fork::register(&inner);
        if let Some(after) = self.cfg.decay {
            crate::decay::spawn(&inner, after)?;
        }
        Ok(Pool { inner })
    }
}

impl Pool {
    /// A builder with the machine defaults.
    pub fn builder() -> PoolBuilder {
        PoolBuilder { cfg: Config::default_for_machine() }
    }

    /// Makes the pool live for the rest of the process and returns a
    /// `'static` handle to it: its memory is never unmapped, even when every
    /// other handle drops. In exchange, [`Pool::handle`] then costs no
    /// atomic read-modify-write (see [`PoolHandle`]): the choice for a
    /// server's packet pool, made once at start-up.
    pub fn leak(self) -> &'static Pool {
        // SAFETY: once `keep_forever` has stored a counted handle inside the
        // pool's own state, the reference count can no longer reach zero
        // (that handle is dropped only when the state is, which needs a
        // count of zero first), so the state lives for the rest of the
        // process and a `'static` borrow of it is valid.
        let inner: &'static PoolInner = unsafe { &*Arc::as_ptr(&self.inner) };
        inner.keep_forever(self)
    }

    /// Whether [`Pool::leak`] was called on a handle of this pool.
    pub fn is_leaked(&self) -> bool {
        self.inner.is_leaked()
    }

    /// A handle that keeps the pool alive, for a buffer that frees its
    /// chunk later: a counted clone, or for a leaked pool an uncounted one
    /// (no atomic when it is made or dropped).
    #[inline]
    pub fn handle(&self) -> PoolHandle {
        PoolHandle::of(self)
    }

    /// Allocates `len` bytes (granule aligned), or `None` when the pool is
    /// exhausted. A zero length takes one granule. Requests above
    /// [`MAX_ALLOC_BYTES`] (2 MiB) take a run of whole 2 MiB segments; the
    /// largest request is bounded only by the capacity.
    #[inline]
    pub fn alloc(&self, len: usize) -> Option<NonNull<u8>> {
        if let Some(p) = thread_cache::alloc(&self.inner, len) {
            return Some(p);
        }
        thread_cache::alloc_refill(&self.inner, || PoolRef::Shared(Arc::downgrade(&self.inner)), len)
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
    /// A pointer from elsewhere, an interior pointer and a double free are
    /// caught and panic (see [`crate::checked`] for what is checked in which
    /// mode); this is a diagnosis, not a licence.
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded.
        unsafe {
            if !thread_cache::free_unsized(&self.inner, || PoolRef::Shared(Arc::downgrade(&self.inner)), ptr) {
                self.free_slow(ptr)
            }
        }
    }

    /// The shard way of `free` (out of line, as for `free_sized`).
    ///
    /// # Safety
    /// As for [`Pool::free`].
    #[inline(never)]
    unsafe fn free_slow(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded.
        unsafe { self.inner.free(ptr, None) }
    }

    /// Frees a chunk whose length is known, skipping the size lookup.
    ///
    /// # Safety
    /// As for [`Pool::free`], and `len` must be the length the chunk was
    /// allocated with or last resized to (a length with the same granule
    /// count frees the right memory). The granule count is checked whenever
    /// the chunk reaches its shard (at once, or when a thread cache hands it
    /// back) and panics on a mismatch.
    #[inline]
    pub unsafe fn free_sized(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded.
        unsafe {
            if !thread_cache::free_sized(&self.inner, || PoolRef::Shared(Arc::downgrade(&self.inner)), ptr, len) {
                self.free_sized_slow(ptr, len)
            }
        }
    }

    /// The shard way of `free_sized`: kept out of line so that the
    /// thread-cache path above stays small (fewer registers to save).
    ///
    /// # Safety
    /// As for [`Pool::free_sized`].
    #[inline(never)]
    unsafe fn free_sized_slow(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded.
        unsafe { self.inner.free(ptr, Some(len)) }
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

    /// Walks every node and checks every invariant, the chunks parked in
    /// every cache and the counters included; the error names the first
    /// violation. Correct while other threads use the pool: it holds every
    /// shard and takes every thread cache over for the duration (other
    /// threads wait or go around it). Cold: milliseconds for a large pool.
    pub fn validate(&self) -> Result<(), String> {
        crate::validate::validate(&self.inner)
    }

    /// Merges every pending remote free, every chunk in this thread's and
    /// the shards' caches, and every chunk waiting on its page node
    /// (`Stats::pending_bytes`) now (like `mi_collect`). Memory stays
    /// mapped.
    pub fn collect(&self) {
        self.inner.collect()
    }

    /// [`Pool::collect`], then gives every wholly free segment beyond the
    /// retain watermark back to the OS now, without waiting for the release
    /// delay (like `mi_collect(true)`). The retained segments stay mapped
    /// but give their pages back, and so do the pages inside free extents
    /// (clear of their boundary tags) in the segments with live chunks:
    /// except in a pool that is premapped (its pages may be pinned by
    /// io_uring), on huge pages, or exported (sealed; see `export`).
    /// [`Stats::discarded_bytes`] counts those pages. Cold: each shard is
    /// held while its pages go (milliseconds for a pool of tens of MiB).
    pub fn trim(&self) {
        self.inner.collect();
        self.inner.segments().purge_now();
        self.inner.discard_free();
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

    /// Whether the pool's segments are memfds another process can map
    /// (see [`crate::export`]).
    pub fn is_exportable(&self) -> bool {
        self.inner.is_exportable()
    }

    /// Where the chunk at `ptr` lies: segment, offset and the segment's
    /// generation, for a descriptor a reader process can resolve. `None`
    /// for a pointer outside the pool's mapped segments. Cheap: a
    /// subtraction, a shift and one metadata load.
    pub fn locate(&self, ptr: *const u8) -> Option<ChunkLocation> {
        let segs = self.inner.segments();
        let seg = segs.segment_of(ptr as usize)?;
        let generation = segs.generation(seg);
        if generation == 0 {
            return None;
        }
        let offset = (ptr as usize - segs.base().as_ptr() as usize - seg * HUGE_NODE_BYTES) as u32;
        let owner = segs.meta(seg).owner.load(Relaxed);
        let shard = (owner != NO_OWNER).then(|| owner - 1);
        Some(ChunkLocation { segment: seg as u32, offset, generation, shard })
    }

    /// The start of the chunk that `ptr` points into: the pointer
    /// [`Pool::free`] takes for it, and the one a [`FreeHook`] is given
    /// when it is freed. `None` for a pointer outside the pool's mapped
    /// segments or not inside a chunk.
    ///
    /// The answer is exact for a pointer into a *live* chunk (one the
    /// caller keeps from being freed meanwhile): the granules between its
    /// start and `ptr` cannot change while it lives. For any other pointer
    /// the answer is some chunk start or `None`, never undefined behaviour.
    /// Cheap: a bit scan back over the node's start bitmap (one word when
    /// `ptr` is within 64 granules of its chunk's start); for a buffer above
    /// 2 MiB, a walk back over the run's segments.
    ///
    /// [`FreeHook`]: crate::FreeHook
    pub fn chunk_start(&self, ptr: *const u8) -> Option<NonNull<u8>> {
        let segs = self.inner.segments();
        let loc = Loc::of(segs, ptr as usize)?;
        let meta = segs.meta(loc.seg);
        if meta.owner.load(Acquire) != NO_OWNER {
            let (low, _, _) = meta.level_bounds(loc.granule);
            let start = crate::bitmap::prev_set(&meta.start, low, loc.granule)?;
            return NonNull::new(segs.addr(loc.seg, start));
        }
        // A run: its head is the nearest run head at or before `seg` whose
        // segments reach `seg`.
        let mut head = loc.seg;
        loop {
            if segs.state(head) != SegmentState::Run {
                return None;
            }
            if let Some((k, _)) = segs.run(head) {
                return (head + k > loc.seg).then(|| NonNull::new(segs.addr(head, 0))).flatten();
            }
            head = head.checked_sub(1)?;
        }
    }

    /// Installs (or, with `None`, removes) the segment listener and returns
    /// every segment mapped now, each with a read-only descriptor,
    /// atomically with respect to later changes (see [`crate::export`]).
    /// The first call with a listener seals every segment against new
    /// writers, and every later segment is sealed as it is mapped: from
    /// then on, the pool gives memory back only in whole segments.
    /// Fails for a pool built with `exportable(false)`.
    pub fn watch_segments(&self, listener: Option<Arc<dyn SegmentListener>>) -> std::io::Result<Vec<SegmentExport>> {
        if !self.inner.is_exportable() {
            return Err(std::io::Error::other("nta-core: the pool is private (exportable(false)); nothing to export"));
        }
        self.inner.segments().watch(listener)
    }

    /// Installs (or, with `None`, removes) the hook that may postpone
    /// frees (see [`crate::export`]). Removing it does not complete frees
    /// it postponed; its owner does that with [`Pool::free_postponed`].
    pub fn set_free_hook(&self, hook: Option<Arc<dyn FreeHook>>) {
        self.inner.set_free_hook(hook)
    }

    /// Completes a free that the free hook postponed.
    ///
    /// # Safety
    /// `ptr` must be a chunk of this pool whose free the hook postponed,
    /// and this must be the only completion of that free. `len` is the
    /// length the hook was given (or `None`).
    ///
    /// A sized one takes the thread-cache path of `free_sized` (without
    /// showing the hook the free again), so a thread that completes the
    /// frees of what it published reuses the chunks without a lock.
    pub unsafe fn free_postponed(&self, ptr: NonNull<u8>, len: Option<usize>) {
        if let Some(len) = len {
            let pool = || PoolRef::Shared(Arc::downgrade(&self.inner));
            // SAFETY: forwarded: a live chunk of `len` bytes that passed the
            // free's checks when it was freed, unmarked since.
            if unsafe { thread_cache::free_sized_unhooked(&self.inner, pool, ptr, len) } {
                return;
            }
        }
        // SAFETY: forwarded.
        unsafe { self.inner.free_postponed(ptr, len) }
    }

    /// The shared state.
    pub(crate) fn inner(&self) -> &PoolInner {
        &self.inner
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        crate::fork::unregister(self);
    }
}
