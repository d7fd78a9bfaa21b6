//! Thread caches: the allocation fast path without any atomic
//! read-modify-write.
//!
//! The shard try-lock costs a locked `xchg` per operation, which is most of
//! a cached alloc/free pair. So each thread keeps, per pool it uses, a small
//! LIFO stack of freed chunks per exact granule count in a *slot* of that
//! pool (mimalloc's thread-local free lists and glibc's tcache play the same
//! role). `free_sized` of a chunk up to [`TC_MAX_GRANULES`] pushes it there;
//! an allocation of that exact size pops it. Only the owning thread touches
//! a slot's stacks, with plain loads and stores.
//!
//! # Why slots live in the pool
//!
//! A slot is in the pool's own metadata, not in thread-local storage, so
//! `stats()` can sum its counters (each written only by its thread, read by
//! anyone with relaxed loads) and `validate()` can account for the chunks
//! it holds. The thread-local side is a tiny most-recently-used table of
//! (pool, slot) pairs, which also keeps each pool alive while its slot holds
//! chunks.
//!
//! # Bounds and flushing
//!
//! - at most [`TC_PER_CLASS`] chunks per size and [`TC_MAX_BYTES`] per
//!   thread and pool; a free that does not fit goes the shard way;
//! - a thread's slot is flushed (its chunks freed for real, through their
//!   owner shards) by `Pool::collect` on that thread, when the thread uses
//!   more than [`TC_POOLS`] pools (least recently used first), and when the
//!   thread exits;
//! - frees without a size, checked mode, and alignment above 32 bypass it.
//!
//! A cached chunk stays marked used in its node's bitmaps; the slot's
//! counters already count it as free. The counters are deltas (a thread may
//! free chunks that another thread allocated), summed with wrapping
//! arithmetic.

use crate::granule::{granules_for, slack_for, GRANULE};
use crate::heap::Loc;
use crate::pool::PoolInner;
use crate::stats::{bump, Counters};
use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU16, AtomicUsize, Ordering::*};
use std::sync::Arc;

/// Largest chunk, in granules, a thread cache holds (2 KiB).
pub const TC_MAX_GRANULES: usize = 64;
/// Chunks cached per size per thread.
pub const TC_PER_CLASS: u16 = 64;
/// Bytes cached per thread and pool at most.
pub const TC_MAX_BYTES: usize = 256 << 10;
/// Chunks carved per refill when an allocation misses the thread cache.
pub const TC_REFILL: usize = 15;
/// Chunks handed back at once when a size's stack overflows.
pub const TC_FLUSH: usize = TC_PER_CLASS as usize / 2;
/// Pools a thread keeps a cache for at once.
pub const TC_POOLS: usize = 4;
/// Slots per pool (threads caching at once); further threads go the shard way.
pub const SLOTS: usize = 256;

/// One thread's cache in one pool.
#[derive(Debug)]
pub struct ThreadSlot {
    claimed: AtomicBool,
    heads: [AtomicPtr<u8>; TC_MAX_GRANULES + 1],
    counts: [AtomicU16; TC_MAX_GRANULES + 1],
    bytes: AtomicUsize,
    pub counters: Counters,
}

impl Default for ThreadSlot {
    fn default() -> Self {
        ThreadSlot {
            claimed: AtomicBool::new(false),
            heads: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            counts: std::array::from_fn(|_| AtomicU16::new(0)),
            bytes: AtomicUsize::new(0),
            counters: Counters::default(),
        }
    }
}

impl ThreadSlot {
    /// Claims a free slot of `slots` for the calling thread.
    pub fn claim(slots: &[ThreadSlot]) -> Option<&ThreadSlot> {
        slots.iter().find(|s| !s.claimed.load(Relaxed) && !s.claimed.swap(true, Acquire))
    }

