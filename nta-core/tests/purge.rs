//! Wholly free memory gives its pages back after the purge delay while the
//! pool keeps working (`PoolBuilder::purge_delay`, module `purge`): the
//! wholly free node a shard keeps and the parked segments the table
//! retains stay mapped, but lose their pages.

use nta_core::{HugePages, Pool};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const SEGMENT: usize = 2 << 20;
const BIG: usize = 1536 << 10;
const SMALL: usize = 3 << 10;

fn pool(delay: Duration) -> Pool {
    let p = Pool::builder().capacity(32 << 20).shards(1).hugepages(HugePages::Off).purge_delay(delay).build().unwrap();
    p.bind_current_thread(0);
    p
}

/// Resident pages of the segment holding `p`, by `mincore`.
fn resident_pages_of_segment(p: NonNull<u8>) -> usize {
    let base = p.as_ptr() as usize & !(SEGMENT - 1);
    let mut vec = vec![0u8; SEGMENT / PAGE];
    // SAFETY: the pool keeps its segments mapped (parked ones included);
    // `vec` has one byte per page.
    let rc = unsafe { libc::mincore(base as *mut _, SEGMENT, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

/// Work that takes the shard's slow paths: chunks above the thread caches'
/// sizes, allocated and freed at once (carved from the segment with a live
/// anchor, so the wholly free ones stay wholly free).
fn work(p: &Pool, pairs: usize) {
    for _ in 0..pairs {
        let c = p.alloc(SMALL).unwrap();
        // SAFETY: a fresh chunk of SMALL bytes, freed once.
        unsafe {
            c.as_ptr().write_bytes(0x5a, SMALL);
            p.free_sized(c, SMALL);
        }
    }
}

/// An anchor chunk, then three 1.5 MiB buffers (one per segment after the
/// anchor's), every byte written, then freed: one segment is kept whole by
/// the shard, two are parked. Returns the anchor and the buffers' addresses.
fn spread_then_free(p: &Pool) -> (NonNull<u8>, Vec<NonNull<u8>>) {
    let anchor = p.alloc(8192).unwrap();
    // SAFETY: a fresh chunk of 8192 bytes.
    unsafe { anchor.as_ptr().write_bytes(0x11, 8192) };
    let bigs: Vec<_> = (0..4).map(|_| p.alloc(BIG).unwrap()).collect();
    for b in &bigs {
        // SAFETY: a fresh chunk of BIG bytes.
        unsafe { b.as_ptr().write_bytes(0x22, BIG) };
    }
    // The first buffer shares the anchor's segment; the others have one each.
    let anchor_seg = anchor.as_ptr() as usize / SEGMENT;
    let others: Vec<_> = bigs.iter().copied().filter(|b| b.as_ptr() as usize / SEGMENT != anchor_seg).collect();
    assert_eq!(others.len(), 3, "three buffers in segments of their own");
    for b in &bigs {
        assert!(resident_pages_of_segment(*b) >= BIG / PAGE);
        // SAFETY: live chunks of this pool, freed once.
        unsafe { p.free_sized(*b, BIG) };
    }
    (anchor, others)
}

fn check_and_reuse(p: &Pool, anchor: NonNull<u8>) {
    // SAFETY: the anchor is a live chunk of 8192 bytes.
    assert!(unsafe { std::slice::from_raw_parts(anchor.as_ptr(), 8192) }.iter().all(|&b| b == 0x11));
    p.validate().unwrap();
    // Purged memory is carved and used again like any other.
    let again: Vec<_> = (0..3).map(|_| p.alloc(BIG).unwrap()).collect();
    for (i, b) in again.iter().enumerate() {
        // SAFETY: fresh chunks of BIG bytes.
        unsafe {
            b.as_ptr().write_bytes(i as u8 + 1, BIG);
            assert!(std::slice::from_raw_parts(b.as_ptr(), BIG).iter().all(|&x| x == i as u8 + 1));
        }
    }
    for b in again {
        // SAFETY: live chunks, freed once.
        unsafe { p.free_sized(b, BIG) };
    }
    // SAFETY: live, freed once.
    unsafe { p.free_sized(anchor, 8192) };
    p.validate().unwrap();
}

#[test]
fn a_working_pool_purges_its_kept_node_and_parked_segments_after_the_delay() {
    let p = pool(Duration::from_millis(20));
    let (anchor, freed) = spread_then_free(&p);
    let before = p.stats().discarded_bytes;
    // Keep the pool working until every freed segment is down to the pages
    // of the kept node's boundary tags (at most two each).
    let start = Instant::now();
    loop {
        work(&p, 64);
        let resident: Vec<_> = freed.iter().map(|b| resident_pages_of_segment(*b)).collect();
        if resident.iter().all(|&r| r <= 2) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still resident after 10 s of work: {resident:?} pages");
        std::thread::sleep(Duration::from_millis(2));
    }
    let s = p.stats();
    assert!(s.discarded_bytes - before >= 3 * (SEGMENT - 2 * PAGE) as u64, "{s:?}");
    assert_eq!(s.mapped_bytes, 4 * SEGMENT as u64, "purged segments stay mapped: {s:?}");
    check_and_reuse(&p, anchor);
}

#[test]
fn purging_can_be_turned_off() {
    let p = pool(Duration::MAX);
    let (anchor, freed) = spread_then_free(&p);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(150) {
        work(&p, 64);
        std::thread::sleep(Duration::from_millis(2));
    }
    for b in &freed {
        assert!(resident_pages_of_segment(*b) >= BIG / PAGE, "kept its pages");
    }
    assert_eq!(p.stats().discarded_bytes, 0);
    check_and_reuse(&p, anchor);
}

#[test]
fn a_node_emptied_again_and_again_keeps_its_pages() {
    // A 1 MiB anchor leaves its segment too little room for a 1.5 MiB
    // buffer, so every buffer comes from the node the shard keeps, while
    // the small chunks of `work` come from the anchor's segment. Each round
    // empties the kept node again and then takes the slow paths often
    // enough for the clock to be read while the node is wholly free: its
    // wait starts over every round, so it is never purged. (The delay is
    // long so that a loaded machine's scheduling stalls stay far below it.)
    let p = pool(Duration::from_millis(1000));
    let anchor = p.alloc(1 << 20).unwrap();
    let first = p.alloc(BIG).unwrap();
    assert_ne!(first.as_ptr() as usize / SEGMENT, anchor.as_ptr() as usize / SEGMENT);
    // SAFETY: a fresh chunk of BIG bytes, freed once.
    unsafe {
        first.as_ptr().write_bytes(0x22, BIG);
        p.free_sized(first, BIG);
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        let b = p.alloc(BIG).unwrap();
        assert_eq!(b, first, "the kept node is carved again");
        // SAFETY: live, freed once.
        unsafe { p.free_sized(b, BIG) };
        work(&p, 40);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(resident_pages_of_segment(first) >= BIG / PAGE, "kept its pages");
    assert_eq!(p.stats().discarded_bytes, 0);
    // Once the rounds stop, the same node goes after the delay.
    let start = Instant::now();
    while resident_pages_of_segment(first) > 2 {
        work(&p, 64);
        assert!(start.elapsed() < Duration::from_secs(10), "the node kept its pages after the rounds stopped");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: live, freed once.
    unsafe { p.free_sized(anchor, 1 << 20) };
    p.validate().unwrap();
}
