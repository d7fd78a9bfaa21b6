//! Thread caches: the allocation fast path without any atomic
//! read-modify-write.
//!
//! The shard try-lock costs a locked `xchg` per operation, which is most of
//! a cached alloc/free pair. So each thread keeps, per pool it uses, a small
//! LIFO stack of freed chunks per exact granule count in a *slot* of that
//! pool (mimalloc's thread-local free lists and glibc's tcache play the same
//! role; see `thread_slot` for the slot itself). `free_sized` of a chunk up
//! to [`TC_MAX_GRANULES`] parks it there; an allocation of that exact size
//! pops it.
//!
//! # Why slots live in the pool
//!
//! A slot is in the pool's own metadata, not in thread-local storage, so
//! `stats()` can sum its counters, `validate()` can account for the chunks
//! it holds, and an allocation about to fail can reclaim it (`reclaim`).
//! The thread-local side is a tiny most-recently-used table of
//! (pool, slot) entries, whose first entry is mirrored in a destructor-free
//! thread-local (`MRU`) that the fast paths read in one load. An entry
//! holds a *weak* reference: dropping the last `Pool` handle unmaps the
//! pool even while threads that cached for it live on. Such a stale entry is never matched again (its `Weak` keeps
//! the pool's `Arc` allocation, so no new pool can reuse the address), and
//! on eviction or thread exit `Weak::upgrade` fails and nothing is touched.
//!
//! # Checks on the fast path (see `mark`)
//!
//! A free reads the chunk's mark word (a parked chunk freed again is
//! confirmed and panics) and the chunk's start bit (a merged chunk freed
//! again, or an interior pointer, panics). An allocation clears the mark.
//!
//! # Bounds and flushing
//!
//! - at most [`TC_PER_CLASS`] chunks per size and
//!   [`TC_MAX_BYTES`](crate::thread_slot::TC_MAX_BYTES) per thread and
//!   pool; a free that does not fit hands half a stack back to the shards
//!   in one batch, then parks: its size's stack when that is full, else
//!   (the byte bound stopped it) the stack holding the most bytes;
//! - a thread's slot is flushed (its chunks freed for real, through their
//!   owner shards) by `Pool::collect` on that thread, when the thread uses
//!   more than [`TC_POOLS`] pools (least recently used first), when the
//!   thread exits, and by any thread whose allocation would otherwise fail;
//! - a free without a size parks too, its length read from the node's
//!   bitmaps without the owner's lock (see `node`);
//! - checked mode, alignment above 32 and pools in a forked child bypass
//!   it, and so does a free without a size while a free hook is installed.
//!
//! A parked chunk stays marked used in its node's bitmaps; the slot's
//! counters already count it as free. The counters are deltas (a thread may
//! free chunks that another thread allocated), summed with wrapping
//! arithmetic.

use crate::granule::{granules_for, GRANULE};
use crate::inner::PoolInner;
use crate::stats::bump;
pub use crate::thread_slot::{ThreadSlot, TC_MAX_GRANULES, TC_PER_CLASS};
use std::cell::{Cell, UnsafeCell};
use std::ptr::{self, NonNull};
use std::sync::{Arc, Weak};

/// Chunks carved per refill when an allocation misses the thread cache.
pub const TC_REFILL: usize = 15;
/// Chunks handed back at once when a size's stack overflows.
pub const TC_FLUSH: usize = TC_PER_CLASS as usize / 2;
/// Pools a thread keeps a cache for at once.
pub const TC_POOLS: usize = 4;