    #[inline]
    fn pop(&self, g: usize) -> Option<*mut u8> {
        let head = self.heads[g].load(Relaxed);
        if head.is_null() {
            return None;
        }
        // SAFETY: cached chunks hold the next link in their first word, and
        // only the owning thread (us) pushes and pops.
        let next = unsafe { head.cast::<*mut u8>().read() };
        self.heads[g].store(next, Relaxed);
        self.counts[g].store(self.counts[g].load(Relaxed) - 1, Relaxed);
        self.bytes.store(self.bytes.load(Relaxed) - g * GRANULE, Relaxed);
        Some(head)
    }

    /// # Safety
    /// `chunk` is a live chunk of `g` granules of the slot's pool, given up.
    #[inline]
    unsafe fn push(&self, chunk: *mut u8, g: usize) -> bool {
        let count = self.counts[g].load(Relaxed);
        let bytes = self.bytes.load(Relaxed) + g * GRANULE;
        if count >= TC_PER_CLASS || bytes > TC_MAX_BYTES {
            return false;
        }
        // SAFETY: the chunk is ours and at least one granule long.
        unsafe { chunk.cast::<*mut u8>().write(self.heads[g].load(Relaxed)) };
        self.heads[g].store(chunk, Relaxed);
        self.counts[g].store(count + 1, Relaxed);
        self.bytes.store(bytes, Relaxed);
        true
    }

    /// Room for more chunks of `g` granules.
    fn room(&self, g: usize) -> usize {
        let by_count = (TC_PER_CLASS - self.counts[g].load(Relaxed)) as usize;
        let by_bytes = (TC_MAX_BYTES - self.bytes.load(Relaxed)) / (g * GRANULE);
        by_count.min(by_bytes)
    }

    /// Bytes cached.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }

    /// Calls `f(chunk, granules)` for every cached chunk. Only meaningful
    /// while the owning thread is not using the pool (validation at rest).
    pub fn for_each(&self, mut f: impl FnMut(*mut u8, usize)) {
        for (g, head) in self.heads.iter().enumerate() {
            let mut c = head.load(Acquire);
            while !c.is_null() {
                f(c, g);
                // SAFETY: as in `pop`.
                c = unsafe { c.cast::<*mut u8>().read() };
            }
        }
    }

    /// Frees every cached chunk for real and gives the slot up.
    fn flush_and_release(&self, pool: &PoolInner) {
        self.flush(pool);
        self.claimed.store(false, Release);
    }

    /// Frees every cached chunk for real, through its owner shard.
    fn flush(&self, pool: &PoolInner) {
        for g in 1..=TC_MAX_GRANULES {
            while let Some(p) = self.take_back(pool, g) {
                // SAFETY: the chunk is live (to the shards) and ours to free.
                unsafe { pool.free(NonNull::new_unchecked(p), Some(g * GRANULE)) };
            }
        }
    }

    /// Pops a cached chunk of `g` granules that is about to be freed for
    /// real. The slot counted it as free; this hands the count back, so the
    /// shard's free accounts for it exactly once.
    fn take_back(&self, pool: &PoolInner, g: usize) -> Option<*mut u8> {
        let p = self.pop(g)?;
        let segs = pool.segments();
        // SAFETY: cached chunks are chunks of this pool.
        let loc = unsafe { Loc::of(segs, p as usize).unwrap_unchecked() };
        let requested = g * GRANULE - segs.meta(loc.seg).slack[loc.granule].load(Relaxed) as usize;
        bump(&self.counters.in_use_granules, g as i64);
        bump(&self.counters.live_requested, requested as i64);
        bump(&self.counters.frees, -1);
        Some(p)
    }
}

