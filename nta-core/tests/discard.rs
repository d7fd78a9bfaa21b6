//! Free pages inside live segments go back to the OS (`Pool::trim`, decay)
//! unless the pool has been exported: segments are sealed only from the
//! first export on, and a sealed memfd keeps its pages.

use nta_core::{HugePages, Pool, SegmentExport, SegmentListener};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const BIG: usize = 1 << 20;

fn pool(exportable: bool, decay: Option<Duration>) -> Pool {
    let mut b = Pool::builder().capacity(16 << 20).shards(1).hugepages(HugePages::Off).exportable(exportable);
    if let Some(after) = decay {
        b = b.decay(after);
    }
    b.build().unwrap()
}

/// Resident pages of `len` bytes at `at` (page aligned), by `mincore`.
fn resident_pages(at: *const u8, len: usize) -> usize {
    let mut vec = vec![0u8; len / PAGE];
    // SAFETY: a mapped range of the pool; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(at as *mut _, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

/// A live chunk on each side of a freed 1 MiB buffer whose pages were all
/// written: returns (left, right, the freed buffer's address). The freed
/// buffer's extent cannot merge into a wholly free node (the neighbours
/// are live), so only a page-level give-back can make it non-resident.
fn live_hole(p: &Pool) -> (NonNull<u8>, NonNull<u8>, NonNull<u8>) {
    p.bind_current_thread(0);
    let left = p.alloc(8192).unwrap();
    let big = p.alloc(BIG).unwrap();
    let right = p.alloc(8192).unwrap();
    // SAFETY: fresh chunks of those lengths.
    unsafe {
        left.as_ptr().write_bytes(0x11, 8192);
        big.as_ptr().write_bytes(0x22, BIG);
        right.as_ptr().write_bytes(0x33, 8192);
    }
    // SAFETY: a live chunk of this pool, freed once.
    unsafe { p.free_sized(big, BIG) };
    (left, right, big)
}

/// The whole pages strictly inside the freed buffer.
fn inner(big: NonNull<u8>) -> (*const u8, usize) {
    let lo = (big.as_ptr() as usize + PAGE).next_multiple_of(PAGE);
    let hi = (big.as_ptr() as usize + BIG - PAGE) & !(PAGE - 1);
    (lo as *const u8, hi - lo)
}

fn check_neighbours_and_reuse(p: &Pool, left: NonNull<u8>, right: NonNull<u8>) {
    // SAFETY: live chunks of 8192 bytes.
    unsafe {
        assert!(std::slice::from_raw_parts(left.as_ptr(), 8192).iter().all(|&b| b == 0x11), "left neighbour intact");
        assert!(std::slice::from_raw_parts(right.as_ptr(), 8192).iter().all(|&b| b == 0x33), "right neighbour intact");
    }
    p.validate().unwrap();
    // The discarded range is carved again and used like any other memory.
    let again = p.alloc(BIG).unwrap();
    // SAFETY: a fresh chunk of BIG bytes.
    unsafe {
        again.as_ptr().write_bytes(0x44, BIG);
        assert!(std::slice::from_raw_parts(again.as_ptr(), BIG).iter().all(|&b| b == 0x44));
        p.free_sized(again, BIG);
        p.free_sized(left, 8192);
        p.free_sized(right, 8192);
    }
    p.validate().unwrap();
}

fn trim_gives_back_the_pages_of_a_free_extent(exportable: bool) {
    let p = pool(exportable, None);
    let (left, right, big) = live_hole(&p);
    let (at, len) = inner(big);
    assert_eq!(resident_pages(at, len), len / PAGE, "the freed buffer's pages are resident before the trim");
    p.trim();
    assert_eq!(resident_pages(at, len), 0, "every page inside the free extent went back");
    let st = p.stats();
    assert!(st.discarded_bytes >= len as u64, "{} discarded, at least {len} expected", st.discarded_bytes);
    assert_eq!(st.in_use_bytes, 2 * 8192);
    check_neighbours_and_reuse(&p, left, right);
}

#[test]
fn trim_gives_back_free_pages_of_a_memfd_segment() {
    trim_gives_back_the_pages_of_a_free_extent(true);
}

#[test]
fn trim_gives_back_free_pages_of_a_private_segment() {
    trim_gives_back_the_pages_of_a_free_extent(false);
}

struct Quiet;
impl SegmentListener for Quiet {
    fn mapped(&self, _: SegmentExport) {}
    fn released(&self, _: u32, _: u64) {}
}

fn seals(fd: i32) -> i32 {
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_GET_SEALS) }
}

