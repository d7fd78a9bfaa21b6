//! The pool's shared state and its routing: which shard serves an
//! allocation, and where a free goes.
//!
//! # Routing
//!
//! - **alloc**: the current thread's shard (bound, or its home). Fast path:
//!   take the shard's try-lock, find a fit in its free lists, carve, unlock.
//!   Everything else — a busy shard, an empty list, remote frees to merge,
//!   a request above 2 MiB (a run, see `large`), exhaustion (see
//!   `reclaim`) — leaves through the single cold exit, `alloc_slow`.
//! - **free**: the node's owner comes from its metadata. If this thread is on
//!   the owning shard and gets its try-lock, the chunk merges at once;
//!   otherwise it is pushed on the owner's remote-free queue (lock-free) and
//!   merged by the owner in a batch on its next alloc or free. A node's
//!   owner can change (reclaim moves mostly free nodes to a shard that ran
//!   dry), so the owner is read again once the shard is held, and a drain
//!   forwards chunks of nodes that moved.
//! - **checks**: every free checks the chunk start (double free of a merged
//!   chunk, interior pointer) and the parked mark (double free of a cached
//!   or queued chunk, see `mark`), and the shard path checks the length of
//!   `free_sized` against the chunk. Invalid frees panic with the message of
//!   [`crate::checked`], always after releasing any shard lock, so that a
//!   panic that allocates (it does, under `NtaGlobal`) cannot deadlock.
//!
//! # Modes
//!
//! `mode` packs four flags that the fast paths test with one load:
//! checked mode, "no thread caches" (the kernel lacks `membarrier`, see
//! `thread_slot`), "frozen" (this is a forked child and the pool's memory
//! is shared with the parent, see `fork`) and "hooked" (a free hook may
//! postpone frees, see `export`). Any flag set sends frees the shard way;
//! "frozen" also makes allocations fail and frees do nothing.

use crate::bitmap;
use crate::checked::{invalid_free, FreeError, POISON};
use crate::error::Error;
use crate::export::FreeHook;
use crate::granule::*;
use crate::heap::Loc;
use crate::lock::FutexLock;
use crate::mark::{self, Key, Parked};
use crate::meta_array::MetaArray;
use crate::node::NO_OWNER;
use crate::pool::Pool;
use crate::remote::{Chain, RemoteQueue};
use crate::segment::{SegmentState, Segments};
use crate::shard::{Shard, ShardGuard};
use crate::stats::{bump, Stats};
use crate::sys;
use crate::thread_cache;
use crate::thread_slot::{self, ThreadSlot, SLOTS};
use crate::HugePages;
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering::*};
use std::sync::OnceLock;

thread_local! {
    /// Shard the thread was bound to with `bind_current_thread`.
    pub(crate) static BOUND_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Home of an unbound thread: the CPU it first allocated on, or the
    /// shard it moved to when its home was busy.
    static HOME_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// `mode` flag: checked mode.
const CHECKED: u8 = 1;
/// `mode` flag: no thread caches (no `membarrier`).
const NO_CACHE: u8 = 2;
/// `mode` flag: a forked child's copy of an exportable pool.
const FROZEN: u8 = 4;
/// `mode` flag: a free hook is installed (see `export`).
const HOOKED: u8 = 8;

/// Settings of a pool (see `PoolBuilder`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub capacity: usize,
    pub shards: usize,
    pub hugepages: HugePages,
    pub checked: bool,
    pub retain_bytes: usize,
    pub exportable: bool,
    pub premap: bool,
    pub release_delay_ms: u64,
    /// How long wholly free memory keeps its pages while the pool works
    /// (see `purge`); `u64::MAX`: for good.
    pub purge_delay_ms: u64,
    /// Decay after this much inactivity (see `decay`); `None`: off.
    pub decay: Option<std::time::Duration>,
}

impl Config {
    /// The defaults: capacity = physical memory (at most
    /// [`MAX_CAPACITY`](crate::MAX_CAPACITY)), one shard per CPU, try
    /// hugepages, unchecked (unless the `checked` feature is on), keep 64 MiB
    /// of wholly free segments mapped for reuse, exportable memfd segments.
    pub fn default_for_machine() -> Config {
        Config {
            capacity: sys::phys_mem_bytes().min(crate::MAX_CAPACITY),
            shards: sys::cpu_count(),
            hugepages: HugePages::Try,
            checked: cfg!(feature = "checked"),
            retain_bytes: 64 << 20,
            exportable: true,
            premap: false,
            release_delay_ms: 1000,
            purge_delay_ms: crate::purge::DEFAULT_PURGE_DELAY_MS,
            decay: None,
        }
    }
}

/// The shared state behind `Pool` handles (and behind `NtaGlobal`).
/// Building it allocates nothing from the Rust heap.
#[derive(Debug)]
pub(crate) struct PoolInner {
    mode: AtomicU8,
    /// The handle `Pool::leak` keeps, set once: a reference cycle that
    /// keeps the pool alive for the rest of the process (see `handle`). It
    /// lives here, not in a leaked box, so that the pool stays reachable
    /// (through the fork registry) and leak checkers do not report it.
    leaked: Kept,
    key: Key,
    exportable: bool,
    segs: Segments,
    shards: MetaArray<Shard>,
    slots: MetaArray<ThreadSlot>,
    /// The free hook, when `mode` has HOOKED.
    hook: FutexLock<Option<std::sync::Arc<dyn FreeHook>>>,
    /// Links in the registry of live pools (see `fork`).
    pub(crate) registry_prev: AtomicPtr<PoolInner>,
    pub(crate) registry_next: AtomicPtr<PoolInner>,
}

/// The handle a leaked pool keeps of itself. Its `Debug` says only whether
/// it is set (printing the handle would print the pool again, forever).
struct Kept(OnceLock<Pool>);

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", if self.0.get().is_some() { "leaked" } else { "not leaked" })
    }
}

/// A located chunk pointer.
enum Located {
    /// In a node that shard `.1` owns.
    Owned(Loc, usize),
    /// In a segment no shard owns: a run, or an error.
    Unowned(Loc),
}