/// How a thread-cache entry refers to its pool.
#[derive(Debug, Clone)]
pub enum PoolRef {
    /// A `Pool` handle's pool: the entry does not keep it alive.
    Shared(Weak<PoolInner>),
    /// The global allocator's pool, which lives for the whole process.
    Static(&'static PoolInner),
}

/// A strong reference for the cold paths that touch an entry's slot.
enum Alive {
    Shared(Arc<PoolInner>),
    Static(&'static PoolInner),
}

impl Alive {
    fn inner(&self) -> &PoolInner {
        match self {
            Alive::Shared(a) => a,
            Alive::Static(p) => p,
        }
    }
}

impl PoolRef {
    fn upgrade(&self) -> Option<Alive> {
        match self {
            PoolRef::Shared(w) => w.upgrade().map(Alive::Shared),
            PoolRef::Static(p) => Some(Alive::Static(p)),
        }
    }
}

struct Entry {
    key: *const PoolInner,
    slot: *const ThreadSlot,
    pool: PoolRef,
}

impl Entry {
    /// Flushes and gives up the slot, if the pool is still alive.
    fn retire(self) {
        if let Some(alive) = self.pool.upgrade() {
            // SAFETY: the pool is alive (we hold a strong reference), so its
            // slot is too; this thread owns the slot.
            unsafe { flush_slot(alive.inner(), &*self.slot) };
            // SAFETY: as above.
            unsafe { (*self.slot).unclaim() };
        }
    }
}

struct Caches {
    /// Most recently used first.
    entries: [Option<Entry>; TC_POOLS],
}

impl Drop for Caches {
    fn drop(&mut self) {
        set_mru(ptr::null(), ptr::null());
        for e in self.entries.iter_mut().filter_map(Option::take) {
            e.retire();
        }
    }
}

thread_local! {
    static CACHES: UnsafeCell<Caches> = const { UnsafeCell::new(Caches { entries: [None, None, None, None] }) };
    /// A copy of `(key, slot)` of `CACHES.entries[0]`, or nulls: the fast
    /// paths' lookup. It has no destructor, so reaching it is one load at a
    /// fixed offset from the thread pointer, with none of the registration
    /// check that `CACHES` (which has one) costs on every access; and it
    /// stays readable while the thread's other thread-locals are destroyed.
    /// Invariant: it equals `entries[0]`'s key and slot whenever that entry
    /// exists, and is null otherwise (so its key, like the entry's, is kept
    /// from reuse by the entry's reference to the pool).
    static MRU: Cell<(*const PoolInner, *const ThreadSlot)> = const { Cell::new((ptr::null(), ptr::null())) };
}

fn set_mru(key: *const PoolInner, slot: *const ThreadSlot) {
    let _ = MRU.try_with(|m| m.set((key, slot)));
}

/// Copies `entries[0]` into `MRU` (after the table changed).
fn sync_mru(c: &Caches) {
    match &c.entries[0] {
        Some(e) => set_mru(e.key, e.slot),
        None => set_mru(ptr::null(), ptr::null()),
    }
}

/// The calling thread's slot for `pool` if it is the most recently used.
#[inline]
fn mru_slot(pool: *const PoolInner) -> Option<&'static ThreadSlot> {
    let (key, slot) = MRU.with(Cell::get);
    // SAFETY: `pool` is a live pool, never null, so a matching key is
    // `entries[0]`'s (invariant of `MRU`); the caller holds that pool
    // alive, and with it the slot; callers use the slot only within the
    // current call.
    (key == pool).then(|| unsafe { &*slot })
}

/// Allocation fast path: a cached chunk of exactly the right size.
#[inline]
pub fn alloc(pool: &PoolInner, len: usize) -> Option<NonNull<u8>> {
    let g = granules_for(len);
    if g > TC_MAX_GRANULES {
        return None;
    }
    let slot = mru_slot(pool)?;
    if !slot.enter() {
        return None;
    }
    let Some(p) = slot.pop(g) else {
        slot.leave();
        return None;
    };
    let c = &slot.counters;
    bump(&c.in_use_granules, g as i64);
    bump(&c.allocs, 1);
    slot.leave();
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
    let slot = if g <= TC_MAX_GRANULES && inner.caching() {
        match mru_slot(inner) {
            Some(s) => Some(s),
            None => register(pool()),
        }
    } else {
        None
    };
    let Some(slot) = slot else { return inner.alloc(len, GRANULE) };
    let mut extra = [ptr::null_mut(); TC_REFILL];
    let room = if slot.enter() {
        let room = slot.room(g).min(TC_REFILL);
        slot.leave();
        room
    } else {
        0
    };
    let (first, n) = inner.alloc_batch(len, &mut extra[..room])?;
    let mut pushed = 0;
    if n > 0 && slot.enter() {
        while pushed < n {
            // SAFETY: freshly carved chunks of `g` granules, ours.
            if !unsafe { slot.push(extra[pushed], g) } {
                break;
            }
            pushed += 1;
        }
        // The extras were accounted as allocated; in the cache they count
        // as free, and their allocation is counted when one is popped.
        let c = &slot.counters;
        bump(&c.in_use_granules, -((pushed * g) as i64));
        bump(&c.allocs, -(pushed as i64));
        slot.leave();
    }
    if pushed < n {
        // A thief took the slot meanwhile: the rest go back to the shards.
        // SAFETY: fresh chunks of `g` granules, unmarked, ours.
        unsafe { inner.free_batch(&extra[pushed..n], g) };
    }
    Some(first)
}

/// Free fast path for a chunk of known length. Returns false when the chunk
/// must go the shard way (too big, cache full, pointer not in the pool).
/// Panics on a double free (parked or merged chunk) or an interior pointer.
///
/// # Safety
/// `ptr` must be a live chunk of `pool`, allocated with a length that takes
/// the same granules as `len`, and not used afterwards.
#[inline]
pub unsafe fn free_sized(inner: &PoolInner, pool: impl FnOnce() -> PoolRef, ptr: NonNull<u8>, len: usize) -> bool {
    let g = granules_for(len);
    let p = ptr.as_ptr();
    // The checks below read the chunk's mark word, and parking writes its
    // first two words: start loading the line now, so that a chunk the
    // caller has not touched lately costs its miss alongside the slot and
    // bitmap lookups, not after them.
    crate::sync::prefetch(p);
    match inner.cache_mode() {
        // SAFETY: forwarded from the caller.
        Some(false) if g <= TC_MAX_GRANULES && p as usize & (GRANULE - 1) == 0 => unsafe {
            park_sized(inner, pool, p, g, len, false, false)
        },
        // SAFETY: forwarded from the caller.
        Some(true) => unsafe { free_sized_hooked(inner, pool, p, g, len) },
        _ => false,
    }
}

/// Free fast path for a chunk of unknown length ([`crate::Pool::free`]):
/// the length is read from the node's bitmaps without the owner's lock
/// (`NodeMeta::chunk_granules_unlocked`), then the chunk is checked and
/// parked as a sized free's is. Returns false when the chunk must go the
/// shard way: too big, owner busy, hook installed, or not a chunk start
/// (which the shard way diagnoses).
///
/// Out of line on purpose: inlined into a large caller (`Pool::free` in a
/// loop that also allocates), LLVM left the thread-local read of the
/// thread's slot (`mru_slot`) as two calls, `LocalKey::with` and the TLS
/// accessor behind it; in a function of its own that read is one load. P1
/// unsized/sized time 1.25 -> 1.14 (medians of six paired runs, 2026-12-07).
///
/// # Safety
/// `ptr` must be a live chunk of `pool`, not used afterwards.
#[inline(never)]
pub unsafe fn free_unsized(inner: &PoolInner, pool: impl FnOnce() -> PoolRef, ptr: NonNull<u8>) -> bool {
    let p = ptr.as_ptr();
    crate::sync::prefetch(p);
    if inner.cache_mode() != Some(false) || p as usize & (GRANULE - 1) != 0 {
        return false;
    }
    let Some(g) = inner.segments().live_chunk_granules(p as usize, TC_MAX_GRANULES) else {
        return false;
    };
    // SAFETY: forwarded from the caller; `g` is the chunk's granule count,
    // at most `TC_MAX_GRANULES`, `p` is granule aligned, and its start bit
    // was just seen set.
    unsafe { park_sized(inner, pool, p, g, g * GRANULE, false, true) }
}

/// [`free_sized`] without the free hook, whether one is installed or not:
/// the completion of a free the hook postponed.
///
/// # Safety
/// As for [`free_sized`].
pub unsafe fn free_sized_unhooked(
    inner: &PoolInner,
    pool: impl FnOnce() -> PoolRef,
    ptr: NonNull<u8>,
    len: usize,
) -> bool {
    let (g, p) = (granules_for(len), ptr.as_ptr());
    if inner.cache_mode().is_none() || g > TC_MAX_GRANULES || p as usize & (GRANULE - 1) != 0 {
        return false;
    }
    // SAFETY: forwarded from the caller.
    unsafe { park_sized(inner, pool, p, g, len, false, false) }
}

/// [`free_sized`] while a free hook is installed: the hook sees the free
/// before the chunk is parked (kept out of the fast path).
///
/// # Safety
/// As for [`free_sized`].
#[cold]
#[inline(never)]
unsafe fn free_sized_hooked(
    inner: &PoolInner,
    pool: impl FnOnce() -> PoolRef,
    p: *mut u8,
    g: usize,
    len: usize,
) -> bool {
    if g > TC_MAX_GRANULES || p as usize & (GRANULE - 1) != 0 {
        return false;
    }
    // SAFETY: forwarded from the caller.
    unsafe { park_sized(inner, pool, p, g, len, true, false) }
}

/// Checks a sized free and parks it in this thread's cache. With `hooked`
/// (a constant at both call sites), the free hook sees the free once its
/// checks passed, before the chunk can be reused; if it postpones the
/// free, the chunk stays allocated. A declined free must not be shown
/// twice, so from there on a miss takes the shard way itself. With
/// `start_seen` (a constant too), the caller has already seen the start bit
/// set, and it is not read again.
///
/// # Safety
/// As for [`free_sized`]; `g` is `len`'s granules, at most
/// `TC_MAX_GRANULES`, and `p` is granule aligned.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn park_sized(
    inner: &PoolInner,
    pool: impl FnOnce() -> PoolRef,
    p: *mut u8,
    g: usize,
    len: usize,
    hooked: bool,
    start_seen: bool,
) -> bool {
    let slot = match mru_slot(inner) {
        Some(s) => s,
        None => match register(pool()) {
            Some(s) => s,
            None => return false,
        },
    };
    // The start bit: a chunk merged by an earlier free, an interior pointer
    // and a run (a buffer above 2 MiB resized down) are not node chunk
    // starts, and neither is anything in a segment that is not mapped (its
    // metadata reads as all-free). The shard way sorts them out (and panics
    // for the invalid ones) without touching the chunk's memory.
    if !start_seen && inner.segments().starts_chunk(p as usize) != Some(true) {
        return false;
    }
    // The mark: a parked chunk freed again.
    // SAFETY: a chunk start in a mapped segment: at least 32 bytes of ours.
    if let Some(at) = inner.key().decode(unsafe { crate::mark::read(p) }) {
        inner.confirm_parked(p, at);
    }
    // SAFETY: a live chunk start that passed the checks above.
    if hooked && unsafe { inner.offer_to_hook(p, Some(len)) } {
        return true;
    }
    // SAFETY: forwarded from the caller.
    let shard_way = || hooked && unsafe { inner.free_declined(p, len) };
    if !slot.enter() {
        return shard_way();
    }
    // SAFETY: forwarded from the caller; we hold the stacks.
    if !unsafe { slot.push(p, g) } {
        // The size's stack (or the slot) is full: hand half back, retry.
        slot.leave();
        overflow(inner, slot, g);
        // SAFETY: as above.
        if !slot.enter() || !unsafe { slot.push(p, g) } {
            slot.leave();
            return shard_way();
        }
    }
    let c = &slot.counters;
    bump(&c.in_use_granules, -(g as i64));
    bump(&c.frees, 1);
    slot.leave();
    true
}