#[test]
fn segments_are_sealed_from_the_first_export_on_and_then_keep_their_pages() {
    let p = pool(true, None);
    let (left, right, big) = live_hole(&p);
    let (at, len) = inner(big);
    let segs = p.watch_segments(Some(Arc::new(Quiet))).unwrap();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].sealed, "a segment mapped before the export is sealed by it");
    assert_ne!(seals(segs[0].fd.as_raw_fd()) & libc::F_SEAL_FUTURE_WRITE, 0);
    p.trim();
    assert_eq!(resident_pages(at, len), len / PAGE, "a sealed segment keeps its pages");
    assert_eq!(p.stats().discarded_bytes, 0);
    // A segment mapped after the export is sealed as it is mapped, and
    // stays so once the exporter is gone.
    p.watch_segments(None).unwrap();
    let more: Vec<_> = (0..3).map(|_| p.alloc(1 << 20).unwrap()).collect();
    let later = p.watch_segments(Some(Arc::new(Quiet))).unwrap();
    assert!(later.len() >= 2);
    assert!(later.iter().all(|e| e.sealed && seals(e.fd.as_raw_fd()) & libc::F_SEAL_FUTURE_WRITE != 0));
    p.watch_segments(None).unwrap();
    for c in more {
        // SAFETY: live chunks, freed once.
        unsafe { p.free_sized(c, 1 << 20) };
    }
    check_neighbours_and_reuse(&p, left, right);
}

#[test]
fn decay_gives_back_free_pages_with_no_call_into_the_pool() {
    let p = pool(true, Some(Duration::from_millis(100)));
    let (left, right, big) = live_hole(&p);
    let (at, len) = inner(big);
    let t = Instant::now();
    while resident_pages(at, len) > 0 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(resident_pages(at, len), 0, "decay gave the free pages back within {:?}", t.elapsed());
    assert!(p.stats().discarded_bytes >= len as u64);
    check_neighbours_and_reuse(&p, left, right);
}

#[test]
fn retained_free_segments_stay_mapped_but_give_back_their_pages() {
    let p = Pool::builder()
        .capacity(32 << 20)
        .shards(1)
        .hugepages(HugePages::Off)
        .retain_bytes(16 << 20)
        .release_delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    p.bind_current_thread(0);
    // Six buffers of 1.5 MiB: six segments, then all free. The shard keeps
    // one wholly free node and the table retains the others, mapped.
    let bufs: Vec<_> = (0..6).map(|_| p.alloc(3 << 19).unwrap()).collect();
    for &b in &bufs {
        // SAFETY: fresh chunks of 1.5 MiB.
        unsafe { b.as_ptr().write_bytes(0x55, 3 << 19) };
    }
    for &b in &bufs {
        // SAFETY: live chunks, freed once.
        unsafe { p.free_sized(b, 3 << 19) };
    }
    let (base, _) = p.memory_range();
    let mapped = p.stats().mapped_bytes as usize;
    assert_eq!(mapped, 6 << 21);
    assert!(resident_pages(base.as_ptr(), mapped) >= 6 * 384, "each buffer wrote 384 pages");
    p.trim();
    assert_eq!(p.stats().mapped_bytes as usize, mapped, "the retained segments stay mapped");
    // What stays: the two tag pages of the node the shard keeps.
    assert!(resident_pages(base.as_ptr(), mapped) <= 2, "{} pages resident", resident_pages(base.as_ptr(), mapped));
    assert!(p.stats().discarded_bytes >= (mapped - 2 * PAGE) as u64 - (6 * 128 * PAGE) as u64);
    // And they serve again.
    let again: Vec<_> = (0..6).map(|_| p.alloc(3 << 19).unwrap()).collect();
    for &b in &again {
        // SAFETY: fresh chunks of 1.5 MiB, freed once.
        unsafe {
            b.as_ptr().write_bytes(0x66, 3 << 19);
            assert!(std::slice::from_raw_parts(b.as_ptr(), 3 << 19).iter().all(|&x| x == 0x66));
            p.free_sized(b, 3 << 19);
        }
    }
    p.validate().unwrap();
}

#[test]
fn a_premapped_pool_never_gives_a_page_back() {
    // Its range may be registered with io_uring, which pins the pages.
    let p = Pool::builder().capacity(8 << 20).shards(1).hugepages(HugePages::Off).premap(true).build().unwrap();
    let (left, right, big) = live_hole(&p);
    let (at, len) = inner(big);
    p.trim();
    assert_eq!(resident_pages(at, len), len / PAGE, "every page stays");
    assert_eq!(p.stats().discarded_bytes, 0);
    check_neighbours_and_reuse(&p, left, right);
}