impl PoolInner {
    /// Reserves address space and metadata. No segment is mapped yet, except
    /// to verify `HugePages::Require` or for `premap`.
    pub fn new(cfg: Config) -> Result<PoolInner, Error> {
        if cfg.capacity == 0 {
            return Err(Error::InvalidConfig("capacity must be at least 1 byte"));
        }
        if cfg.shards == 0 || cfg.shards > 4096 {
            return Err(Error::InvalidConfig("shards must be between 1 and 4096"));
        }
        let count = cfg.capacity.div_ceil(HUGE_NODE_BYTES);
        if cfg.capacity > crate::MAX_CAPACITY {
            return Err(Error::InvalidConfig("capacity too large (at most MAX_CAPACITY, 16 TiB)"));
        }
        crate::fork::install_handlers();
        let retain = if cfg.premap { count * HUGE_NODE_BYTES } else { cfg.retain_bytes };
        let segs = Segments::new(
            count,
            cfg.hugepages,
            cfg.exportable,
            cfg.premap,
            retain,
            cfg.release_delay_ms,
            cfg.purge_delay_ms,
        )?;
        let checked = cfg.checked || cfg!(feature = "checked");
        let shards = MetaArray::new(cfg.shards, |i| Shard::new(i, checked))?;
        // SAFETY: an all-zero ThreadSlot is `ThreadSlot::default()` (flags
        // false, mark 0, null heads, zero counts and counters), so the table
        // is mapped without writing it: a slot's pages are touched only once
        // a thread claims it (256 slots are about 190 KiB).
        let slots = unsafe { MetaArray::<ThreadSlot>::zeroed(SLOTS) }?;
        let mut mode = 0;
        if checked {
            mode |= CHECKED;
        }
        if !thread_slot::stealing_supported() {
            mode |= NO_CACHE;
        }
        let inner = PoolInner {
            mode: AtomicU8::new(mode),
            leaked: Kept(OnceLock::new()),
            key: Key::random(),
            exportable: cfg.exportable,
            segs,
            shards,
            slots,
            hook: FutexLock::new(None),
            registry_prev: AtomicPtr::new(std::ptr::null_mut()),
            registry_next: AtomicPtr::new(std::ptr::null_mut()),
        };
        if cfg.premap {
            // Map every segment now and park it, so the whole range stays
            // mapped for the pool's life (io_uring buffer registration).
            let mut taken = 0;
            while let Some(seg) = inner.segs.acquire(0) {
                debug_assert_eq!(seg, taken);
                taken += 1;
            }
            for seg in 0..taken {
                inner.segs.release(seg, false);
            }
            if taken < count {
                return Err(Error::Io(std::io::Error::other("could not map every segment of a premapped pool")));
            }
        } else if cfg.hugepages == HugePages::Require {
            let seg = inner.segs.acquire(0).ok_or(Error::HugePagesUnavailable)?;
            inner.segs.release(seg, false);
        }
        Ok(inner)
    }

    /// Number of shards.
    #[inline]
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shards.
    pub(crate) fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The segment table.
    #[inline]
    pub fn segments(&self) -> &Segments {
        &self.segs
    }

    /// The thread-cache slots (see `thread_slot`).
    pub fn thread_slots(&self) -> &[ThreadSlot] {
        &self.slots
    }

    /// The pool's parked-mark secret.
    #[inline]
    pub fn key(&self) -> Key {
        self.key
    }

    /// Whether a handle of this pool has been leaked (see `handle`).
    #[inline]
    pub fn is_leaked(&self) -> bool {
        self.leaked.0.get().is_some()
    }

    /// Keeps `pool` (a handle of this pool) for good and returns it, or the
    /// handle kept before.
    pub fn keep_forever(&self, pool: Pool) -> &Pool {
        let _ = self.leaked.0.set(pool);
        self.leaked.0.get().expect("set just now or before")
    }

    /// Bytes of the thread-slot table in pages that have been written: up
    /// to the last slot ever claimed (slots are claimed lowest first, and the
    /// table is mapped untouched). The rest costs address space, not memory.
    fn slot_table_touched_bytes(&self) -> usize {
        let last = self.slots.iter().rposition(ThreadSlot::was_claimed);
        last.map_or(0, |i| ((i + 1) * std::mem::size_of::<ThreadSlot>()).next_multiple_of(4096))
    }

    /// Whether checked mode is on.
    #[inline]
    pub fn is_checked(&self) -> bool {
        self.mode.load(Relaxed) & CHECKED != 0
    }

    /// Whether frees may park chunks in thread caches: no mode flag set
    /// but HOOKED (a cached free shows the chunk to the hook first, see
    /// `thread_cache::free_sized`).
    #[inline]
    pub fn caching(&self) -> bool {
        self.mode.load(Relaxed) & !HOOKED == 0
    }

    /// One load for the free fast path: `None` when frees may not park
    /// chunks in thread caches, else whether a free hook must see them
    /// first.
    #[inline]
    pub fn cache_mode(&self) -> Option<bool> {
        let mode = self.mode.load(Relaxed);
        (mode & !HOOKED == 0).then_some(mode & HOOKED != 0)
    }

    /// Whether this is a forked child's copy of an exportable pool.
    #[inline]
    pub fn is_frozen(&self) -> bool {
        self.mode.load(Relaxed) & FROZEN != 0
    }

    /// Whether the pool's segments are shared memfd mappings.
    pub fn is_exportable(&self) -> bool {
        self.exportable
    }

    /// Fork child: freezes an exportable pool (see `fork`).
    pub(crate) fn freeze(&self) {
        self.mode.fetch_or(FROZEN, Relaxed);
    }

    /// Installs or removes the free hook. While one is installed, every
    /// free calls it once the free's checks passed: a sized free on its
    /// thread-cache path, any other in `free_special`. A free it declines
    /// goes on as usual (a cached one still parks in the thread cache).
    pub fn set_free_hook(&self, hook: Option<std::sync::Arc<dyn FreeHook>>) {
        let mut slot = self.hook.lock();
        if hook.is_some() {
            self.mode.fetch_or(HOOKED, Relaxed);
        } else {
            self.mode.fetch_and(!HOOKED, Relaxed);
        }
        *slot = hook;
    }

