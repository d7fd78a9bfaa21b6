//! The public surface of `Pool`: allocation, free without size, resize in
//! place, coalescing, exhaustion, stats.

use nta_core::{HugePages, Pool, GRANULE};
use std::ptr::NonNull;

fn pool(capacity: usize) -> Pool {
    Pool::builder().capacity(capacity).shards(1).hugepages(HugePages::Off).build().unwrap()
}

#[test]
fn exact_granules_no_power_of_two_rounding() {
    let p = pool(8 << 20);
    for (len, want) in [(1, 32), (32, 32), (33, 64), (594, 608), (1518, 1536), (9000, 9024), (65536, 65536)] {
        let c = p.alloc(len).unwrap();
        // SAFETY: `c` is live.
        assert_eq!(unsafe { p.usable_size(c) }, want, "len {len}");
        let st = p.stats();
        assert_eq!(st.in_use_bytes, want as u64);
        // SAFETY: live, freed once.
        unsafe { p.free(c) };
        assert_eq!(p.stats().in_use_bytes, 0);
    }
    p.validate().unwrap();
}

#[test]
fn alignment_up_to_4096() {
    let p = pool(8 << 20);
    let mut v = Vec::new();
    for align in [32, 64, 128, 256, 512, 1024, 2048, 4096] {
        for len in [1, 64, 594, 1518, 5000] {
            let c = p.alloc_aligned(len, align).unwrap();
            assert_eq!(c.as_ptr() as usize % align, 0, "len {len} align {align}");
            v.push(c);
        }
    }
    p.validate().unwrap();
    for c in v {
        // SAFETY: live, freed once.
        unsafe { p.free(c) };
    }
    p.validate().unwrap();
    assert_eq!(p.stats().in_use_bytes, 0);
    assert!(p.alloc_aligned(64, 8192).is_none());
}

#[test]
fn one_mebibyte_and_jumbo() {
    let p = pool(8 << 20);
    let big = p.alloc(1 << 20).unwrap();
    let jumbo = p.alloc(9000).unwrap();
    // SAFETY: both live; we write inside them.
    unsafe {
        big.as_ptr().write_bytes(0xAB, 1 << 20);
        jumbo.as_ptr().write_bytes(0xCD, 9000);
        assert_eq!(*big.as_ptr().add((1 << 20) - 1), 0xAB);
        p.free(big);
        p.free(jumbo);
    }
    // Above 2 MiB: a run of segments, bounded only by the capacity.
    let run = p.alloc(nta_core::MAX_ALLOC_BYTES + 1).unwrap();
    p.validate().unwrap();
    // SAFETY: live run.
    unsafe { p.free(run) };
    assert!(p.alloc((8 << 20) + 1).is_none(), "beyond the capacity");
    p.validate().unwrap();
}

#[test]
fn shrink_returns_tail_and_merges() {
    let p = pool(8 << 20);
    let a = p.alloc(9000).unwrap();
    let before = p.stats();
    // SAFETY: `a` is live.
    unsafe { p.shrink(a, 1500) };
    let after = p.stats();
    assert_eq!(before.in_use_bytes - after.in_use_bytes, (9024 - 1504) as u64);
    assert_eq!(after.in_use_bytes, 1504);
    p.validate().unwrap();
    // The tail merged with the free rest of the node, so growing back works.
    // SAFETY: `a` is live.
    assert!(unsafe { p.try_grow(a, 9000) });
    assert_eq!(p.stats().in_use_bytes, 9024);
    p.validate().unwrap();
    // A used right neighbour blocks growth.
    let b = p.alloc(2000).unwrap();
    // SAFETY: live chunks.
    unsafe {
        assert_eq!(b.as_ptr() as usize, a.as_ptr() as usize + 9024, "carved right after a");
        assert!(!p.try_grow(a, 9100));
        let moved = p.realloc(a, 20000).unwrap();
        assert_ne!(moved, a);
        p.free(moved);
        p.free(b);
    }
    p.validate().unwrap();
    assert_eq!(p.stats().in_use_bytes, 0);
}

#[test]
fn seed_example_three_chunks_merge_back() {
    // Seed 002, Aug 2 2006: alloc 120, 200, 70; free 120, 70, 200.
    // Checked mode bypasses the thread and quick caches, so the layout is
    // the pure NTA one: chunks carved back to back from one page node.
    let p = Pool::builder().capacity(4 << 20).shards(1).hugepages(HugePages::Off).checked(true).build().unwrap();
    let a = p.alloc(120).unwrap();
    let b = p.alloc(200).unwrap();
    let c = p.alloc(70).unwrap();
    assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 128);
    assert_eq!(c.as_ptr() as usize - b.as_ptr() as usize, 224);
    // SAFETY: each is live and freed once.
    unsafe {
        p.free(a);
        p.validate().unwrap();
        p.free(c);
        p.validate().unwrap();
        p.free(b);
    }
    p.validate().unwrap();
    // Small frees may sit in the shard's quick cache (deferred coalescing);
    // collect() merges them.
    p.collect();
    p.validate().unwrap();
    let st = p.stats();
    assert_eq!(st.in_use_bytes, 0);
    assert_eq!(st.free_bytes, st.mapped_bytes);
    assert_eq!(st.page_nodes, 0, "the wholly free page node went back to its huge node");
}

#[test]
fn exhaustion_returns_none_and_recovers() {
    let p = pool(4 << 20);
    let mut live: Vec<NonNull<u8>> = Vec::new();
    while let Some(c) = p.alloc(60_000) {
        live.push(c);
    }
    assert!(!live.is_empty());
    assert!(p.stats().failed_allocs >= 1);
    // Small requests still fill the remaining gaps, then fail cleanly too.
    while let Some(c) = p.alloc(100) {
        live.push(c);
    }
    p.validate().unwrap();
    for c in live.drain(..) {
        // SAFETY: live, freed once.
        unsafe { p.free(c) };
    }
    p.validate().unwrap();
    assert!(p.alloc(60_000).is_some());
    assert_eq!(p.stats().mapped_bytes, 4 << 20);
    let _ = GRANULE;
}

#[test]
fn a_capacity_past_the_limit_is_refused_with_a_clear_error() {
    for capacity in [0, nta_core::MAX_CAPACITY + 1, usize::MAX] {
        let err = Pool::builder().capacity(capacity).build().unwrap_err();
        assert!(matches!(err, nta_core::Error::InvalidConfig(_)), "{capacity}: {err}");
    }
}
