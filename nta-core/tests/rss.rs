//! RSS falls after a large free, because wholly free segments beyond the
//! retain watermark are punched out of the memfd and unmapped: at once with
//! a zero release delay, and on `trim()` with the default delay. Its own
//! test binary, with one test, so nothing else moves this process's RSS.

use nta_core::{HugePages, Pool};
use std::time::Duration;

const FILL: usize = 256 << 20;

/// Fills 256 MiB, frees it, and returns (rss before, filled, after free).
fn fill_and_free(pool: &Pool) -> (usize, usize, usize) {
    let rss0 = nta_core::rss_bytes().unwrap();
    let mut v = Vec::new();
    for _ in 0..FILL / 65536 {
        let p = pool.alloc(65536).unwrap();
        // SAFETY: fresh chunk; touching it makes it resident.
        unsafe { p.as_ptr().write_bytes(0x5A, 65536) };
        v.push(p);
    }
    let rss1 = nta_core::rss_bytes().unwrap();
    assert!(rss1 >= rss0 + (200 << 20), "touching 256 MiB raised RSS from {rss0} to {rss1}");
    for p in v {
        // SAFETY: live chunks.
        unsafe { pool.free(p) };
    }
    (rss0, rss1, nta_core::rss_bytes().unwrap())
}

fn builder() -> nta_core::PoolBuilder {
    Pool::builder().capacity(512 << 20).shards(1).hugepages(HugePages::Off).retain_bytes(0)
}

#[test]
fn rss_falls_after_large_free() {
    // Zero delay: segments go back as soon as they are wholly free.
    let pool = builder().release_delay(Duration::ZERO).build().unwrap();
    let (rss0, rss1, rss2) = fill_and_free(&pool);
    let st = pool.stats();
    println!("zero delay: rss before {rss0}, filled {rss1}, after free {rss2}; mapped {}", st.mapped_bytes);
    assert!(rss2 + (200 << 20) <= rss1, "RSS fell by less than 200 MiB: {rss1} -> {rss2}");
    assert!(st.mapped_bytes <= 2 << 20, "at most the one node a shard keeps stays mapped");
    pool.validate().unwrap();
    assert!(pool.alloc(65536).is_some(), "released segments can be mapped again");
    drop(pool);

    // The defaults as documented: 64 MiB retained, the rest released once
    // parked for 1 s, checked when the next segment is released.
    let pool = Pool::builder().capacity(512 << 20).shards(1).hugepages(HugePages::Off).build().unwrap();
    let (_, rss1, rss2) = fill_and_free(&pool);
    assert!(pool.stats().mapped_bytes >= 200 << 20, "parked, not yet released");
    std::thread::sleep(Duration::from_millis(1200));
    // Two whole nodes in and out: the second release runs the purge.
    let (a, b) = (pool.alloc(2 << 20).unwrap(), pool.alloc(2 << 20).unwrap());
    // SAFETY: live chunks.
    unsafe {
        pool.free(a);
        pool.free(b);
    }
    let rss3 = nta_core::rss_bytes().unwrap();
    let mapped = pool.stats().mapped_bytes;
    println!("defaults: filled {rss1}, after free {rss2}, 1.2 s later {rss3}; mapped {mapped}");
    assert!(mapped <= (64 + 4) << 20, "only the 64 MiB watermark (and a node or two) stays mapped: {mapped}");
    assert!(rss3 + (150 << 20) <= rss1, "RSS fell after the delay: {rss1} -> {rss3}");
    pool.validate().unwrap();
    drop(pool);

    // Default delay, retain 0: the segments stay parked for reuse until trim().
    let pool = builder().build().unwrap();
    let (_, rss1, rss2) = fill_and_free(&pool);
    assert!(pool.stats().mapped_bytes >= 200 << 20, "parked, not yet released");
    pool.trim();
    let rss3 = nta_core::rss_bytes().unwrap();
    println!("default delay: filled {rss1}, after free {rss2}, after trim {rss3}");
    assert!(rss3 + (200 << 20) <= rss1, "trim() released the parked segments: {rss1} -> {rss3}");
    assert!(pool.stats().mapped_bytes <= 2 << 20);
    pool.validate().unwrap();
}