/// A pool reference that keeps the pool alive while a thread caches for it.
#[derive(Debug, Clone)]
pub enum PoolRef {
    /// A `Pool` handle's pool, kept alive by the cache entry.
    Shared(Arc<PoolInner>),
    /// The global allocator's pool, which lives for the whole process.
    Static(&'static PoolInner),
}

impl PoolRef {
    fn inner(&self) -> &PoolInner {
        match self {
            PoolRef::Shared(a) => a,
            PoolRef::Static(p) => p,
        }
    }
}

struct Entry {
    key: *const PoolInner,
    slot: *const ThreadSlot,
    pool: PoolRef,
}

struct Caches {
    /// Most recently used first.
    entries: [Option<Entry>; TC_POOLS],
}

impl Drop for Caches {
    fn drop(&mut self) {
        for e in self.entries.iter_mut().filter_map(Option::take) {
            // SAFETY: `slot` lives in `e.pool`, which `e` keeps alive.
            unsafe { (*e.slot).flush_and_release(e.pool.inner()) };
        }
    }
}

thread_local! {
    static CACHES: UnsafeCell<Caches> = const { UnsafeCell::new(Caches { entries: [None, None, None, None] }) };
}

/// The calling thread's slot for `pool` if it is the most recently used.
#[inline]
fn mru_slot(pool: *const PoolInner) -> Option<&'static ThreadSlot> {
    CACHES
        .try_with(|c| {
            // SAFETY: only this thread touches its table, and no call out of
            // this module happens while the reference is live.
            let c = unsafe { &*c.get() };
            match &c.entries[0] {
                // SAFETY: the entry keeps the pool, and so the slot, alive for
                // as long as the thread-local lives; callers use the slot
                // only within the current call.
                Some(e) if e.key == pool => Some(unsafe { &*e.slot }),
                _ => None,
            }
        })
        .ok()
        .flatten()
}

/// Allocation fast path: a cached chunk of exactly the right size.
#[inline]
pub fn alloc(pool: &PoolInner, len: usize) -> Option<NonNull<u8>> {
    let g = granules_for(len);
    if g > TC_MAX_GRANULES {
        return None;
    }
    let slot = mru_slot(pool)?;
    let p = slot.pop(g)?;
    let segs = pool.segments();
    // SAFETY: cached chunks are chunks of this pool.
    let loc = unsafe { Loc::of(segs, p as usize).unwrap_unchecked() };
    segs.meta(loc.seg).slack[loc.granule].store(slack_for(len, g) as u8, Relaxed);
    let c = &slot.counters;
    bump(&c.in_use_granules, g as i64);
    bump(&c.live_requested, len as i64);
    bump(&c.allocs, 1);
    // SAFETY: inside a mapped segment, hence not null.
    Some(unsafe { NonNull::new_unchecked(p) })
}

/// Allocation miss path for small sizes: one chunk from the shard, plus up
/// to [`TC_REFILL`] more of the same size carved under the same shard
/// acquisition to stock the thread cache (mimalloc and tcache refill in
/// batches the same way). Falls back to a plain allocation when the size is
/// not cacheable or the thread has no slot.
#[inline(never)]
pub fn alloc_refill(inner: &PoolInner, pool: impl FnOnce() -> PoolRef, len: usize) -> Option<NonNull<u8>> {
    let g = granules_for(len);
    let slot = if g <= TC_MAX_GRANULES && !inner.is_checked() {
        match mru_slot(inner) {
            Some(s) => Some(s),
            None => register(pool()),
        }
    } else {
        None
    };
    let Some(slot) = slot else { return inner.alloc(len, GRANULE) };
    let mut extra = [ptr::null_mut(); TC_REFILL];
    let room = slot.room(g).min(TC_REFILL);
    let (first, n) = inner.alloc_batch(len, &mut extra[..room])?;
    let c = &slot.counters;
    for &p in &extra[..n] {
        // SAFETY: freshly carved chunks of `g` granules, ours; room was checked.
        let pushed = unsafe { slot.push(p, g) };
        debug_assert!(pushed);
    }
    // The extras were accounted as allocated with their full length; in the
    // cache they count as free.
    bump(&c.in_use_granules, -((n * g) as i64));
    bump(&c.live_requested, -((n * g * GRANULE) as i64));
    Some(first)
}