/// Makes room for a chunk of `g` granules that did not fit: hands half of
/// a stack back to the shards in one batch. Which stack: `g`'s own when it
/// is full; otherwise the slot's byte bound stopped the push, and the stack
/// holding the most bytes gives up half of them (jemalloc and tcache
/// likewise flush by size class, not one chunk at a time). Without that, a
/// thread freeing many sizes (P6's long tail) sits at the byte bound, and
/// each free of a size whose stack is short goes to the shard for one or
/// two chunks. (P6, NTA, glibc, jemalloc and mimalloc interleaved in one
/// process, four runs each: NTA/mimalloc throughput 0.661-0.684 -> 0.742-
/// 0.749; P6's peak resident/live 1.915 -> 1.966, as more refills find
/// room for their extras; 2026-12-07.)
#[cold]
#[inline(never)]
fn overflow(inner: &PoolInner, slot: &ThreadSlot, g: usize) {
    let mut batch = [ptr::null_mut(); TC_FLUSH];
    let mut n = 0;
    let mut victim = g;
    if slot.enter() {
        let full = slot.count(g) >= usize::from(TC_PER_CLASS);
        victim = if full { g } else { slot.fullest() };
        let take = if full { TC_FLUSH } else { slot.count(victim).div_ceil(2).min(TC_FLUSH) };
        while n < take {
            let Some(p) = slot.pop(victim) else { break };
            slot.unaccount(victim);
            batch[n] = p;
            n += 1;
        }
        slot.leave();
    }
    // SAFETY: the popped chunks are live to the shards, unmarked, ours.
    unsafe { inner.free_batch(&batch[..n], victim) };
}

