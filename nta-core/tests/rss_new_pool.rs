//! A new pool costs little resident memory: its tables (thread slots,
//! segment descriptors, node metadata) are mapped untouched and filled in
//! as they are used. Its own test binary, with one test, so nothing else
//! moves this process's RSS. (CI's AddressSanitizer run skips it: the
//! sanitizer's own per-thread memory is resident too.)

use nta_core::{HugePages, Pool};

#[test]
fn a_new_pool_and_its_first_thread_touch_little_memory() {
    // The default capacity (the machine's memory): thousands of segment
    // slots, 256 thread slots.
    let build = || Pool::builder().hugepages(HugePages::Off).shards(2).build().unwrap();
    // A first pool pays the once-per-process costs (fork handlers, the
    // membarrier registration, a sanitizer's own set-up); the second is
    // measured.
    drop(build());
    let before = nta_core::rss_bytes().unwrap();
    let pool = build();
    let built = nta_core::rss_bytes().unwrap();
    let st = pool.stats();
    println!("rss before {before}, after build {built}; metadata {}", st.metadata_bytes);
    assert!(st.metadata_bytes < 16 << 10, "no slot used yet, no segment mapped: only the shard table counts");
    assert!(
        built.saturating_sub(before) < 64 << 10,
        "building the pool made {} KiB resident (its tables map {} KiB)",
        built.saturating_sub(before) >> 10,
        st.metadata_bytes >> 10
    );
    // Threads cache chunks: each touches its own slot, not the table. The
    // same threads run once without the pool first, so their stacks (which
    // the C library keeps for reuse) are resident before the baseline.
    let run = |use_pool: bool| {
        for _ in 0..4 {
            let q = pool.clone();
            std::thread::spawn(move || {
                if use_pool {
                    // All on one shard, so one segment whichever CPU the
                    // thread runs on (two were mapped once, under load).
                    q.bind_current_thread(0);
                    let a = q.alloc(64).unwrap();
                    // SAFETY: a live chunk, freed once: parked in this thread's slot.
                    unsafe { q.free_sized(a, 64) };
                }
            })
            .join()
            .unwrap();
        }
    };
    run(false);
    let warm = nta_core::rss_bytes().unwrap();
    run(true);
    let used = nta_core::rss_bytes().unwrap();
    println!("rss with warm threads {warm}, after four threads used the pool {used}");
    let after = pool.stats();
    println!("metadata now {} ({} segment mapped)", after.metadata_bytes, after.huge_nodes);
    assert_eq!(after.huge_nodes, 1);
    assert!(
        after.metadata_bytes < st.metadata_bytes + (32 << 10),
        "counted: one segment's node metadata and the slot pages used, not the whole slot table"
    );
    // A page node, the segment's first metadata pages, the free extent's
    // two tags and four slots: a few pages, not the whole slot table.
    assert!(used.saturating_sub(warm) < 96 << 10, "using the pool made {} KiB resident", (used - warm) >> 10);
    pool.validate().unwrap();
}
