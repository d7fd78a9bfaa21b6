//! The DPDK-style fixed-size mempool reference model.
//!
//! Every buffer is one element of [`MEMPOOL_ELEMENT_BYTES`]: a
//! [`MEMPOOL_HEADROOM_BYTES`] headroom followed by a
//! [`MEMPOOL_DATA_ROOM_BYTES`] data room, as `rte_pktmbuf_pool_create` with
//! the default `RTE_PKTMBUF_HEADROOM` and a 2048-byte data room lays it out.
//! The pointer handed out is the start of the data room. A request above the
//! data room fails (DPDK would chain mbufs; a chained buffer is not one
//! contiguous block, which these workloads need).
//!
//! Structure, as `rte_mempool` with a cache (`rte_mempool_generic_get/put`,
//! the classic algorithm):
//! - **Per-lcore caches.** Each thread has an lcore id ([`lcore_id`]: the
//!   first free one of [`MEMPOOL_LCORES`], given back when the thread exits)
//!   and, in each pool, a LIFO cache of up to [`MEMPOOL_FLUSH_THRESHOLD`]
//!   element pointers that only it touches. A get pops from the cache; on a
//!   miss it refills the cache from the ring with [`MEMPOOL_CACHE_SIZE`]
//!   objects plus the one asked for, in one bulk dequeue. A put pushes onto
//!   the cache; when the cache reaches the flush threshold (1.5 × the cache
//!   size, `RTE_MEMPOOL_CACHE_FLUSHTHRESH_MULTIPLIER`), everything above the
//!   cache size goes back to the ring in one bulk enqueue. A thread without
//!   an lcore id (more than [`MEMPOOL_LCORES`] alive at once, like a DPDK
//!   non-EAL thread) goes to the ring every time.
//! - **The ring** is the pool's shared FIFO of free elements (`rte_ring`,
//!   multi-producer/multi-consumer). The model guards it with a mutex taken
//!   once per bulk operation, where `rte_ring` does one CAS per bulk
//!   operation: the per-object cost is the cache's, as in DPDK.
//! - **Population.** DPDK sizes a pool at creation and populates it whole;
//!   the model adds [`POPULATE_ELEMENTS`] elements (one 2 MiB arena chunk)
//!   to the ring whenever a refill finds it short, as if the pool had been
//!   sized for the peak in advance, touching each as `rte_mempool_populate`
//!   does. Capped, the pool has `capacity / element` elements in all.
//!
//! Invariant: every element carved from the arena is, at any time, in
//! exactly one place: live with a caller, in one lcore's cache, or in the
//! ring. Held bytes are the arena's (the caches' pointer arrays are pool
//! metadata, as in DPDK's mempool header, and are not counted).

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::ptr::NonNull;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use super::arena::BumpArena;
use super::Peer;

/// Headroom before the data room, in bytes (DPDK's `RTE_PKTMBUF_HEADROOM`).
pub const MEMPOOL_HEADROOM_BYTES: usize = 128;
/// Data room per buffer in bytes: the largest request served.
pub const MEMPOOL_DATA_ROOM_BYTES: usize = 2048;
/// Bytes per element: headroom plus data room.
pub const MEMPOOL_ELEMENT_BYTES: usize = MEMPOOL_HEADROOM_BYTES + MEMPOOL_DATA_ROOM_BYTES;
/// Objects per lcore cache (`cache_size` of `rte_pktmbuf_pool_create`; 512
/// is `RTE_MEMPOOL_CACHE_MAX_SIZE`).
pub const MEMPOOL_CACHE_SIZE: usize = 512;
/// A cache holding this many objects flushes down to [`MEMPOOL_CACHE_SIZE`]
/// (DPDK: `cache_size * 1.5`).
pub const MEMPOOL_FLUSH_THRESHOLD: usize = MEMPOOL_CACHE_SIZE * 3 / 2;
/// Lcore ids available (threads alive at once that get a cache).
pub const MEMPOOL_LCORES: usize = 64;

const _: () = assert!(MEMPOOL_ELEMENT_BYTES % 64 == 0, "elements stay cache-line aligned");

/// Elements populated at once: as many as one arena chunk holds.
pub const POPULATE_ELEMENTS: usize = super::arena::CHUNK_BYTES / MEMPOOL_ELEMENT_BYTES;

mod lcore {
    //! Process-wide lcore ids: the lowest free id goes to each thread on its
    //! first mempool call and comes back when the thread exits, so ids stay
    //! below the number of threads alive at once.

    use std::sync::Mutex;

    /// Ids given back by exited threads, and the next never-used id.
    static IDS: Mutex<(Vec<usize>, usize)> = Mutex::new((Vec::new(), 0));

    struct LcoreId(usize);

    impl LcoreId {
        fn acquire() -> LcoreId {
            let mut ids = IDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let id = match ids.0.pop() {
                Some(id) => id,
                None => {
                    ids.1 += 1;
                    ids.1 - 1
                }
            };
            LcoreId(id)
        }
    }

