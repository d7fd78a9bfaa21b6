//! Thread caches: sized frees park small chunks in the freeing thread's
//! cache, the same thread's next allocation of that size reuses them, and
//! every way a cache ends (collect, eviction, thread exit, pool drop) gives
//! the chunks back.

use nta_core::{HugePages, Pool};

fn pool() -> Pool {
    Pool::builder().capacity(8 << 20).shards(1).hugepages(HugePages::Off).build().unwrap()
}

#[test]
fn same_size_is_reused_without_touching_the_shard() {
    let p = pool();
    let a = p.alloc(594).unwrap();
    // SAFETY: live chunk, freed once with its length.
    unsafe { p.free_sized(a, 594) };
    let st = p.stats();
    assert_eq!(st.in_use_bytes, 0);
    assert_eq!(st.thread_cached_bytes, 608);
    let b = p.alloc(600).unwrap(); // same 19 granules
    assert_eq!(a, b, "LIFO reuse of the cached chunk");
    let st = p.stats();
    assert_eq!((st.in_use_bytes, st.thread_cached_bytes), (608, 0));
    p.validate().unwrap();
    // SAFETY: live chunk.
    unsafe { p.free_sized(b, 600) };
    p.validate().unwrap();
    p.collect();
    let st = p.stats();
    assert_eq!((st.in_use_bytes, st.cached_bytes, st.thread_cached_bytes, st.page_nodes), (0, 0, 0, 0));
    p.validate().unwrap();
}

#[test]
fn thread_exit_flushes_its_cache() {
    let p = pool();
    let q = p.clone();
    std::thread::spawn(move || {
        let v: Vec<_> = (0..500).map(|i| (q.alloc(64 + i).unwrap(), 64 + i)).collect();
        for (c, len) in v {
            // SAFETY: live chunks, freed once.
            unsafe { q.free_sized(c, len) };
        }
        assert!(q.stats().thread_cached_bytes > 0);
    })
    .join()
    .unwrap();
    let st = p.stats();
    assert_eq!(st.thread_cached_bytes, 0, "the exiting thread flushed its cache");
    assert_eq!(st.in_use_bytes, 0);
    p.collect();
    p.validate().unwrap();
    assert_eq!(p.stats().page_nodes, 0);
}

#[test]
fn more_pools_than_the_cache_table_evicts_and_flushes() {
    let pools: Vec<Pool> = (0..6).map(|_| pool()).collect();
    for p in &pools {
        let c = p.alloc(1518).unwrap();
        // SAFETY: live chunk.
        unsafe { p.free_sized(c, 1518) };
    }
    // The two least recently used pools were evicted from this thread's
    // table, which flushed their caches.
    assert_eq!(pools[0].stats().thread_cached_bytes, 0);
    assert_eq!(pools[1].stats().thread_cached_bytes, 0);
    assert_eq!(pools[5].stats().thread_cached_bytes, 1536);
    for p in &pools {
        p.validate().unwrap();
        assert_eq!(p.stats().in_use_bytes, 0);
    }
}

#[test]
fn dropping_the_pool_while_a_thread_caches_for_it_is_safe() {
    for _ in 0..8 {
        let p = pool();
        let c = p.alloc(256).unwrap();
        // SAFETY: live chunk.
        unsafe { p.free_sized(c, 256) };
        drop(p); // the thread's cache entry keeps the pool alive until evicted
    }
}

