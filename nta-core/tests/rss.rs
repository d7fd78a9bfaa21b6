//! RSS falls after a large free, because wholly free segments above the
//! retain watermark are punched out of the memfd and unmapped. Its own test
//! binary, so no other test moves this process's RSS meanwhile.

use nta_core::{HugePages, Pool};

#[test]
fn rss_falls_after_large_free() {
    let pool = Pool::builder().capacity(512 << 20).shards(1).hugepages(HugePages::Off).retain_bytes(0).build().unwrap();
    let rss0 = nta_core::rss_bytes().unwrap();
    let mut v = Vec::new();
    for _ in 0..(256 << 20) / 65536 {
        let p = pool.alloc(65536).unwrap();
        // SAFETY: fresh chunk; touching it makes it resident.
        unsafe { p.as_ptr().write_bytes(0x5A, 65536) };
        v.push(p);
    }
    let rss1 = nta_core::rss_bytes().unwrap();
    assert!(rss1 >= rss0 + (200 << 20), "touching 256 MiB raised RSS from {rss0} to {rss1}");
    let mapped1 = pool.stats().mapped_bytes;
    for p in v {
        // SAFETY: live chunks.
        unsafe { pool.free(p) };
    }
    let rss2 = nta_core::rss_bytes().unwrap();
    let st = pool.stats();
    println!("rss before {rss0}, filled {rss1}, after free {rss2}; mapped {mapped1} -> {}", st.mapped_bytes);
    assert!(rss2 + (200 << 20) <= rss1, "RSS fell by less than 200 MiB: {rss1} -> {rss2}");
    assert!(st.mapped_bytes <= 2 << 20, "at most the one node a shard keeps stays mapped");
    pool.validate().unwrap();
    // The released segments can be mapped again.
    assert!(pool.alloc(65536).is_some());
}