    impl Drop for LcoreId {
        fn drop(&mut self) {
            // The mutex orders this thread's last use of its caches before
            // the next owner's first use.
            IDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).0.push(self.0);
        }
    }

    thread_local! {
        static LCORE: LcoreId = LcoreId::acquire();
    }

    /// This thread's lcore id, or `None` while its thread-locals are being
    /// destroyed.
    #[inline]
    pub fn lcore_id() -> Option<usize> {
        LCORE.try_with(|id| id.0).ok()
    }
}

pub use lcore::lcore_id;

/// One lcore's cache: a LIFO stack of free elements.
struct Cache {
    len: usize,
    objects: [*mut u8; MEMPOOL_FLUSH_THRESHOLD],
}

/// The ring and the memory behind it.
struct Shared {
    /// Free elements, FIFO.
    ring: VecDeque<*mut u8>,
    arena: BumpArena,
}

impl Shared {
    /// Carves up to [`POPULATE_ELEMENTS`] elements and enqueues them, touching
    /// each, as `rte_mempool_populate` does when a pool is created; `false`
    /// when the arena has no room for even one.
    #[cold]
    #[inline(never)]
    fn populate(&mut self) -> bool {
        let mut populated = 0;
        while populated < POPULATE_ELEMENTS {
            let Some(element) = self.arena.carve(MEMPOOL_ELEMENT_BYTES, 64) else { break };
            // SAFETY: element is a fresh, 64-aligned element of the arena;
            // writing its first word touches its first page.
            unsafe { element.as_ptr().cast::<usize>().write(0) };
            self.ring.push_back(element.as_ptr());
            populated += 1;
        }
        populated > 0
    }

    /// Dequeues up to `wanted` elements into `into` (at least one unless the
    /// pool is exhausted), populating when the ring is short.
    fn dequeue_bulk(&mut self, into: &mut [*mut u8]) -> usize {
        while self.ring.len() < into.len() && self.populate() {}
        let count = into.len().min(self.ring.len());
        for (slot, element) in into.iter_mut().zip(self.ring.drain(..count)) {
            *slot = element;
        }
        count
    }
}

/// The mempool model; see the module docs.
pub struct MempoolModel {
    shared: Mutex<Shared>,
    /// Cache `i` is touched only by the thread holding lcore id `i`.
    caches: Box<[CachePadded<UnsafeCell<Cache>>]>,
}

// SAFETY: the shared part is behind a mutex; each cache is only touched by
// the one thread that holds its lcore id (ids are unique among live threads
// and handed over through a mutex), and the elements' pointers are plain
// addresses into the arena, which the pool owns.
unsafe impl Sync for MempoolModel {}
// SAFETY: as above; nothing in the pool is tied to the creating thread.
unsafe impl Send for MempoolModel {}

impl std::fmt::Debug for MempoolModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MempoolModel").field("held_bytes", &self.shared.lock().arena.held_bytes()).finish()
    }
}

impl MempoolModel {
    /// A pool of `capacity_bytes / element` buffers, or a growing one.
    pub fn new(capacity_bytes: Option<usize>) -> Self {
        Self {
            shared: Mutex::new(Shared { ring: VecDeque::new(), arena: BumpArena::new(capacity_bytes) }),
            caches: (0..MEMPOOL_LCORES)
                .map(|_| {
                    CachePadded::new(UnsafeCell::new(Cache {
                        len: 0,
                        objects: [std::ptr::null_mut(); MEMPOOL_FLUSH_THRESHOLD],
                    }))
                })
                .collect(),
        }
    }

    /// The capped region as (start address, length), if capped.
    pub fn region(&self) -> Option<(usize, usize)> {
        self.shared.lock().arena.region()
    }

    /// This thread's cache in this pool, if it has an lcore id.
    ///
    /// # Safety
    /// The caller must not hold another reference to the same cache (the
    /// pool's methods take it once per call and do not re-enter).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn cache(&self) -> Option<&mut Cache> {
        let cell = self.caches.get(lcore_id()?)?;
        // SAFETY: only this thread holds this lcore id (see the Sync impl),
        // and the caller holds no other reference to it.
        Some(unsafe { &mut *cell.get() })
    }

    /// A cache miss: refill from the ring (cache size + 1 objects), or take
    /// one element straight from the ring when the thread has no cache.
    #[cold]
    #[inline(never)]
    fn get_slow(&self, cache: Option<&mut Cache>) -> Option<*mut u8> {
        let mut shared = self.shared.lock();
        match cache {
            Some(cache) => {
                let start = cache.len;
                let got = shared.dequeue_bulk(&mut cache.objects[start..start + MEMPOOL_CACHE_SIZE + 1]);
                cache.len += got;
                (cache.len > 0).then(|| {
                    cache.len -= 1;
                    cache.objects[cache.len]
                })
            }
            None => {
                let mut one = [std::ptr::null_mut(); 1];
                (shared.dequeue_bulk(&mut one) == 1).then_some(one[0])
            }
        }
    }

    /// A full cache: everything above the cache size goes to the ring.
    #[cold]
    #[inline(never)]
    fn flush(&self, cache: &mut Cache) {
        let mut shared = self.shared.lock();
        shared.ring.extend(&cache.objects[MEMPOOL_CACHE_SIZE..cache.len]);
        cache.len = MEMPOOL_CACHE_SIZE;
    }
}

