//! Nothing stranded: before an allocation fails, the pool gathers free
//! memory from idle threads' caches, other shards' queues and caches, and
//! other shards' mostly free nodes.

use nta_core::{HugePages, Pool};
use std::ptr::NonNull;
use std::sync::mpsc;

const MIB: usize = 1 << 20;

/// The probe from the soundness issue: in a 16 MiB pool with 2 shards,
/// thread A fills the pool with 600-byte chunks, frees them all, then idles
/// (alive, its caches full). Thread B must then get at least 95% of the
/// capacity in 64 KiB chunks.
#[test]
fn idle_thread_frees_everything_other_thread_gets_95_percent() {
    let pool = Pool::builder().capacity(16 * MIB).shards(2).hugepages(HugePages::Off).build().unwrap();
    let (filled_tx, filled_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let a = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.bind_current_thread(0);
            let mut chunks = Vec::new();
            while let Some(p) = pool.alloc(600) {
                chunks.push(p.as_ptr() as usize);
            }
            let n = chunks.len();
            for c in chunks {
                // SAFETY: our own live chunks, freed once.
                unsafe { pool.free_sized(NonNull::new(c as *mut u8).unwrap(), 600) };
            }
            filled_tx.send(n).unwrap();
            // Idle, alive, with a full thread cache, until B is done.
            let _ = done_rx.recv();
        })
    };
    let filled = filled_rx.recv().unwrap();
    assert!(filled * 600 > 14 * MIB, "A filled the pool ({filled} chunks)");
    let st = pool.stats();
    assert!(st.thread_cached_bytes > 0, "A's cache holds chunks: {st:?}");
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            pool.bind_current_thread(1);
            let mut got = Vec::new();
            while let Some(p) = pool.alloc(64 << 10) {
                got.push(p);
            }
            let n = got.len();
            for p in got {
                // SAFETY: live chunks.
                unsafe { pool.free_sized(p, 64 << 10) };
            }
            n
        })
        .join()
        .unwrap()
    });
    let share = (got * (64 << 10)) as f64 / (16 * MIB) as f64;
    println!("B got {got} x 64 KiB = {:.1}% of the capacity", share * 100.0);
    assert!(share >= 0.95, "B got only {:.1}% of the capacity", share * 100.0);
    pool.validate().unwrap();
    drop(done_tx);
    a.join().unwrap();
    pool.collect();
    pool.validate().unwrap();
    assert_eq!(pool.stats().in_use_bytes, 0);
}

/// A shard that keeps live chunks in mostly free nodes: another shard that
/// runs dry takes those nodes over, and later frees of the live chunks
/// (from their original thread) still find their new owner.
#[test]
fn mostly_free_nodes_move_to_the_shard_that_needs_them() {
    let pool = Pool::builder().capacity(8 * MIB).shards(2).hugepages(HugePages::Off).build().unwrap();
    pool.bind_current_thread(0);
    // Shard 0 takes every segment, then frees all but one 64 KiB chunk per
    // segment: four nodes, each mostly free, all owned by shard 0.
    let mut all = Vec::new();
    while let Some(p) = pool.alloc(64 << 10) {
        all.push(p);
    }
    assert_eq!(all.len(), 4 * 32, "four 2 MiB segments of 32 chunks each");
    let keep: Vec<NonNull<u8>> = all.iter().copied().step_by(32).collect();
    for p in all.iter().filter(|p| !keep.contains(p)) {
        // SAFETY: live chunks, freed once.
        unsafe { pool.free_sized(*p, 64 << 10) };
    }
    pool.collect();
    pool.validate().unwrap();
    // Shard 1 asks for 1 MiB chunks: only moving shard 0's nodes can serve.
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            pool.bind_current_thread(1);
            let mut got = Vec::new();
            while let Some(p) = pool.alloc(MIB) {
                // SAFETY: fresh chunk.
                unsafe { p.as_ptr().write_bytes(0x5A, MIB) };
                got.push(p.as_ptr() as usize);
            }
            got
        })
        .join()
        .unwrap()
    });
    assert!(got.len() >= 4, "shard 1 got {} MiB out of four mostly free nodes", got.len());
    pool.validate().unwrap();
    // The kept chunks are freed by their original thread (shard 0): their
    // nodes now belong to shard 1, and the frees must find it.
    for p in keep {
        // SAFETY: live chunks.
        unsafe { pool.free_sized(p, 64 << 10) };
    }
    for a in got {
        // SAFETY: live chunks.
        unsafe { pool.free(NonNull::new(a as *mut u8).unwrap()) };
    }
    pool.collect();
    pool.validate().unwrap();
    assert_eq!(pool.stats().in_use_bytes, 0);
}