    /// The calling thread's shard: the one it is bound to, else its home.
    /// An unbound thread's home is the shard of the CPU it first allocates
    /// on, and it moves only when another thread holds it (see
    /// `lock_some_shard`). Following every CPU migration instead would
    /// spread one thread's buffers over all shards' nodes and turn its own
    /// frees into remote frees.
    #[inline]
    pub fn current_shard(&self) -> usize {
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

    // ----- allocation -------------------------------------------------

    /// Allocates `len` bytes at `align` (a power of two up to 4096).
    #[inline]
    pub fn alloc(&self, len: usize, align: usize) -> Option<NonNull<u8>> {
        let idx = self.current_shard();
        let shard = &self.shards[idx];
        if len <= MAX_ALLOC_BYTES
            && align <= MAX_ALIGN
            && align.is_power_of_two()
            && self.mode.load(Relaxed) & FROZEN == 0
        {
            if let Some(g) = shard.try_lock() {
                // The owner merges remote frees in a batch on its next alloc.
                let mut g = if shard.remote.is_empty() { g } else { self.drain_or_panic(g) };
                // SAFETY: we hold the shard; len and align are in range.
                if let Some(p) = unsafe { g.heap().alloc_fast(&self.segs, &shard.counters, len, align) } {
                    self.maintain(&mut g);
                    return Some(p);
                }
            }
        }
        self.alloc_slow(idx, len, align)
    }

    /// Everything but a plain hit in the current shard's lists. Cold because
    /// it runs once per new page node or segment, on contention, when remote
    /// frees are waiting, for runs, or at exhaustion.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, idx: usize, len: usize, align: usize) -> Option<NonNull<u8>> {
        let p = if self.is_frozen() || align > MAX_ALIGN || !align.is_power_of_two() {
            None
        } else if len > MAX_ALLOC_BYTES {
            self.alloc_run(len).or_else(|| {
                crate::reclaim::reclaim(self, idx, len, align);
                self.alloc_run(len)
            })
        } else {
            self.alloc_in_shards(idx, len, align)
        };
        if p.is_none() {
            self.shards[idx].counters.failed_allocs.fetch_add(1, Relaxed);
        }
        p
    }

    /// A node-sized or smaller request: the current shard, growing the pool
    /// if need be; then everything `reclaim` can gather.
    fn alloc_in_shards(&self, idx: usize, len: usize, align: usize) -> Option<NonNull<u8>> {
        let (held, g) = self.lock_some_shard(idx);
        let g = self.drain_or_panic(g);
        if let Some(p) = self.alloc_locked(g, len, align) {
            return Some(p);
        }
        // Exhausted: gather what caches, queues and other shards hold.
        let mut rounds = 0;
        while crate::reclaim::reclaim(self, held, len, align) {
            let g = self.drain_or_panic(self.shards[held].lock());
            if let Some(p) = self.alloc_locked(g, len, align) {
                return Some(p);
            }
            rounds += 1;
            if rounds == 4 {
                break;
            }
        }
        None
    }