impl Peer for MempoolModel {
    fn name(&self) -> &'static str {
        "mempool"
    }

    #[inline]
    fn alloc(&self, len: usize) -> Option<NonNull<u8>> {
        if len > MEMPOOL_DATA_ROOM_BYTES {
            return None;
        }
        // SAFETY: the only reference to this thread's cache in this call.
        let cache = unsafe { self.cache() };
        let element = match cache {
            Some(cache) if cache.len > 0 => {
                cache.len -= 1;
                cache.objects[cache.len]
            }
            cache => self.get_slow(cache)?,
        };
        // SAFETY: the data room starts HEADROOM bytes into the element.
        NonNull::new(unsafe { element.add(MEMPOOL_HEADROOM_BYTES) })
    }

    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, _len: usize) {
        // SAFETY: ptr is a data room handed out by alloc, so its element
        // starts HEADROOM bytes before it.
        let element = unsafe { ptr.as_ptr().sub(MEMPOOL_HEADROOM_BYTES) };
        // SAFETY: the only reference to this thread's cache in this call.
        match unsafe { self.cache() } {
            Some(cache) => {
                cache.objects[cache.len] = element;
                cache.len += 1;
                if cache.len >= MEMPOOL_FLUSH_THRESHOLD {
                    self.flush(cache);
                }
            }
            None => self.shared.lock().ring.push_back(element),
        }
    }

    unsafe fn resize(&self, ptr: NonNull<u8>, _old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
        (new_len <= MEMPOOL_DATA_ROOM_BYTES).then_some(ptr)
    }

    unsafe fn usable_size(&self, _ptr: NonNull<u8>, _len: usize) -> usize {
        MEMPOOL_DATA_ROOM_BYTES
    }

    fn held_bytes(&self) -> Option<u64> {
        Some(self.shared.lock().arena.held_bytes())
    }

    fn map_regions(&self, _live_blocks: &[(usize, usize)]) -> Vec<(usize, usize)> {
        self.region().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_requests_fail() {
        let pool = MempoolModel::new(None);
        assert!(pool.alloc(MEMPOOL_DATA_ROOM_BYTES + 1).is_none());
        let ptr = pool.alloc(MEMPOOL_DATA_ROOM_BYTES).unwrap();
        // SAFETY: ptr is live.
        unsafe {
            assert!(pool.resize(ptr, 2048, 4096).is_none());
            pool.free(ptr, 2048);
        }
    }

    #[test]
    fn capped_pool_holds_capacity_over_element_buffers() {
        let pool = MempoolModel::new(Some(10 * MEMPOOL_ELEMENT_BYTES));
        let mut count = 0;
        while pool.alloc(64).is_some() {
            count += 1;
        }
        // The capacity is rounded up to a page, which may fit one more.
        assert!((10..=11).contains(&count), "{count}");
    }

    /// Objects freed on one thread reach another thread through the ring
    /// once the freeing thread's cache passes the flush threshold, and no
    /// element is ever handed out twice.
    #[test]
    fn caches_flush_to_the_ring_and_refill_from_it() {
        let pool = MempoolModel::new(Some(3 * POPULATE_ELEMENTS * MEMPOOL_ELEMENT_BYTES));
        let total = {
            let mut all = Vec::new();
            while let Some(ptr) = pool.alloc(64) {
                all.push(ptr.as_ptr() as usize);
            }
            let count = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), count, "an element was handed out twice");
            for &address in &all {
                // SAFETY: each address is a live data room, freed once.
                unsafe { pool.free(NonNull::new(address as *mut u8).unwrap(), 64) };
            }
            count
        };
        // This thread's cache keeps at most the flush threshold; the rest is
        // in the ring, where another thread finds it.
        let from_other_thread = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut got = Vec::new();
                    while let Some(ptr) = pool.alloc(64) {
                        got.push(ptr);
                    }
                    let count = got.len();
                    for ptr in got {
                        // SAFETY: each is live and freed once.
                        unsafe { pool.free(ptr, 64) };
                    }
                    count
                })
                .join()
                .unwrap()
        });
        assert!(from_other_thread >= total - MEMPOOL_FLUSH_THRESHOLD, "{from_other_thread} of {total}");
        assert!(from_other_thread < total, "this thread's cache keeps some");
    }
}
