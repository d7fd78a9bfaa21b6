//! Reclaim: what an allocation does before it fails.
//!
//! Free memory can be stranded where the allocating shard cannot use it:
//! in other threads' caches (a thread that freed a burst and went idle), in
//! other shards' remote queues and quick caches, in wholly free nodes that
//! another shard keeps, and in nodes that another shard has left mostly
//! free. Before an allocation returns `None`, the pool gathers all of it:
//!
//! 1. **Thread caches.** The calling thread's cache is flushed; every other
//!    thread's is taken over through the slot protocol (`thread_slot`: set
//!    `steal` on every claimed slot, one `membarrier`, wait for each owner to
//!    leave its busy section), emptied into one intrusive list, handed back,
//!    and only then freed for real. Taking all the slots before freeing
//!    anything keeps the rule that a thief holding a slot never waits for a
//!    shard lock.
//! 2. **Shards.** Each shard in turn is locked, its remote queue drained,
//!    its quick cache merged, and its wholly free nodes handed back to the
//!    segment table, where any shard (or a run) can take them.
//! 3. **Mostly free nodes** (mimalloc's reclaim of abandoned segments is
//!    the model). If the table is still empty, a node of another shard that
//!    holds a free extent fitting the request moves to the allocating
//!    shard: its free extents change lists under both shards' locks (taken
//!    in index order), and its owner field changes. Frees racing with the
//!    move find the new owner: the free paths read the owner again once
//!    they hold a shard, and a drain forwards chunks queued to the old one.
//!
//! All of this is cold and may take milliseconds with many threads; it runs
//! only when an allocation would otherwise fail.

use crate::checked::invalid_free;
use crate::inner::PoolInner;
use crate::thread_cache;
use crate::thread_slot;
use std::ptr;
use std::sync::atomic::Ordering::Release;

/// Gathers free memory for a request of `len` bytes at `align` that shard
/// `idx` could not serve. Returns true if it found anything worth a retry.
/// The caller holds no shard lock.
pub(crate) fn reclaim(pool: &PoolInner, idx: usize, len: usize, align: usize) -> bool {
    let mut gathered = steal_thread_caches(pool);
    gathered |= drain_shards(pool);
    if pool.segments().has_room() {
        return true;
    }
    gathered | move_node(pool, idx, len, align)
}

/// Step 1: empties every thread cache of the pool. Returns whether any
/// chunk was freed.
pub(crate) fn steal_thread_caches(pool: &PoolInner) -> bool {
    if !pool.caching() {
        return false;
    }
    thread_cache::flush_current(pool);
    let slots = pool.thread_slots();
    // The slots we take: claimed ones holding chunks, as seen now (a slot
    // claimed later is left alone).
    let mut ours = [0u64; thread_slot::SLOTS / 64];
    for (i, slot) in slots.iter().enumerate() {
        if slot.is_claimed() && slot.bytes() > 0 {
            slot.steal_begin();
            ours[i / 64] |= 1 << (i % 64);
        }
    }
    let stolen = || slots.iter().enumerate().filter(|(i, _)| ours[i / 64] >> (i % 64) & 1 == 1).map(|(_, s)| s);
    thread_slot::wait_owners(stolen());
    // One intrusive list of every stolen chunk, linked through word 0.
    let mut list: *mut u8 = ptr::null_mut();
    for slot in stolen() {
        let lists = thread_cache::detach(slot);
        slot.steal_end();
        for &(mut c, _) in lists.iter() {
            while !c.is_null() {
                // SAFETY: detached chunks are ours; word 0 is the cache link,
                // read before it is overwritten with ours.
                unsafe {
                    let next = c.cast::<*mut u8>().read();
                    c.cast::<*mut u8>().write(list);
                    list = c;
                    c = next;
                }
            }
        }
    }
    let any = !list.is_null();
    while !list.is_null() {
        // SAFETY: as above.
        let next = unsafe { list.cast::<*mut u8>().read() };
        // SAFETY: a live, unmarked chunk of this pool, ours to free; its
        // length comes from the bitmaps.
        unsafe { pool.free(ptr::NonNull::new_unchecked(list), None) };
        list = next;
    }
    any
}

/// Step 2: drains every shard's queue and quick cache and hands its wholly
/// free nodes back to the segment table. Returns whether a node went back.
pub(crate) fn drain_shards(pool: &PoolInner) -> bool {
    let segs = pool.segments();
    let mut released = false;
    for shard in pool.shards() {
        let mut g = pool.drain_or_panic(shard.lock());
        // SAFETY: we hold the shard.
        unsafe {
            g.heap().flush_deferred(segs, &shard.counters);
            g.heap().drain_whole_nodes(segs, |seg| {
                segs.release(seg, false);
                released = true;
            });
        }
    }
    released
}

/// Step 3: moves one node with a free extent fitting the request from
/// another shard to shard `idx`. Returns whether one moved.
fn move_node(pool: &PoolInner, idx: usize, len: usize, align: usize) -> bool {
    let shards = pool.shards();
    let segs = pool.segments();
    for j in (0..shards.len()).filter(|&j| j != idx) {
        let (lo, hi) = (idx.min(j), idx.max(j));
        let g_lo = shards[lo].lock();
        let g_hi = shards[hi].lock();
        let (mut to, mut from) = if lo == idx { (g_lo, g_hi) } else { (g_hi, g_lo) };
        if let Err((p, why)) = pool.drain(&mut from) {
            drop((to, from));
            invalid_free(p, why);
        }
        let (fc, tc) = (&from.shard().counters, &to.shard().counters);
        // SAFETY: we hold both shards.
        unsafe { from.heap().flush_deferred(segs, fc) };
        if to.heap().donor_node(segs, len, align).is_some() {
            return true; // a racing free already made room at home
        }
        let Some(seg) = from.heap().donor_node(segs, len, align) else { continue };
        // SAFETY: we hold both shards; `seg` is owned by `from` (its heap
        // listed one of its extents) and none of its chunks is quick-cached.
        unsafe { from.heap().give_node(to.heap(), segs, seg, fc, tc) };
        segs.meta(seg).owner.store(idx as u32 + 1, Release);
        return true;
    }
    false
}