/// Frees every chunk of the calling thread's own `slot` for real, through
/// the owner shards (a thief holding the slot is waited for).
///
/// # Safety
/// `slot` must be a slot of `inner` owned by the calling thread.
pub unsafe fn flush_slot(inner: &PoolInner, slot: &ThreadSlot) {
    let mut spins = 0u32;
    while !slot.enter() {
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    let lists = detach(slot);
    slot.leave();
    // SAFETY: detached chunks are ours.
    unsafe { free_detached(inner, &lists) };
}

/// Takes every chunk out of `slot`, clearing marks and handing their count
/// back to "in use". The caller has exclusive use of the stacks (the owner
/// inside `enter`, or a thief).
pub fn detach(slot: &ThreadSlot) -> Detached {
    let lists = slot.take_all();
    for (g, &(mut c, _)) in lists.iter().enumerate() {
        while !c.is_null() {
            // SAFETY: parked chunks link through their first word and carry
            // their mark in the second; they are ours now.
            let next = unsafe {
                crate::mark::clear(c);
                c.cast::<*mut u8>().read()
            };
            slot.unaccount(g);
            c = next;
        }
    }
    lists
}

/// Stacks detached from a slot, by granule count: (head, count).
pub type Detached = [(*mut u8, u16); TC_MAX_GRANULES + 1];

/// Frees detached chunks for real.
///
/// # Safety
/// The lists must come from [`detach`] on a slot of `inner`, once.
pub unsafe fn free_detached(inner: &PoolInner, lists: &Detached) {
    for (g, &(mut c, _)) in lists.iter().enumerate() {
        while !c.is_null() {
            // SAFETY: the link was written when the chunk was parked; read it
            // before the chunk is freed.
            let next = unsafe { c.cast::<*mut u8>().read() };
            // SAFETY: the chunk is live to the shards, unmarked, and ours.
            unsafe { inner.free_trusted(NonNull::new_unchecked(c), g) };
            c = next;
        }
    }
}

/// Makes `pool` the calling thread's most recently used pool, claiming a
/// slot if it has none there. Cold: once per thread and pool (or after an
/// eviction).
#[cold]
fn register(pool: PoolRef) -> Option<&'static ThreadSlot> {
    let alive = pool.upgrade()?;
    let key = alive.inner() as *const PoolInner;
    let evicted = CACHES
        .try_with(|c| {
            // SAFETY: only this thread touches its table; no call out of this
            // module happens while the reference is live.
            let c = unsafe { &mut *c.get() };
            if let Some(i) = c.entries.iter().position(|e| e.as_ref().is_some_and(|e| e.key == key)) {
                c.entries[..=i].rotate_right(1);
                sync_mru(c);
                return Ok::<_, ()>(None);
            }
            let slot = ThreadSlot::claim(alive.inner().thread_slots(), alive.inner().key()).ok_or(())?;
            let old = c.entries[TC_POOLS - 1].take();
            c.entries.rotate_right(1);
            c.entries[0] = Some(Entry { key, slot, pool });
            sync_mru(c);
            Ok(old)
        })
        .ok()?
        .ok()?;
    if let Some(e) = evicted {
        e.retire();
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
        // SAFETY: the caller holds the pool alive, so the slot is alive; this
        // thread owns it.
        unsafe { flush_slot(pool, &*slot) };
    }
}

/// In a forked child: forgets (without flushing: the memory is the
/// parent's) every entry of this thread for a pool `frozen` says to drop.
pub fn forget_entries(frozen: impl Fn(*const PoolInner) -> bool) {
    let _ = CACHES.try_with(|c| {
        // SAFETY: as in `register`; fork handlers run on the forking thread,
        // outside any call into this module.
        let c = unsafe { &mut *c.get() };
        for e in c.entries.iter_mut() {
            if e.as_ref().is_some_and(|e| frozen(e.key)) {
                std::mem::forget(e.take());
            }
        }
        sync_mru(c);
    });
}
