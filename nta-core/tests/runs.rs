//! Buffers above 2 MiB: runs of whole segments, served up to the capacity,
//! resized in place, given back whole.

use nta_core::{HugePages, Pool, MAX_ALLOC_BYTES};
use std::ptr::NonNull;

const MIB: usize = 1 << 20;

fn pool(capacity: usize) -> Pool {
    Pool::builder()
        .capacity(capacity)
        .shards(2)
        .hugepages(HugePages::Off)
        .release_delay(std::time::Duration::ZERO)
        .build()
        .unwrap()
}

fn fill(p: NonNull<u8>, len: usize, byte: u8) {
    // SAFETY: the caller's live buffer of at least `len` bytes.
    unsafe { p.as_ptr().write_bytes(byte, len) };
}

fn holds(p: NonNull<u8>, len: usize, byte: u8) -> bool {
    // SAFETY: as in `fill`.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }.iter().all(|&b| b == byte)
}

#[test]
fn three_mebibytes_in_a_nearly_empty_pool() {
    let p = pool(256 * MIB);
    let small = p.alloc(1500).unwrap();
    let big = p.alloc(3 * MIB).expect("a 3 MiB buffer from a 256 MiB pool");
    fill(big, 3 * MIB, 0x33);
    assert_eq!(big.as_ptr() as usize % (2 * MIB), 0, "runs start on a segment");
    let st = p.stats();
    assert_eq!(st.runs, 1);
    assert!(st.in_use_bytes >= 4 * MIB as u64, "the run's two segments count as in use: {st:?}");
    p.validate().unwrap();
    // SAFETY: live buffers, freed once.
    unsafe {
        assert_eq!(p.usable_size(big), 3 * MIB);
        p.free(big);
        p.free(small);
    }
    p.validate().unwrap();
    let st = p.stats();
    assert_eq!((st.runs, st.in_use_bytes), (0, 0));
}

#[test]
fn the_largest_request_is_bounded_by_the_capacity() {
    let p = pool(64 * MIB);
    let all = p.alloc(64 * MIB).expect("the whole capacity as one buffer");
    fill(all, 64 * MIB, 1);
    assert!(p.alloc(32).is_none(), "nothing left");
    // SAFETY: live, freed once.
    unsafe { p.free_sized(all, 64 * MIB) };
    assert!(p.alloc(64 * MIB + 1).is_none(), "one byte over the capacity");
    assert!(p.alloc(usize::MAX).is_none());
    assert!(p.alloc(usize::MAX / 2).is_none());
    let x = p.alloc(10 * MIB).unwrap();
    // SAFETY: live.
    unsafe { p.free(x) };
    p.validate().unwrap();
    assert!(p.stats().failed_allocs >= 4);
}

#[test]
fn runs_shrink_and_grow_in_place() {
    let p = pool(64 * MIB);
    let a = p.alloc(7 * MIB).unwrap(); // 4 segments
    fill(a, 7 * MIB, 7);
    // SAFETY: `a` is live throughout; every length below is checked.
    unsafe {
        p.shrink(a, 3 * MIB); // 2 segments: the other 2 go back
        assert_eq!(p.stats().in_use_bytes, 4 * MIB as u64);
        assert!(holds(a, 3 * MIB, 7));
        assert!(p.try_grow(a, 6 * MIB), "the slots after the run are still free");
        assert_eq!(p.stats().in_use_bytes, 6 * MIB as u64);
        fill(a, 6 * MIB, 6);
        p.shrink(a, 100); // one segment left
        assert_eq!(p.usable_size(a), 128);
        assert!(p.try_grow(a, 4 * MIB));
        let b = p.realloc(a, 40 * MIB).expect("room for 40 MiB");
        assert!(holds(b, 100, 6), "realloc kept the bytes");
        p.validate().unwrap();
        p.free(b);
    }
    p.validate().unwrap();
    assert_eq!(p.stats().in_use_bytes, 0);
}

#[test]
fn a_run_cannot_grow_into_a_used_slot() {
    let p = pool(16 * MIB);
    let a = p.alloc(3 * MIB).unwrap(); // the top two slots (6, 7)
    let b = p.alloc(3 * MIB).unwrap(); // slots 4, 5: right below a
    assert_eq!(b.as_ptr() as usize + 4 * MIB, a.as_ptr() as usize);
    // SAFETY: live buffers.
    unsafe {
        assert!(!p.try_grow(b, 5 * MIB), "a is in the way");
        assert!(p.try_grow(b, 4 * MIB), "within its own two segments");
        p.free(a);
        assert!(p.try_grow(b, 8 * MIB), "a's slots are free now");
        p.free(b);
    }
    p.validate().unwrap();
}

