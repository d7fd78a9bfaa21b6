//! `validate()` and `occupancy()` while other threads use the pool.
//!
//! `validate` takes every shard and every thread cache over for the walk,
//! so it must report a consistent pool however busy the other threads are;
//! `occupancy` takes nothing and must never trip over a segment changing
//! state under it.

use nta_core::{HugePages, Pool};
use std::sync::atomic::{AtomicBool, Ordering};

fn churn(pool: &Pool, stop: &AtomicBool, seed: usize) -> u64 {
    let mut live = Vec::new();
    let mut ops = 0u64;
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = [64, 100, 594, 1518, 3000, 9000][(x % 6) as usize];
        if live.len() < 256 && x & 64 == 0 {
            if let Some(p) = pool.alloc(len) {
                live.push((p, len));
            }
        } else if let Some((p, len)) = live.pop() {
            // SAFETY: our own live chunk, freed once; sized half the time.
            unsafe {
                if x & 128 == 0 {
                    pool.free_sized(p, len)
                } else {
                    pool.free(p)
                }
            };
        }
        ops += 1;
    }
    for (p, len) in live {
        // SAFETY: as above.
        unsafe { pool.free_sized(p, len) };
    }
    ops
}

#[test]
fn validate_is_exact_while_threads_allocate_and_free() {
    let pool = Pool::builder().capacity(64 << 20).shards(2).hugepages(HugePages::Off).build().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (pool, stop) = (&pool, &stop);
        let workers: Vec<_> = (0..3).map(|t| s.spawn(move || churn(pool, stop, t + 1))).collect();
        for round in 0..60 {
            if let Err(e) = pool.validate() {
                stop.store(true, Ordering::Relaxed);
                panic!("validate round {round} while threads run: {e}");
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        let ops: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(ops > 1000, "the workers ran ({ops} ops)");
    });
    pool.collect();
    pool.validate().unwrap();
    assert_eq!(pool.stats().in_use_bytes, 0);
}

#[test]
fn occupancy_snapshots_while_segments_come_and_go() {
    // Segments are acquired and released (parked) as fast as possible while
    // another thread snapshots occupancy; a release clears the owner before
    // the state, which a snapshot must tolerate.
    let pool = Pool::builder().capacity(64 << 20).shards(1).hugepages(HugePages::Off).build().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let cycler = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let a = pool.alloc(2 << 20).unwrap(); // a whole node
                let b = pool.alloc(2 << 20).unwrap(); // a second one: the first goes back when freed
                                                      // SAFETY: live chunks.
                unsafe {
                    pool.free(a);
                    pool.free(b);
                }
                n += 1;
            }
            n
        });
        let start = std::time::Instant::now();
        let mut snaps = 0;
        while start.elapsed() < std::time::Duration::from_millis(1500) {
            for node in pool.occupancy() {
                assert!(node.owner.is_none_or(|o| o < 1));
            }
            snaps += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let cycles = cycler.join().unwrap();
        println!("{snaps} snapshots over {cycles} acquire/release cycles");
        assert!(cycles > 100 && snaps > 100);
    });
}
