//! The export surface: sealed read-only segment memfds named after their
//! slot, generations that change when a slot is released or mapped again,
//! a listener that sees both, chunk locations, and postponed frees.

use nta_core::{Backing, FreeHook, HugePages, Pool, SegmentExport, SegmentListener};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEG: usize = 2 << 20;

fn pool(hugepages: HugePages) -> Pool {
    Pool::builder()
        .capacity(16 << 20)
        .shards(1)
        .hugepages(hugepages)
        .retain_bytes(0)
        .release_delay(Duration::ZERO)
        .build()
        .unwrap()
}

/// Maps `e` read-only in this process, as a reader would.
fn map_ro(e: &SegmentExport) -> *const u8 {
    // SAFETY: a read-only shared mapping of a file we were handed.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), e.len, libc::PROT_READ, libc::MAP_SHARED, e.fd.as_raw_fd(), 0) };
    assert_ne!(p, libc::MAP_FAILED, "read-only mapping of an exported segment");
    p.cast()
}

fn mapping_names() -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| l.split("memfd:").nth(1).map(|n| n.split_whitespace().next().unwrap().to_owned()))
        .collect()
}

fn exported_segments_are_sealed_and_read_only(hugepages: HugePages) {
    let p = pool(hugepages);
    let a = p.alloc(1500).unwrap();
    // SAFETY: fresh chunk.
    unsafe { a.as_ptr().write_bytes(0x5A, 1500) };
    let segs = p.watch_segments(None).unwrap();
    assert!(segs.is_empty(), "no listener, no snapshot");
    let segs = p.watch_segments(Some(Arc::new(Recorder::default()))).unwrap();
    assert_eq!(segs.len(), 1);
    let e = &segs[0];
    assert!(e.sealed, "sealed against new writers");
    assert!(e.generation != 0);
    if hugepages == HugePages::Require {
        assert_eq!(e.backing, Backing::Hugetlb);
    }
    assert!(mapping_names().iter().any(|n| n == &format!("nta-seg-{}", e.segment)), "{:?}", mapping_names());
    let loc = p.locate(a.as_ptr()).unwrap();
    assert_eq!((loc.segment, loc.generation), (e.segment, e.generation));
    let view = map_ro(e);
    // SAFETY: the reader's mapping is 2 MiB long; `loc.offset + 1500` fits.
    let bytes = unsafe { std::slice::from_raw_parts(view.add(loc.offset as usize), 1500) };
    assert!(bytes.iter().all(|&b| b == 0x5A), "the reader sees the packet where it lies");
    // SAFETY: deliberately denied operations on our own descriptors.
    unsafe {
        let w = libc::mmap(
            std::ptr::null_mut(),
            SEG,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            e.fd.as_raw_fd(),
            0,
        );
        assert_eq!(w, libc::MAP_FAILED, "a writable mapping of the read-only descriptor");
        assert_ne!(libc::mprotect(view as *mut _, 4096, libc::PROT_READ | libc::PROT_WRITE), 0, "mprotect to writable");
        let path = std::ffi::CString::new(format!("/proc/self/fd/{}", e.fd.as_raw_fd())).unwrap();
        let rw = libc::open(path.as_ptr(), libc::O_RDWR);
        if rw >= 0 {
            let w = libc::mmap(std::ptr::null_mut(), SEG, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, rw, 0);
            assert_eq!(w, libc::MAP_FAILED, "the seal stops a writable mapping even through a read-write re-open");
            libc::close(rw);
        }
        libc::munmap(view as *mut _, SEG);
        p.free(a);
    }
    p.watch_segments(None).unwrap();
}

#[test]
fn shmem_segments_are_sealed_and_read_only() {
    exported_segments_are_sealed_and_read_only(HugePages::Off);
}

#[test]
fn hugetlb_segments_are_sealed_and_read_only() {
    let reserved: usize = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap().trim().parse().unwrap();
    if reserved == 0 {
        println!("no hugepages reserved: the hugetlb case is covered where CI reserves them");
        return;
    }
    exported_segments_are_sealed_and_read_only(HugePages::Require);
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(bool, u32, u64)>>,
}

impl SegmentListener for Recorder {
    fn mapped(&self, segment: SegmentExport) {
        assert!(segment.sealed);
        self.events.lock().unwrap().push((true, segment.segment, segment.generation));
    }
    fn released(&self, segment: u32, generation: u64) {
        self.events.lock().unwrap().push((false, segment, generation));
    }
}