    /// Tries the slow allocation in the shard `g` holds; consumes the guard.
    fn alloc_locked(&self, mut g: ShardGuard<'_>, len: usize, align: usize) -> Option<NonNull<u8>> {
        let shard = g.shard();
        // SAFETY: we hold the shard; len and align are in range.
        let p = unsafe { g.heap().alloc_slow(&self.segs, shard.index(), &shard.counters, len, align) };
        self.maintain(&mut g);
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

    /// Allocates `len` bytes (granule alignment) and, under the same shard
    /// acquisition, up to `extra.len()` more chunks of the same granule count
    /// from the free lists only (never growing the pool for them). Returns
    /// the chunk and how many extras were stored. The extras are accounted
    /// as allocated with their full granule length.
    pub(crate) fn alloc_batch(&self, len: usize, extra: &mut [*mut u8]) -> Option<(NonNull<u8>, usize)> {
        let idx = self.current_shard();
        let shard = &self.shards[idx];
        let Some(g) = shard.try_lock() else { return self.alloc(len, GRANULE).map(|p| (p, 0)) };
        let mut g = if shard.remote.is_empty() { g } else { self.drain_or_panic(g) };
        // SAFETY: we hold the shard; len is within the small range.
        let Some(first) = (unsafe { g.heap().alloc_fast(&self.segs, &shard.counters, len, GRANULE) }) else {
            drop(g);
            return self.alloc_slow(idx, len, GRANULE).map(|p| (p, 0));
        };
        // SAFETY: as above; thread caches only hold chunks up to 64 granules.
        let n = unsafe { g.heap().alloc_run(&self.segs, &shard.counters, granules_for(len), extra) };
        self.maintain(&mut g);
        Some((first, n))
    }

    /// The purge check of the shard `g` holds, on its slow paths (see
    /// `purge`): a few loads and a branch while nothing wholly free waits,
    /// or when purging is off.
    #[inline]
    fn maintain(&self, g: &mut ShardGuard<'_>) {
        if self.segs.purging() && (g.heap().purge_pending() || self.segs.parked_dirty()) {
            self.maintain_slow(g);
        }
    }

    /// Every `purge::PURGE_TICKS`-th call: reads the clock, and gives back
    /// the pages of what has stayed wholly free for the purge delay.
    #[cold]
    #[inline(never)]
    fn maintain_slow(&self, g: &mut ShardGuard<'_>) {
        if !g.heap().purge_tick() {
            return;
        }
        let now = self.segs.now_ms();
        // SAFETY: we hold the shard.
        unsafe { g.heap().purge_whole(&self.segs, now, self.segs.purge_delay_ms()) };
        self.segs.purge_parked_due(now);
    }

    // ----- free -------------------------------------------------------

    /// Drains the remote frees of the shard `g` holds. Chunks of nodes that
    /// moved to another shard are forwarded to its queue. Returns the guard,
    /// or panics (after releasing it) on the first invalid chunk found.
    pub(crate) fn drain_or_panic<'a>(&'a self, mut g: ShardGuard<'a>) -> ShardGuard<'a> {
        match self.drain(&mut g) {
            Ok(()) => g,
            Err((ptr, why)) => {
                drop(g);
                invalid_free(ptr, why)
            }
        }
    }

    /// Drains the remote frees of the shard `g` holds; see
    /// [`PoolInner::drain_or_panic`]. Every chunk is processed; the first
    /// invalid one is returned.
    pub(crate) fn drain(&self, g: &mut ShardGuard<'_>) -> Result<(), (*mut u8, FreeError)> {
        let idx = g.shard().index();
        let mut node = g.shard().remote.take_all();
        let mut drained = 0i64;
        let mut first_err = None;
        while !node.is_null() {
            // SAFETY: queued chunks are live chunks given up by their freeing
            // thread; the link words are theirs and were published by the
            // push's release CAS, which our acquire swap saw.
            let link = unsafe { RemoteQueue::link(node) };
            // The next node was written by another thread, most likely on
            // another core: start fetching it while this one merges, so
            // the walk does not pay one cross-core miss after another.
            crate::sync::prefetch(link.next);
            let ptr = node.cast::<u8>();
            let len = (link.len != usize::MAX).then_some(link.len);
            // SAFETY: as above; the chunk is at least 32 bytes.
            unsafe { mark::clear(ptr) };
            let result = match self.locate(ptr) {
                Ok(Located::Owned(loc, owner)) if owner == idx => {
                    drained += 1;
                    self.free_in_shard(g, loc, ptr, len)
                }
                Ok(Located::Owned(_, owner)) => {
                    // The node moved to `owner` after the push: forward.
                    // SAFETY: the chunk is live and unqueued again.
                    unsafe { self.shards[owner].remote.push(ptr, link.len, self.key.mark(Parked::Remote(owner))) };
                    Ok(())
                }
                Ok(Located::Unowned(loc)) => Err(self.not_a_chunk_reason(loc)),
                Err(why) => Err(why),
            };
            if let Err(why) = result {
                first_err.get_or_insert((ptr, why));
            }
            node = link.next;
        }
        if drained > 0 {
            bump(&g.shard().counters.remote_drained, drained);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Frees a checked chunk of the shard `g` holds: verifies the start bit
    /// and the length, poisons in checked mode, and parks (quick cache) or
    /// merges. The caller must not hold the chunk's mark.
    fn free_in_shard(
        &self,
        g: &mut ShardGuard<'_>,
        loc: Loc,
        ptr: *mut u8,
        len: Option<usize>,
    ) -> Result<(), FreeError> {
        let granules = self.chunk_len(loc, len)?;
        let checked = self.is_checked();
        if checked {
            // SAFETY: the chunk is live and being freed by its owner.
            unsafe { ptr.write_bytes(POISON, granules * GRANULE) };
        }
        let shard = g.shard();
        let park = (!checked).then(|| self.key.mark(Parked::Quick(shard.index())));
        // SAFETY: `loc` starts a live, unmarked chunk of `granules` in this
        // shard (checked above; the caller holds the shard, which owns it).
        let whole = unsafe { g.heap().free(&self.segs, &shard.counters, loc, granules, park) };
        if whole {
            self.segs.release(loc.seg, true);
        }
        Ok(())
    }

    /// The granule count of the chunk at `loc`, checked: it must start a
    /// chunk, and `len` (a `free_sized` length) must match it.
    #[inline]
    fn chunk_len(&self, loc: Loc, len: Option<usize>) -> Result<usize, FreeError> {
        let m = self.segs.meta(loc.seg);
        if !bitmap::test(&m.start, loc.granule) {
            return Err(self.not_a_chunk_reason(loc));
        }
        let granules = m.chunk_granules_settled(loc.granule);
        match len {
            Some(len) if granules_for(len) != granules => {
                Err(FreeError::WrongSize { len, chunk_bytes: granules * GRANULE })
            }
            _ => Ok(granules),
        }
    }

    /// Whether `loc` is the start of a chunk (a live or parked one).
    #[inline]
    pub fn is_chunk_start(&self, loc: Loc) -> bool {
        bitmap::test(&self.segs.meta(loc.seg).start, loc.granule)
    }

    /// Why `loc` is not a chunk start. Cold.
    #[cold]
    fn not_a_chunk_reason(&self, loc: Loc) -> FreeError {
        let m = self.segs.meta(loc.seg);
        match self.segs.state(loc.seg) {
            SegmentState::Owned if !bitmap::test(&m.free, loc.granule) => FreeError::Interior,
            SegmentState::Run if loc.granule != 0 || self.segs.run(loc.seg).is_none() => FreeError::Interior,
            _ => FreeError::DoubleFree,
        }
    }

    /// Panics for a pointer that is not a chunk start (no lock held).
    #[cold]
    #[inline(never)]
    pub fn not_a_chunk(&self, ptr: *mut u8, loc: Loc) -> ! {
        invalid_free(ptr, self.not_a_chunk_reason(loc))
    }

    /// Locates a pointer being freed or resized: its node and owner shard.
    #[inline]
    fn locate(&self, ptr: *mut u8) -> Result<Located, FreeError> {
        let Some(loc) = Loc::of(&self.segs, ptr as usize) else { return Err(FreeError::NotInPool) };
        if ptr as usize & (GRANULE - 1) != 0 {
            return Err(FreeError::Interior);
        }
        let owner = self.segs.meta(loc.seg).owner.load(Acquire);
        if owner == NO_OWNER {
            return Ok(Located::Unowned(loc));
        }
        Ok(Located::Owned(loc, owner as usize - 1))
    }

    /// Frees `ptr`; `len` is the `free_sized` length when known.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool, not used afterwards.
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>, len: Option<usize>) {
        let ptr = ptr.as_ptr();
        let mode = self.mode.load(Relaxed);
        if mode & (FROZEN | HOOKED) != 0 {
            // SAFETY: forwarded from the caller.
            return unsafe { self.free_special(ptr, len, mode) };
        }
        let (loc, owner) = match self.locate(ptr) {
            Ok(Located::Owned(loc, owner)) => (loc, owner),
            Ok(Located::Unowned(loc)) => return self.free_unowned(ptr, loc, len),
            Err(why) => invalid_free(ptr, why),
        };
        if !self.is_chunk_start(loc) {
            self.not_a_chunk(ptr, loc);
        }
        // SAFETY: a chunk start in an owned (mapped) node: 32 bytes of ours.
        if let Some(at) = self.key.decode(unsafe { mark::read(ptr) }) {
            self.confirm_parked(ptr, at);
        }
        if mode == 0 && owner == self.current_shard() {
            if let Some(mut g) = self.shards[owner].try_lock() {
                if self.segs.meta(loc.seg).owner.load(Relaxed) as usize == owner + 1 {
                    if let Err(why) = self.free_in_shard(&mut g, loc, ptr, len) {
                        drop(g);
                        invalid_free(ptr, why);
                    }
                    self.maintain(&mut g);
                    if !g.shard().remote.is_empty() {
                        self.drain_or_panic(g);
                    }
                    return;
                }
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.free_slow(ptr, len) }
    }

    /// A free while the pool is frozen (a forked child of an exportable
    /// pool: the chunk's memory is shared with the parent, which still owns
    /// it, so nothing is touched) or hooked (the hook may postpone it).
    ///
    /// # Safety
    /// As for [`PoolInner::free`].
    #[cold]
    #[inline(never)]
    unsafe fn free_special(&self, ptr: *mut u8, len: Option<usize>, mode: u8) {
        if mode & FROZEN != 0 {
            return;
        }
        let loc = match self.locate(ptr) {
            Ok(Located::Owned(loc, _)) => {
                if !self.is_chunk_start(loc) {
                    self.not_a_chunk(ptr, loc);
                }
                // SAFETY: a chunk start in an owned node: 32 bytes of ours.
                if let Some(at) = self.key.decode(unsafe { mark::read(ptr) }) {
                    self.confirm_parked(ptr, at);
                }
                None
            }
            Ok(Located::Unowned(loc)) => {
                if self.segs.run(loc.seg).is_none() || loc.granule != 0 {
                    self.not_a_chunk(ptr, loc);
                }
                Some(loc)
            }
            Err(why) => invalid_free(ptr, why),
        };
        // SAFETY: `ptr` passed the checks above: a live chunk start.
        if unsafe { self.offer_to_hook(ptr, len) } {
            return; // postponed: still allocated, the hook's owner frees it
        }
        match loc {
            Some(loc) => self.free_unowned(ptr, loc, len),
            // SAFETY: forwarded from the caller; the chunk is unmarked.
            None => unsafe { self.free_slow(ptr, len) },
        }
    }

    /// Shows a free to the hook, if one is installed; true if it postponed
    /// the free (the chunk stays allocated). Called with no shard held, so
    /// the hook may take its own locks. The hook runs under the hook's lock
    /// (two atomic operations per free, where cloning the `Arc` out cost
    /// four), which is why it must not free into this pool (see
    /// [`FreeHook`]).
    ///
    /// # Safety
    /// `ptr` must be a live chunk start that passed the free's checks
    /// (double free, interior pointer).
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn offer_to_hook(&self, ptr: *mut u8, len: Option<usize>) -> bool {
        let hook = self.hook.lock();
        // SAFETY: the caller passes a chunk start, which is not null.
        hook.as_ref().is_some_and(|h| h.on_free(unsafe { NonNull::new_unchecked(ptr) }, len))
    }

    /// The shard way of a free the hook was shown and declined (so it is
    /// not shown again); returns true.
    ///
    /// # Safety
    /// As for [`PoolInner::free`]; the chunk passed the free's checks.
    #[cold]
    pub(crate) unsafe fn free_declined(&self, ptr: *mut u8, len: usize) -> bool {
        // SAFETY: forwarded from the caller; a node chunk (the thread-cache
        // path only takes node chunk starts).
        unsafe { self.free_slow(ptr, Some(len)) };
        true
    }

    /// Completes a free that the hook postponed (the hook is bypassed).
    ///
    /// # Safety
    /// `ptr` must be a chunk whose free the hook postponed, freed once here.
    pub unsafe fn free_postponed(&self, ptr: NonNull<u8>, len: Option<usize>) {
        // SAFETY: forwarded: a live, unmarked chunk (a postponed chunk was
        // checked when it was freed and has been held since).
        unsafe { self.free_slow(ptr.as_ptr(), len) }
    }

    /// Frees a chunk taken out of a thread cache: unmarked, of `granules`,
    /// checked when it was parked (the shard path checks it again).
    ///
    /// # Safety
    /// `ptr` must be a live, unmarked chunk of this pool, given up.
    pub(crate) unsafe fn free_trusted(&self, ptr: NonNull<u8>, granules: usize) {
        // SAFETY: forwarded; the mark check would find no mark.
        unsafe { self.free_slow(ptr.as_ptr(), Some(granules * GRANULE)) }
    }

    /// Frees chunks of `granules` each (from a thread cache that overflowed)
    /// under one acquisition of the current shard; chunks of other shards go
    /// to their owners' remote queues.
    ///
    /// # Safety
    /// Every pointer must be a live, unmarked chunk of this pool of
    /// `granules`, given up.
    pub(crate) unsafe fn free_batch(&self, chunks: &[*mut u8], granules: usize) {
        let idx = self.current_shard();
        let len = granules * GRANULE;
        let Some(mut g) = self.shards[idx].try_lock() else {
            for &p in chunks {
                // SAFETY: forwarded from the caller.
                unsafe { self.free_slow(p, Some(len)) };
            }
            return;
        };
        let mut first_err = None;
        // Chunks freed back to back (in address order or its reverse, as a
        // thread cache's LIFO stack hands back a burst freed in order) are
        // gathered into one run and merged once (`Heap::free_adjacent`).
        // Only a batch whose first two chunks are neighbours is treated so:
        // chunks freed in random order rarely are, and they keep the
        // one-by-one path, which costs less per chunk.
        let gather = !self.is_checked() && chunks.len() > 1 && (chunks[1] as usize).abs_diff(chunks[0] as usize) == len;
        let mut run = Run::default();
        let (mut remote, mut remote_owner) = (Chain::default(), 0);
        for &p in chunks {
            match self.locate(p) {
                // The owner cannot change under us: moving a node away from
                // shard `idx` needs `idx`'s lock, which we hold.
                Ok(Located::Owned(loc, owner)) if owner == idx && gather => match self.chunk_len(loc, Some(len)) {
                    Ok(_) if run.extends(&self.segs, loc, granules) => {}
                    Ok(_) => {
                        self.free_run(&mut g, &run, granules);
                        run = Run::start(loc);
                    }
                    Err(why) => {
                        first_err.get_or_insert((p, why));
                    }
                },
                Ok(Located::Owned(loc, owner)) if owner == idx => {
                    if let Err(why) = self.free_in_shard(&mut g, loc, p, Some(len)) {
                        first_err.get_or_insert((p, why));
                    }
                }
                // Chunks of another shard are linked into one chain per
                // owner in a row and pushed with one CAS (`push_chain`).
                Ok(Located::Owned(_, owner)) => {
                    if remote_owner != owner && !remote.is_empty() {
                        // SAFETY: the chain holds chunks of `remote_owner` only.
                        unsafe { self.shards[remote_owner].remote.push_chain(&remote) };
                        remote = Chain::default();
                    }
                    remote_owner = owner;
                    // SAFETY: the caller gives the live chunk up.
                    unsafe { remote.add(p, len, self.key.mark(Parked::Remote(owner))) };
                }
                Ok(Located::Unowned(loc)) => {
                    first_err.get_or_insert((p, self.not_a_chunk_reason(loc)));
                }
                Err(why) => {
                    first_err.get_or_insert((p, why));
                }
            }
        }
        self.free_run(&mut g, &run, granules);
        if !remote.is_empty() {
            // SAFETY: the chain holds chunks of `remote_owner` only.
            unsafe { self.shards[remote_owner].remote.push_chain(&remote) };
        }
        let drained = self.drain(&mut g);
        self.maintain(&mut g);
        drop(g);
        if let Some((p, why)) = first_err.or(drained.err()) {
            invalid_free(p, why);
        }
    }

    /// Frees the chunks of `run` (checked by [`PoolInner::free_batch`]).
    fn free_run(&self, g: &mut ShardGuard<'_>, run: &Run, granules: usize) {
        if run.count == 0 {
            return;
        }
        let shard = g.shard();
        let park = Some(self.key.mark(Parked::Quick(shard.index())));
        // SAFETY: `run` holds `count` live, unmarked, checked chunks of
        // `granules` back to back in one level region of a node this shard
        // owns (`Run::extends`), given up by the caller of `free_batch`.
        let whole =
            unsafe { g.heap().free_adjacent(&self.segs, &shard.counters, run.first, granules, run.count, park) };
        if whole {
            self.segs.release(run.first.seg, true);
        }
    }

    /// A free that cannot merge right here: a mode flag, a busy owner, or a
    /// chunk owned by another shard. Pushes to the owner's remote queue
    /// unless this thread can take the owner's shard.
    ///
    /// # Safety
    /// As for [`PoolInner::free`]; the chunk carries no mark.
    #[cold]
    #[inline(never)]
    unsafe fn free_slow(&self, ptr: *mut u8, len: Option<usize>) {
        if self.is_frozen() {
            // The memory is the parent's: leave it alone (see `fork`).
            return;
        }
        loop {
            let (loc, owner) = match self.locate(ptr) {
                Ok(Located::Owned(loc, owner)) => (loc, owner),
                Ok(Located::Unowned(loc)) => return self.free_unowned(ptr, loc, len),
                Err(why) => invalid_free(ptr, why),
            };
            if self.is_checked() && !self.is_chunk_start(loc) {
                // Validate on the freeing thread, so the panic names the
                // culprit, not the owner that drains later. Only the start
                // bit: a live chunk's own bits are stable without the
                // owner's lock, but its length is found by scanning up to
                // the next chunk, whose bits the owner may be changing (the
                // owner checks the length under its lock).
                self.not_a_chunk(ptr, loc);
            }
            let shard = &self.shards[owner];
            if owner == self.current_shard() {
                if let Some(mut g) = shard.try_lock() {
                    if self.segs.meta(loc.seg).owner.load(Relaxed) as usize != owner + 1 {
                        continue; // the node moved meanwhile
                    }
                    let freed = self.free_in_shard(&mut g, loc, ptr, len);
                    let drained = if g.shard().remote.is_empty() { Ok(()) } else { self.drain(&mut g) };
                    drop(g);
                    if let Err(why) = freed {
                        invalid_free(ptr, why);
                    }
                    if let Err((p, why)) = drained {
                        invalid_free(p, why);
                    }
                    return;
                }
            }
            // SAFETY: the caller gives the live chunk up; it is granule
            // aligned and at least 32 bytes.
            unsafe { shard.remote.push(ptr, len.unwrap_or(usize::MAX), self.key.mark(Parked::Remote(owner))) };
            return;
        }
    }

    /// The cold path of a free whose chunk is marked parked: looks where the
    /// mark says the chunk is parked. Found there, it is a double free and
    /// this panics; not found, the mark was user data and the free goes on.
    /// No shard lock may be held by the caller.
    #[cold]
    #[inline(never)]
    pub fn confirm_parked(&self, ptr: *mut u8, at: Parked) {
        let mut at = at;
        for _ in 0..4 {
            let found = match at {
                Parked::ThreadSlot(i) if i < self.slots.len() => {
                    let slot = &self.slots[i];
                    slot.steal_begin();
                    thread_slot::wait_owners(std::iter::once(slot));
                    let mut found = false;
                    slot.for_each(|c, _| found |= c == ptr);
                    slot.steal_end();
                    found
                }
                Parked::Quick(j) if j < self.shards.len() => {
                    let mut g = self.shards[j].lock();
                    let heap = g.heap();
                    heap.quick().contains(ptr)
                        || Loc::of(&self.segs, ptr as usize).is_some_and(|loc| {
                            // SAFETY: we hold shard `j`; the walk only reads
                            // the chain of the page `ptr` lies in, if that
                            // page's record names one of shard `j`'s.
                            self.segs.meta(loc.seg).owner.load(Acquire) == j as u32 + 1
                                && unsafe { heap.pending().contains(&self.segs, loc.seg, loc.granule) }
                        })
                }
                Parked::Remote(j) if j < self.shards.len() => {
                    // Drain the queue it claims to be on; if it was there, it
                    // is now cached or merged, and the next round sees that.
                    let g = self.drain_or_panic(self.shards[j].lock());
                    drop(g);
                    let Some(loc) = Loc::of(&self.segs, ptr as usize) else { return };
                    if !self.is_chunk_start(loc) {
                        invalid_free(ptr, FreeError::QueuedTwice);
                    }
                    // SAFETY: still a chunk start in a mapped node.
                    let now = self.key.decode(unsafe { mark::read(ptr) });
                    match now {
                        Some(next) if next != at => {
                            at = next;
                            continue;
                        }
                        // Still marked for the same queue after a drain: it
                        // was never there (user data), or a racing free.
                        _ => return,
                    }
                }
                _ => false,
            };
            if found {
                invalid_free(ptr, FreeError::DoubleFree);
            }
            return;
        }
    }

    // ----- resizing and queries ----------------------------------------

    /// Runs `f` on the owning shard's heap with the shard held (cold paths:
    /// resizing and size queries). `Err` carries a run's head instead.
    fn with_owner<R>(
        &self,
        ptr: *mut u8,
        f: impl FnOnce(&mut ShardGuard<'_>, Loc, usize) -> Result<R, FreeError>,
    ) -> Result<R, usize> {
        loop {
            let (loc, owner) = match self.locate(ptr) {
                Ok(Located::Owned(loc, owner)) => (loc, owner),
                Ok(Located::Unowned(loc)) => match self.segs.run(loc.seg) {
                    Some(_) if loc.granule == 0 => return Err(loc.seg),
                    _ => self.not_a_chunk(ptr, loc),
                },
                Err(why) => invalid_free(ptr, why),
            };
            let mut g = self.shards[owner].lock();
            if self.segs.meta(loc.seg).owner.load(Relaxed) as usize != owner + 1 {
                continue; // the node moved meanwhile
            }
            let result = self.chunk_len(loc, None).and_then(|granules| f(&mut g, loc, granules));
            drop(g);
            return Ok(result.unwrap_or_else(|why| invalid_free(ptr, why)));
        }
    }

    /// Shrinks in place; the tail returns to the pool. Panics if `new_len`
    /// would grow the chunk.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool.
    pub unsafe fn shrink(&self, ptr: NonNull<u8>, new_len: usize) {
        if self.is_frozen() {
            return;
        }
        let grows = self.with_owner(ptr.as_ptr(), |g, loc, granules| {
            if granules_for(new_len) > granules {
                return Ok(Some(granules));
            }
            let c = &g.shard().counters;
            // SAFETY: we hold the owner; `loc` starts a live chunk of `granules`.
            unsafe { g.heap().shrink(&self.segs, c, loc, granules, new_len) };
            Ok(None)
        });
        match grows {
            Ok(None) => {}
            Ok(Some(granules)) => {
                panic!("nta-core: shrink of {ptr:p} to {new_len} bytes would grow its {} bytes", granules * GRANULE)
            }
            Err(head) => {
                if !self.resize_run(head, new_len, true) {
                    panic!("nta-core: shrink of {ptr:p} to {new_len} bytes would grow it");
                }
            }
        }
    }

    /// Grows in place into a free right neighbour (or shrinks, if `new_len`
    /// is smaller). False, changing nothing, when there is no room.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool.
    pub unsafe fn try_grow(&self, ptr: NonNull<u8>, new_len: usize) -> bool {
        if self.is_frozen() {
            return false;
        }
        let result = self.with_owner(ptr.as_ptr(), |g, loc, granules| {
            if new_len > MAX_ALLOC_BYTES {
                return Ok(false);
            }
            let c = &g.shard().counters;
            if granules_for(new_len) < granules {
                // SAFETY: we hold the owner; the chunk is live.
                unsafe { g.heap().shrink(&self.segs, c, loc, granules, new_len) };
                return Ok(true);
            }
            // SAFETY: as above.
            Ok(unsafe { g.heap().try_grow(&self.segs, c, loc, granules, new_len) })
        });
        match result {
            Ok(done) => done,
            Err(head) => self.resize_run(head, new_len, false),
        }
    }

    /// Usable size of a live chunk: its length rounded up to granules.
    ///
    /// # Safety
    /// `ptr` must be a live chunk of this pool.
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        match self.with_owner(ptr.as_ptr(), |_, _, granules| Ok(granules * GRANULE)) {
            Ok(bytes) => bytes,
            Err(head) => self.segs.run(head).map_or(0, |(_, len)| granules_for(len) * GRANULE),
        }
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

    // ----- maintenance -------------------------------------------------

    /// Flushes the calling thread's cache for this pool, drains every
    /// shard's remote-free queue and merges every chunk held in the shards'
    /// quick caches or pending on their page nodes, now. (Other threads'
    /// caches are flushed by those threads, when they exit, or by an
    /// allocation that would fail.)
    pub fn collect(&self) {
        if self.is_frozen() {
            return;
        }
        thread_cache::flush_current(self);
        for shard in self.shards.iter() {
            let mut g = self.drain_or_panic(shard.lock());
            // SAFETY: we hold the shard.
            unsafe { g.heap().flush_deferred(&self.segs, &shard.counters) };
        }
    }

    /// Gives back the pages of every parked segment that stays mapped and
    /// inside every free extent of every shard (decay, `Pool::trim`; see
    /// [`crate::heap::Heap::discard_free`]). Returns the bytes given back.
    pub(crate) fn discard_free(&self) -> usize {
        if self.is_frozen() {
            return 0;
        }
        let mut bytes = self.segs.discard_parked();
        for shard in self.shards.iter() {
            let mut g = self.drain_or_panic(shard.lock());
            // SAFETY: we hold the shard.
            bytes += unsafe { g.heap().discard_free(&self.segs) };
        }
        bytes
    }

    /// Locks every shard, in index order (cold: stats and validation).
    pub(crate) fn lock_all(&self) -> Vec<ShardGuard<'_>> {
        self.shards.iter().map(Shard::lock).collect()
    }

    /// Allocations plus frees so far, summed without a lock (the decay
    /// thread's sign of activity; it only compares two readings).
    pub(crate) fn op_count(&self) -> u64 {
        let shards = self.shards.iter().map(|s| &s.counters).map(|c| (c.allocs.load(Relaxed), c.frees.load(Relaxed)));
        let slots = self.slots.iter().map(|s| &s.counters).map(|c| (c.allocs.load(Relaxed), c.frees.load(Relaxed)));
        let r = self.segs.runs();
        let runs = std::iter::once((r.allocs.load(Relaxed), r.frees.load(Relaxed)));
        shards.chain(slots).chain(runs).fold(0u64, |n, (a, f)| n.wrapping_add(a).wrapping_add(f))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut st = Stats::default();
        let mut largest = 0;
        let frozen = self.is_frozen();
        for shard in self.shards.iter() {
            let c = &shard.counters;
            // In-use and op counters are deltas that move between shards
            // and thread slots, so they are summed with wrapping.
            st.in_use_bytes =
                st.in_use_bytes.wrapping_add(c.in_use_granules.load(Relaxed).wrapping_mul(GRANULE as u64));
            st.allocs = st.allocs.wrapping_add(c.allocs.load(Relaxed));
            st.frees = st.frees.wrapping_add(c.frees.load(Relaxed));
            st.page_nodes += c.page_nodes.load(Relaxed);
            st.remote_frees_drained += c.remote_drained.load(Relaxed);
            st.remote_frees_queued += shard.remote.pushed();
            st.failed_allocs += c.failed_allocs.load(Relaxed);
            if !frozen {
                // (In a forked child a dead thread may hold the lock.)
                let mut g = shard.lock();
                largest = largest.max(g.heap().largest_free() * GRANULE);
                st.cached_bytes += g.heap().quick().bytes() as u64;
                st.pending_bytes += g.heap().pending().bytes() as u64;
            }
        }
        for slot in self.slots.iter() {
            let c = &slot.counters;
            st.in_use_bytes =
                st.in_use_bytes.wrapping_add(c.in_use_granules.load(Relaxed).wrapping_mul(GRANULE as u64));
            st.allocs = st.allocs.wrapping_add(c.allocs.load(Relaxed));
            st.frees = st.frees.wrapping_add(c.frees.load(Relaxed));
            st.thread_cached_bytes += slot.bytes() as u64;
        }
        let r = self.segs.runs();
        st.in_use_bytes = st.in_use_bytes.wrapping_add(r.in_use_bytes.load(Relaxed));
        st.allocs = st.allocs.wrapping_add(r.allocs.load(Relaxed));
        st.frees = st.frees.wrapping_add(r.frees.load(Relaxed));
        st.runs = r.runs.load(Relaxed);
        if self.segs.has_free() {
            largest = largest.max(HUGE_NODE_BYTES);
        }
        st.mapped_bytes = self.segs.mapped_bytes() as u64;
        st.discarded_bytes = self.segs.discarded_bytes();
        st.free_bytes = st.mapped_bytes.saturating_sub(st.in_use_bytes);
        st.largest_free_bytes = largest as u64;
        st.metadata_bytes =
            (self.segs.metadata_bytes() + self.shards.mapped_bytes() + self.slot_table_touched_bytes()) as u64;
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

    /// Takes every lock a fork must not copy half-held (fork `prepare`):
    /// every shard, the segment table, and every thread slot (taken over as
    /// `validate` does, so that no owner is inside a busy section when the
    /// process is copied; shards first, as the slot protocol requires).
    pub(crate) fn lock_for_fork(&self) {
        for shard in self.shards.iter() {
            shard.lock_for_fork();
        }
        self.segs.lock_for_fork();
        for slot in self.slots.iter() {
            slot.steal_begin();
        }
        thread_slot::wait_owners(self.slots.iter());
    }

    /// Releases what [`PoolInner::lock_for_fork`] took.
    ///
    /// # Safety
    /// Only in the fork `parent` and `child` handlers after `lock_for_fork`.
    pub(crate) unsafe fn unlock_for_fork(&self) {
        for slot in self.slots.iter() {
            slot.steal_end();
        }
        // SAFETY: per the caller.
        unsafe {
            self.segs.unlock_for_fork();
            for shard in self.shards.iter() {
                shard.unlock_for_fork();
            }
        }
    }
}

/// Chunks of one size freed back to back, gathered by
/// [`PoolInner::free_batch`]: `count` chunks from `first` up, in one level
/// region of one segment.
#[derive(Default)]
struct Run {
    first: Loc,
    count: usize,
}

impl Run {
    /// A run of the one chunk at `loc`.
    fn start(loc: Loc) -> Run {
        Run { first: loc, count: 1 }
    }

    /// Adds the chunk at `loc` of `g` granules if it borders the run (right
    /// after its end, or right before its start) in the same level region.
    #[inline]
    fn extends(&mut self, segs: &crate::segment::Segments, loc: Loc, g: usize) -> bool {
        if self.count == 0 || loc.seg != self.first.seg {
            return false;
        }
        let after = loc.granule == self.first.granule + self.count * g;
        let before = loc.granule + g == self.first.granule;
        // Only neighbours pay for the level check.
        if !(after || before) {
            return false;
        }
        let m = segs.meta(loc.seg);
        if m.level_bounds(loc.granule) != m.level_bounds(self.first.granule) {
            return false;
        }
        if before {
            self.first = loc;
        }
        self.count += 1;
        true
    }
}
