//! The hugepage path: `MFD_HUGETLB` when hugepages are reserved (CI reserves
//! them where `/proc/sys/vm/nr_hugepages` is writable), the fallback
//! otherwise. Prints which one ran.

use nta_core::{Error, HugePages, Pool};

fn exercise(pool: &Pool) {
    let mut v = Vec::new();
    for i in 0..2000 {
        let len = [64, 594, 1518, 9000][i % 4];
        let p = pool.alloc(len).unwrap();
        // SAFETY: fresh chunk.
        unsafe { p.as_ptr().write_bytes(i as u8, len) };
        v.push(p);
    }
    pool.validate().unwrap();
    for p in v {
        // SAFETY: live chunks.
        unsafe { pool.free(p) };
    }
    pool.validate().unwrap();
}

#[test]
fn hugetlb_or_fallback() {
    let reserved = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap_or_default();
    match Pool::builder().capacity(16 << 20).shards(1).hugepages(HugePages::Require).build() {
        Ok(pool) => {
            exercise(&pool);
            let st = pool.stats();
            println!(
                "hugepage path: MFD_HUGETLB ({} hugetlb segments; nr_hugepages={})",
                st.segments_hugetlb,
                reserved.trim()
            );
            assert!(st.segments_hugetlb >= 1);
            assert_eq!(st.segments_thp + st.segments_small, 0, "Require never falls back");
        }
        Err(Error::HugePagesUnavailable) => {
            // Falling back is right only when no hugepage is reserved.
            assert_eq!(
                reserved.trim(),
                "0",
                "nr_hugepages is {} but HugePages::Require could not map one",
                reserved.trim()
            );
            let pool = Pool::builder().capacity(16 << 20).shards(1).hugepages(HugePages::Try).build().unwrap();
            exercise(&pool);
            let st = pool.stats();
            println!(
                "hugepage path: fallback (no hugetlb page; thp {} / 4k {} segments; nr_hugepages={})",
                st.segments_thp,
                st.segments_small,
                reserved.trim()
            );
            assert_eq!(st.segments_hugetlb, 0);
            assert!(st.segments_thp + st.segments_small >= 1);
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn off_uses_regular_pages() {
    let pool = Pool::builder().capacity(8 << 20).shards(1).hugepages(HugePages::Off).build().unwrap();
    exercise(&pool);
    let st = pool.stats();
    assert_eq!((st.segments_hugetlb, st.segments_thp), (0, 0));
    assert!(st.segments_small >= 1);
}

#[test]
fn private_backing_works_too() {
    let pool = Pool::builder().capacity(8 << 20).shards(1).exportable(false).build().unwrap();
    exercise(&pool);
}

#[test]
fn premapped_pool_keeps_its_whole_range_mapped() {
    let pool = Pool::builder().capacity(8 << 20).shards(1).hugepages(HugePages::Off).premap(true).build().unwrap();
    let (base, len) = pool.memory_range();
    assert_eq!(len, 8 << 20);
    assert_eq!(pool.stats().mapped_bytes, 8 << 20);
    // SAFETY: a premapped pool's whole range is mapped read-write memory;
    // no chunk is live, so nobody else uses these bytes.
    unsafe { base.as_ptr().add(len - 1).write(1) };
    exercise(&pool);
    assert_eq!(pool.stats().mapped_bytes, 8 << 20, "nothing was released");
}
