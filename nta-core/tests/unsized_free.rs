//! Unsized frees on another thread than the owner's: the length is read
//! from the node's bitmaps without the owner's lock, while the owner keeps
//! allocating and merging next to the chunk. A wrong length would park the
//! chunk under the wrong size, and the next allocation of that size would
//! overwrite a neighbour: every chunk here carries a pattern that is
//! checked before it is freed, and the pool must validate and be empty at
//! the end.

use nta_core::{HugePages, Pool};
use std::ptr::NonNull;
use std::sync::mpsc;

fn fill(p: NonNull<u8>, len: usize, tag: u8) {
    // SAFETY: `p` is a live chunk of at least `len` bytes owned by the caller.
    unsafe { std::ptr::write_bytes(p.as_ptr(), tag, len) };
}

fn check(p: NonNull<u8>, len: usize, tag: u8) {
    // SAFETY: as for `fill`.
    let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
    assert!(bytes.iter().all(|&b| b == tag), "a chunk of {len} bytes was overwritten");
}

struct Sent(NonNull<u8>, usize, u8);
// SAFETY: the chunk is handed over whole; only the receiver touches it.
unsafe impl Send for Sent {}

#[test]
fn unsized_frees_race_the_owner_and_lose_nothing() {
    let pool = Pool::builder().capacity(64 << 20).shards(2).hugepages(HugePages::Off).build().unwrap();
    let (tx, rx) = mpsc::sync_channel::<Sent>(256);
    std::thread::scope(|scope| {
        let owner = pool.clone();
        scope.spawn(move || {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let mut kept: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
            for i in 0..200_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let len = 1 + (x % 2048) as usize;
                let tag = (i % 251) as u8 + 1;
                let p = owner.alloc(len).unwrap();
                fill(p, len, tag);
                if x & 1 == 0 {
                    tx.send(Sent(p, len, tag)).unwrap();
                } else {
                    kept.push((p, len, tag));
                }
                // Free the owner's own chunks in a scattered order, so that
                // its shard merges and carves next to the chunks in flight.
                if kept.len() > 64 {
                    let (q, l, t) = kept.swap_remove((x >> 8) as usize % kept.len());
                    check(q, l, t);
                    // SAFETY: a live chunk of this length, freed once.
                    unsafe { owner.free_sized(q, l) };
                }
            }
            for (q, l, t) in kept {
                check(q, l, t);
                // SAFETY: as above.
                unsafe { owner.free_sized(q, l) };
            }
            // Flushes this thread's cache now: a scope does not wait for
            // the thread-exit flush.
            owner.collect();
        });
        let freer = pool.clone();
        scope.spawn(move || {
            let mut mine: Vec<(NonNull<u8>, usize)> = Vec::new();
            for Sent(p, len, tag) in rx {
                check(p, len, tag);
                // SAFETY: a live chunk handed over whole, freed once.
                unsafe { freer.free(p) };
                // Reuse what this thread's cache now holds, at the size the
                // free parked it under, and check it stays ours.
                let q = freer.alloc(len).unwrap();
                fill(q, len, 0);
                mine.push((q, len));
                if mine.len() > 32 {
                    let (q, l) = mine.swap_remove(0);
                    check(q, l, 0);
                    // SAFETY: a live chunk, freed once.
                    unsafe { freer.free(q) };
                }
            }
            for (q, l) in mine {
                check(q, l, 0);
                // SAFETY: as above.
                unsafe { freer.free(q) };
            }
            freer.collect();
        });
    });
    pool.collect();
    pool.validate().unwrap();
    let st = pool.stats();
    assert_eq!((st.in_use_bytes, st.thread_cached_bytes), (0, 0));
}
