//! Decay: an idle pool gives its free memory back with no call into it,
//! memory parked in a live but idle thread's cache included; without decay
//! it keeps it.

use nta_core::{HugePages, Pool};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SEG: u64 = 2 << 20;

/// Two worker threads each allocate and free ~24 MiB of packet-sized
/// chunks, keep one chunk live, then stay alive but idle (their thread
/// caches hold chunks) until told to go. Returns the mapped bytes over
/// time as the pool sits idle, sampled with `stats()` only.
fn idle_pool(pool: &Pool, watch: Duration) -> (u64, u64) {
    let (done_tx, done_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Arc::new(std::sync::Mutex::new(go_rx));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, done_tx, go_rx) = (pool.clone(), done_tx.clone(), go_rx.clone());
            std::thread::spawn(move || {
                let chunks: Vec<_> = (0..16_000).map(|i| pool.alloc(1500 + i % 64).unwrap()).collect();
                // What the pool mapped at this worker's peak: read here, not
                // after both are done, since under load one worker can sit
                // idle long enough for decay to start before the other ends.
                let peak = pool.stats().mapped_bytes;
                let keep = chunks[0];
                for (i, &c) in chunks.iter().enumerate().skip(1) {
                    // SAFETY: live chunks, freed once, with their lengths.
                    unsafe { pool.free_sized(c, 1500 + i % 64) };
                }
                // A cache-sized burst freed last stays in this thread's cache.
                let cached: Vec<_> = (0..64).map(|_| pool.alloc(256).unwrap()).collect();
                for c in cached {
                    // SAFETY: as above.
                    unsafe { pool.free_sized(c, 256) };
                }
                done_tx.send(peak).unwrap();
                let _ = go_rx.lock().unwrap().recv();
                // SAFETY: the kept chunk, freed once.
                unsafe { pool.free_sized(keep, 1500) };
            })
        })
        .collect();
    let busy = (0..2).map(|_| done_rx.recv().unwrap()).max().unwrap();
    let t = Instant::now();
    let mut idle = busy;
    while t.elapsed() < watch {
        std::thread::sleep(Duration::from_millis(50));
        idle = pool.stats().mapped_bytes;
        if idle <= 2 * SEG {
            break;
        }
    }
    drop(go_tx);
    for w in workers {
        w.join().unwrap();
    }
    (busy, idle)
}

#[test]
fn an_idle_pool_gives_its_memory_back_with_decay() {
    let pool = Pool::builder()
        .capacity(256 << 20)
        .shards(2)
        .hugepages(HugePages::Off)
        .decay(Duration::from_millis(300))
        .build()
        .unwrap();
    let (busy, idle) = idle_pool(&pool, Duration::from_secs(10));
    // Each worker alone maps about 12 segments (16 000 chunks of ~1.5 KiB).
    assert!(busy >= 10 * SEG, "the workers mapped {busy} bytes");
    // One segment per worker holds its live chunk; everything else went.
    assert!(idle <= 2 * SEG, "after decay {idle} bytes mapped (busy: {busy})");
    pool.validate().unwrap();
}

#[test]
fn without_decay_an_idle_pool_keeps_its_retained_memory() {
    let pool = Pool::builder().capacity(256 << 20).shards(2).hugepages(HugePages::Off).build().unwrap();
    let (busy, idle) = idle_pool(&pool, Duration::from_millis(1500));
    assert!(idle > 8 * SEG, "without decay {idle} of {busy} bytes stay mapped");
}