#[test]
fn run_memory_goes_back_to_the_os() {
    let p = Pool::builder()
        .capacity(512 * MIB)
        .shards(1)
        .hugepages(HugePages::Off)
        .retain_bytes(0)
        .release_delay(std::time::Duration::ZERO)
        .build()
        .unwrap();
    let a = p.alloc(200 * MIB).unwrap();
    fill(a, 200 * MIB, 9);
    assert_eq!(p.stats().mapped_bytes, 200 * MIB as u64);
    // SAFETY: live, freed once.
    unsafe { p.free(a) };
    assert_eq!(p.stats().mapped_bytes, 0, "a freed run beyond the watermark is unmapped");
    p.validate().unwrap();
}

#[test]
fn runs_and_nodes_share_the_range() {
    let p = pool(32 * MIB);
    let mut small = Vec::new();
    for i in 0..2000 {
        let len = [64, 594, 1518, 9000][i % 4];
        small.push((p.alloc(len).unwrap(), len));
    }
    let mut runs = Vec::new();
    while let Some(r) = p.alloc(5 * MIB) {
        fill(r, 5 * MIB, 0xEE);
        runs.push(r);
    }
    assert!(!runs.is_empty());
    p.validate().unwrap();
    for r in runs {
        assert!(holds(r, 5 * MIB, 0xEE));
        // SAFETY: live.
        unsafe { p.free(r) };
    }
    for (c, len) in small {
        // SAFETY: live.
        unsafe { p.free_sized(c, len) };
    }
    p.collect();
    p.validate().unwrap();
    assert_eq!(p.stats().in_use_bytes, 0);
    const { assert!(MAX_ALLOC_BYTES == 2 * MIB) };
}

#[test]
fn a_run_resized_below_2_mib_is_still_a_run() {
    // Found by the model test: a run shrunk to a cacheable size and then
    // freed with that size must go back as a run, not into a thread cache.
    let p = pool(16 * MIB);
    let a = p.alloc(2_399_208).unwrap();
    // SAFETY: `a` is live; freed once.
    unsafe {
        let b = p.realloc(a, 1995).unwrap();
        assert_eq!(a, b, "shrunk in place");
        assert_eq!(p.stats().runs, 1);
        p.free_sized(b, 1995);
    }
    assert_eq!(p.stats().runs, 0);
    p.validate().unwrap();
    assert_eq!(p.stats().in_use_bytes, 0);
}

#[test]
fn a_run_gives_back_the_pages_past_its_length() {
    // Segments freed by a run stay mapped (the retain watermark) with the
    // pages their user touched; a shorter run that takes them again must
    // not keep its tail resident.
    let p = pool(64 * MIB);
    let a = p.alloc(4 * MIB).unwrap();
    fill(a, 4 * MIB, 1);
    // SAFETY: live, freed once.
    unsafe { p.free(a) };
    let before = p.stats().discarded_bytes;
    let len = 2 * MIB + 8192 + 5;
    let b = p.alloc(len).unwrap();
    // The last segment keeps its first three pages (8197 bytes used).
    let tail = (2 * MIB - 3 * 4096) as u64;
    assert_eq!(p.stats().discarded_bytes - before, tail);
    fill(b, len, 2);
    // Shrinking in place gives back the pages past the new length.
    // SAFETY: live; shrinks keep the pointer.
    unsafe { p.shrink(b, 2 * MIB + 100) };
    assert_eq!(p.stats().discarded_bytes - before, tail + (2 * MIB - 4096) as u64);
    assert!(holds(b, 2 * MIB + 100, 2), "a shrink keeps the bytes below the new length");
    // Growing again hands out the discarded bytes as new ones.
    // SAFETY: live; `c` replaces `b`.
    let c = unsafe { p.realloc(b, len) }.unwrap();
    assert!(holds(c, 2 * MIB + 100, 2));
    fill(c, len, 3);
    assert!(holds(c, len, 3));
    // SAFETY: live, freed once.
    unsafe { p.free(c) };
    p.validate().unwrap();
}