#[test]
fn generations_change_and_the_listener_sees_every_change() {
    let p = pool(HugePages::Off);
    let rec = Arc::new(Recorder::default());
    assert!(p.watch_segments(Some(rec.clone())).unwrap().is_empty());
    // Two whole nodes: the second release goes back to the OS.
    let a = p.alloc(SEG).unwrap();
    let b = p.alloc(SEG).unwrap();
    let (la, lb) = (p.locate(a.as_ptr()).unwrap(), p.locate(b.as_ptr()).unwrap());
    // SAFETY: fresh chunks.
    unsafe {
        a.as_ptr().write_bytes(1, SEG);
        b.as_ptr().write_bytes(2, SEG);
    }
    assert_ne!(la.generation, lb.generation);
    // A reader maps b's segment, from the snapshot taken by a second watch.
    let snap = p.watch_segments(Some(rec.clone())).unwrap();
    let eb = snap.iter().find(|e| e.segment == lb.segment).unwrap();
    let view = map_ro(eb);
    // SAFETY: live chunks, freed once.
    unsafe {
        p.free(a);
        p.free(b);
    }
    let released: Vec<_> = rec.events.lock().unwrap().iter().filter(|e| !e.0).copied().collect();
    assert!(!released.is_empty(), "a release was announced");
    let gone = released[0];
    assert!(
        p.locate(p.memory_range().0.as_ptr().wrapping_add(gone.1 as usize * SEG)).is_none(),
        "unmapped: no location"
    );
    // The slot is mapped again: a new file and a new generation.
    let c = p.alloc(SEG).unwrap();
    let d = p.alloc(SEG).unwrap();
    let lc = p.locate(c.as_ptr()).unwrap();
    let ld = p.locate(d.as_ptr()).unwrap();
    let again = [lc, ld].into_iter().find(|l| l.segment == gone.1).expect("the released slot is mapped again");
    assert!(again.generation > gone.2, "mapped again: a new generation ({} after {})", again.generation, gone.2);
    // SAFETY: fresh chunks; the reader's old mapping is 2 MiB long.
    unsafe {
        c.as_ptr().write_bytes(3, SEG);
        d.as_ptr().write_bytes(4, SEG);
        // The reader that kept the released segment mapped still reads its
        // old bytes, never the new segment's.
        let old = std::slice::from_raw_parts(view, SEG);
        assert!(old.iter().all(|&x| x == 2 || x == 0), "old mapping shows old bytes");
        assert!(!old.contains(&3) && !old.contains(&4));
        libc::munmap(view as *mut _, SEG);
        p.free(c);
        p.free(d);
    }
    let events = rec.events.lock().unwrap().clone();
    let mapped = events.iter().filter(|e| e.0).count();
    assert!(mapped >= 3, "every new segment was announced: {events:?}");
    for (i, e) in events.iter().enumerate().filter(|(_, e)| !e.0) {
        assert!(
            events[..i].iter().any(|m| m.0 && m.1 == e.1 && m.2 == e.2),
            "released {e:?} was announced as mapped first"
        );
    }
    p.validate().unwrap();
}

#[test]
fn private_pools_export_nothing() {
    let p = Pool::builder().capacity(8 << 20).exportable(false).build().unwrap();
    let _a = p.alloc(64).unwrap();
    assert!(p.watch_segments(Some(Arc::new(Recorder::default()))).is_err());
    assert!(!p.is_exportable());
}

/// Postpones every free of a chunk in `held`.
#[derive(Default)]
struct Holds {
    held: Mutex<Vec<usize>>,
    postponed: Mutex<Vec<(usize, Option<usize>)>>,
}

impl FreeHook for Holds {
    fn on_free(&self, chunk: NonNull<u8>, len: Option<usize>) -> bool {
        let a = chunk.as_ptr() as usize;
        if self.held.lock().unwrap().contains(&a) {
            self.postponed.lock().unwrap().push((a, len));
            return true;
        }
        false
    }
}

#[test]
fn a_held_chunk_stays_allocated_until_its_free_completes() {
    let p = pool(HugePages::Off);
    let hook = Arc::new(Holds::default());
    p.set_free_hook(Some(hook.clone()));
    let a = p.alloc(1500).unwrap();
    let b = p.alloc(1500).unwrap();
    // SAFETY: fresh chunks.
    unsafe { a.as_ptr().write_bytes(0xAA, 1500) };
    hook.held.lock().unwrap().push(a.as_ptr() as usize);
    // SAFETY: live chunks, freed once each.
    unsafe {
        p.free_sized(a, 1500);
        p.free_sized(b, 1500);
    }
    assert_eq!(hook.postponed.lock().unwrap().len(), 1);
    assert_eq!(p.stats().in_use_bytes, 1504, "the held chunk is still in use");
    // Nothing reuses it meanwhile.
    let others: Vec<_> = (0..200).map(|_| p.alloc(1500).unwrap()).collect();
    assert!(!others.contains(&a));
    // SAFETY: `a` is held, so its bytes are intact.
    assert!(unsafe { std::slice::from_raw_parts(a.as_ptr(), 1500) }.iter().all(|&x| x == 0xAA));
    for o in others {
        // SAFETY: live chunks.
        unsafe { p.free(o) };
    }
    p.validate().unwrap();
    let (addr, len) = hook.postponed.lock().unwrap()[0];
    p.set_free_hook(None);
    // SAFETY: `a`'s free was postponed once; completed once here.
    unsafe { p.free_postponed(NonNull::new(addr as *mut u8).unwrap(), len) };
    p.collect();
    p.validate().unwrap();
    assert_eq!(p.stats().in_use_bytes, 0);
}

