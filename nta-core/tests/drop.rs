//! Dropping the last `Pool` handle unmaps the pool, even while a thread
//! that cached chunks for it lives on (its cache entry holds only a weak
//! reference). One test in its own binary, so no other pool is mapped.

use nta_core::{HugePages, Pool};
use std::sync::mpsc;

/// Lines of /proc/self/maps that map an NTA memfd.
fn pool_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().filter(|l| l.contains("memfd:nta-")).count()
}

#[test]
fn dropping_the_last_handle_unmaps_while_a_caching_thread_lives() {
    assert_eq!(pool_mappings(), 0);
    let pool = Pool::builder().capacity(64 << 20).shards(2).hugepages(HugePages::Off).build().unwrap();
    let (cached_tx, cached_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let worker = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let chunks: Vec<_> = (0..100).map(|_| pool.alloc(600).unwrap()).collect();
            for p in chunks {
                // SAFETY: live chunks, freed once: they park in this thread's cache.
                unsafe { pool.free_sized(p, 600) };
            }
            assert!(pool.stats().thread_cached_bytes > 0);
            drop(pool);
            cached_tx.send(()).unwrap();
            // Stay alive, cache entry and all, until told; then exit (the
            // exit must not touch the dropped pool).
            let _ = go_rx.recv();
        })
    };
    cached_rx.recv().unwrap();
    let p = pool.alloc(5 << 20).unwrap();
    // SAFETY: fresh run; touch it so it is resident.
    unsafe { p.as_ptr().write_bytes(1, 5 << 20) };
    assert!(pool_mappings() > 0, "the pool is mapped");
    let rss_mapped = nta_core::rss_bytes().unwrap();
    drop(pool);
    assert_eq!(pool_mappings(), 0, "the last handle is gone: nothing of the pool stays mapped");
    let rss_after = nta_core::rss_bytes().unwrap();
    assert!(rss_after + (4 << 20) <= rss_mapped, "RSS fell: {rss_mapped} -> {rss_after}");
    go_tx.send(()).unwrap();
    worker.join().unwrap();
}