/// Free fast path for a chunk of known length. Returns false when the chunk
/// must go the shard way (too big, cache full, pointer not in the pool).
///
/// # Safety
/// `ptr` must be a live chunk of `pool`, allocated with a length that takes
/// the same granules as `len`, and not used afterwards.
#[inline]
pub unsafe fn free_sized(inner: &PoolInner, pool: impl FnOnce() -> PoolRef, ptr: NonNull<u8>, len: usize) -> bool {
    let g = granules_for(len);
    if g > TC_MAX_GRANULES || inner.is_checked() || ptr.as_ptr() as usize & (GRANULE - 1) != 0 {
        return false;
    }
    if !inner.contains(ptr.as_ptr()) {
        return false;
    }
    let slot = match mru_slot(inner) {
        Some(s) => s,
        None => match register(pool()) {
            Some(s) => s,
            None => return false,
        },
    };
    // `len` is the chunk's requested length (the caller's contract), so the
    // slack byte need not be read: one metadata cache line less per free.
    let requested = len;
    if slot.counts[g].load(Relaxed) >= TC_PER_CLASS {
        overflow(inner, slot, g);
    }
    // SAFETY: forwarded from the caller.
    if !unsafe { slot.push(ptr.as_ptr(), g) } {
        return false;
    }
    let c = &slot.counters;
    bump(&c.in_use_granules, -(g as i64));
    bump(&c.live_requested, -(requested as i64));
    bump(&c.frees, 1);
    true
}

/// Hands half of a full size's stack back to the shards in one batch.
#[cold]
#[inline(never)]
fn overflow(inner: &PoolInner, slot: &ThreadSlot, g: usize) {
    let mut batch = [ptr::null_mut(); TC_FLUSH];
    let mut n = 0;
    while n < TC_FLUSH {
        let Some(p) = slot.take_back(inner, g) else { break };
        batch[n] = p;
        n += 1;
    }
    // SAFETY: the popped chunks are live to the shards and ours to free.
    unsafe { inner.free_batch(&batch[..n], g) };
}

/// Makes `pool` the calling thread's most recently used pool, claiming a
/// slot if it has none there. Cold: once per thread and pool (or after an
/// eviction).
#[cold]
fn register(pool: PoolRef) -> Option<&'static ThreadSlot> {
    let key = pool.inner() as *const PoolInner;
    let evicted = CACHES
        .try_with(|c| {
            // SAFETY: only this thread touches its table; no call out of this
            // module happens while the reference is live.
            let c = unsafe { &mut *c.get() };
            if let Some(i) = c.entries.iter().position(|e| e.as_ref().is_some_and(|e| e.key == key)) {
                c.entries[..=i].rotate_right(1);
                return None;
            }
            let slot = ThreadSlot::claim(pool.inner().thread_slots())?;
            let old = c.entries[TC_POOLS - 1].take();
            c.entries.rotate_right(1);
            c.entries[0] = Some(Entry { key, slot, pool });
            old
        })
        .ok()?;
    if let Some(e) = evicted {
        // SAFETY: the evicted entry keeps its pool (and slot) alive until here.
        unsafe { (*e.slot).flush_and_release(e.pool.inner()) };
    }
    mru_slot(key)
}

/// Flushes the calling thread's slot for `pool`, if it has one.
pub fn flush_current(pool: &PoolInner) {
    let slot = CACHES
        .try_with(|c| {
            // SAFETY: as in `register`.
            let c = unsafe { &*c.get() };
            c.entries.iter().flatten().find(|e| ptr::eq(e.key, pool)).map(|e| e.slot)
        })
        .ok()
        .flatten();
    if let Some(slot) = slot {
        // SAFETY: the entry keeps the slot alive; this thread owns it.
        unsafe { (*slot).flush(pool) };
    }
}