#[test]
fn unsized_frees_park_too_and_large_chunks_bypass_the_cache() {
    let p = pool();
    let a = p.alloc(100).unwrap();
    let big = p.alloc(5000).unwrap();
    let unsized_big = p.alloc(3000).unwrap();
    // SAFETY: live chunks, each freed once.
    unsafe {
        p.free(a);
        p.free_sized(big, 5000);
        p.free(unsized_big);
    }
    let st = p.stats();
    assert_eq!(st.thread_cached_bytes, 128, "the 100-byte chunk (4 granules), its length read from the bitmaps");
    assert_eq!(st.in_use_bytes, 0);
    p.validate().unwrap();
    let b = p.alloc(128).unwrap();
    assert_eq!(a, b, "parked under its exact granule count");
    // SAFETY: a live chunk, freed once.
    unsafe { p.free(b) };
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: not sound, on purpose: a double free of a parked chunk,
        // which the free's mark check catches before touching anything.
        unsafe { p.free(b) }
    }));
    assert!(again.is_err(), "an unsized double free of a parked chunk panics");
    p.collect();
    let st = p.stats();
    assert_eq!((st.in_use_bytes, st.thread_cached_bytes), (0, 0));
    p.validate().unwrap();
}

/// A chunk freed by a thread-local's destructor, at thread exit.
struct FreeAtExit(Pool, usize, usize);

impl Drop for FreeAtExit {
    fn drop(&mut self) {
        // SAFETY: a live chunk of the pool with this length, freed once.
        unsafe { self.0.free_sized(std::ptr::NonNull::new(self.1 as *mut u8).unwrap(), self.2) }
    }
}

thread_local! {
    static LATE: std::cell::RefCell<Option<FreeAtExit>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn a_free_from_a_thread_local_destructor_after_the_cache_is_gone_is_safe() {
    let p = pool();
    let q = p.clone();
    std::thread::spawn(move || {
        // Touched before the pool is used, so its destructor is registered
        // before the thread cache's and (destructors run in reverse) runs
        // after the cache has been flushed and dropped.
        LATE.with(|l| assert!(l.borrow().is_none()));
        let a = q.alloc(100).unwrap();
        // SAFETY: live chunk, freed once: the thread now caches for `q`.
        unsafe { q.free_sized(a, 100) };
        let late = q.alloc(594).unwrap();
        LATE.with(|l| *l.borrow_mut() = Some(FreeAtExit(q.clone(), late.as_ptr() as usize, 594)));
    })
    .join()
    .unwrap();
    p.collect();
    let st = p.stats();
    assert_eq!((st.in_use_bytes, st.thread_cached_bytes), (0, 0), "the late free reached the pool");
    p.validate().unwrap();
}

/// A free that finds the slot at its byte bound makes room by halving the
/// stack that holds the most bytes, not by sending its own short stack (one
/// chunk here) to the shard.
#[test]
fn at_the_byte_bound_the_fullest_stack_gives_up_half() {
    let p = pool();
    let mut live = Vec::new();
    for (len, n) in [(2048, 64), (2016, 64), (1984, 2)] {
        live.extend((0..n).map(|_| (p.alloc(len).unwrap(), len)));
    }
    // The refills' extras go back, so the cache holds only what is freed below.
    p.collect();
    assert_eq!(p.stats().thread_cached_bytes, 0);
    for &(ptr, len) in &live {
        // SAFETY: live chunks, each freed once with its length.
        unsafe { p.free_sized(ptr, len) };
    }
    // 64 x 2048 + 64 x 2016 + 1984 fit the 256 KiB bound; the second 1984-byte
    // chunk does not. Half of the 2048-byte stack (32 chunks) goes to the
    // shard, and the chunk is parked.
    let st = p.stats();
    assert_eq!(st.thread_cached_bytes, 64 * 2048 + 64 * 2016 + 2 * 1984 - 32 * 2048);
    assert_eq!(st.in_use_bytes, 0);
    p.validate().unwrap();
    // The same thread's next 1984-byte allocations come from its cache.
    let a = p.alloc(1984).unwrap();
    assert_eq!(a, live[129].0, "LIFO: the chunk parked last");
    // SAFETY: live chunk.
    unsafe { p.free_sized(a, 1984) };
    p.collect();
    assert_eq!(p.stats().thread_cached_bytes, 0);
    p.validate().unwrap();
}