#[test]
fn a_double_free_is_still_caught_with_a_hook() {
    let p = pool(HugePages::Off);
    p.set_free_hook(Some(Arc::new(Holds::default())));
    let a = p.alloc(9000).unwrap();
    // SAFETY: the first free is valid.
    unsafe { p.free(a) };
    // SAFETY: deliberately invalid.
    let second = std::panic::catch_unwind(|| unsafe { p.free(a) });
    let msg = second.unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("double free"), "{msg}");
}

#[test]
fn chunk_start_finds_the_chunk_of_any_interior_pointer() {
    let p = Pool::builder().capacity(64 << 20).shards(2).hugepages(HugePages::Off).build().unwrap();
    // Small chunks (page nodes), medium ones (huge-node level), and a run
    // of three segments.
    let lens = [1usize, 31, 32, 100, 1500, 4000, 9000, 300_000, 5 << 20];
    let chunks: Vec<_> = lens.iter().map(|&n| (p.alloc(n).unwrap(), n)).collect();
    for &(c, n) in &chunks {
        // SAFETY: live chunks.
        let usable = unsafe { p.usable_size(c) };
        assert!(usable >= n);
        for at in [0, 1, 31, 32, n / 2, n - 1, usable - 1].into_iter().filter(|&at| at < usable) {
            let inside = c.as_ptr().wrapping_add(at);
            assert_eq!(p.chunk_start(inside), Some(c), "{n}-byte chunk, byte {at}");
        }
        let loc = p.locate(c.as_ptr()).unwrap();
        if n > (2 << 20) {
            assert_eq!(loc.shard, None, "a run has no owner shard");
        } else {
            assert!(loc.shard.is_some_and(|s| (s as usize) < p.shard_count()));
        }
    }
    let outside = 7u8;
    assert_eq!(p.chunk_start(&outside), None);
    for (c, n) in chunks {
        // SAFETY: live chunks, freed once.
        unsafe { p.free_sized(c, n) };
    }
}

/// Counts the frees it is shown and declines them all.
#[derive(Default)]
struct Counts(std::sync::atomic::AtomicUsize);

impl FreeHook for Counts {
    fn on_free(&self, _chunk: NonNull<u8>, _len: Option<usize>) -> bool {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        false
    }
}

#[test]
fn the_hook_sees_every_free_exactly_once_and_declined_frees_still_use_the_cache() {
    let p = pool(HugePages::Off);
    let hook = Arc::new(Counts::default());
    p.set_free_hook(Some(hook.clone()));
    // Sized frees of cacheable sizes (enough to overflow the thread
    // cache), sized frees too big for it, and unsized frees.
    let n = 5000;
    let small: Vec<_> = (0..n).map(|_| p.alloc(64).unwrap()).collect();
    let big: Vec<_> = (0..20).map(|_| p.alloc(100_000).unwrap()).collect();
    let plain: Vec<_> = (0..30).map(|_| p.alloc(200).unwrap()).collect();
    // SAFETY: live chunks, freed once each.
    unsafe {
        small.iter().for_each(|&c| p.free_sized(c, 64));
        big.iter().for_each(|&c| p.free_sized(c, 100_000));
        plain.iter().for_each(|&c| p.free(c));
    }
    assert_eq!(hook.0.load(std::sync::atomic::Ordering::Relaxed), n + 20 + 30);
    // A declined sized free parked in the thread cache: the next alloc of
    // that size reuses it.
    let a = p.alloc(64).unwrap();
    // SAFETY: live, freed once.
    unsafe { p.free_sized(a, 64) };
    let b = p.alloc(64).unwrap();
    assert_eq!(a, b, "the declined free went to the thread cache");
    // SAFETY: live, freed once.
    unsafe { p.free_sized(b, 64) };
    p.set_free_hook(None);
    p.collect();
    p.validate().unwrap();
    assert_eq!(p.stats().in_use_bytes, 0);
}
