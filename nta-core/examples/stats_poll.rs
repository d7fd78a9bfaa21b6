//! What a thread that polls `Pool::stats()` costs a thread that allocates
//! (issue 10: `stats()` takes every shard's lock, for the largest free
//! extent and the quick caches' bytes).
//!
//! A worker allocates and frees in bursts of 8 (sizes `len` to `len + 24`)
//! while another thread calls `stats()` every millisecond, in a tight loop,
//! or not at all; the three ways run interleaved, each on a fresh pool, and
//! the medians of the worker's ns per alloc+free pair are printed. 200-byte
//! chunks go through the thread cache (the shard only on refills and
//! overflows); 4096-byte chunks take the shard's lock on every operation.
//!
//! Run: `cargo run --release -p nta-core --example stats_poll [TRIALS]`

use nta_core::Pool;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const PAIRS: u64 = 2_000_000;

/// The worker's ns per pair and the number of `stats()` calls meanwhile.
fn run(len: usize, poll: Option<Duration>) -> (f64, u64) {
    let pool = Pool::builder().build().expect("a default pool");
    let stop = AtomicBool::new(false);
    let polls = AtomicU64::new(0);
    let ns = std::thread::scope(|s| {
        if let Some(every) = poll {
            let (pool, stop, polls) = (&pool, &stop, &polls);
            s.spawn(move || {
                while !stop.load(Relaxed) {
                    std::hint::black_box(pool.stats());
                    polls.fetch_add(1, Relaxed);
                    if !every.is_zero() {
                        std::thread::sleep(every);
                    }
                }
            });
        }
        let worker = s.spawn(|| {
            let mut live: Vec<(NonNull<u8>, usize)> = Vec::with_capacity(8);
            let start = Instant::now();
            for i in 0..PAIRS {
                let l = len + (i as usize & 3) * 8;
                live.push((pool.alloc(l).expect("the pool has room"), l));
                if live.len() == 8 {
                    for (p, l) in live.drain(..) {
                        // SAFETY: a live chunk of this pool and length, freed once.
                        unsafe { pool.free_sized(p, l) };
                    }
                }
            }
            start.elapsed().as_nanos() as f64 / PAIRS as f64
        });
        let ns = worker.join().expect("the worker does not panic");
        stop.store(true, Relaxed);
        ns
    });
    (ns, polls.load(Relaxed))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let trials: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let ways = [("none", None), ("1 ms", Some(Duration::from_millis(1))), ("tight", Some(Duration::ZERO))];
    println!("| chunk bytes | poller | worker ns per pair, median of {trials} (all runs) | stats() calls per run |");
    println!("|---|---|---|---|");
    for len in [200usize, 4096] {
        let mut results: Vec<(Vec<f64>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); ways.len()];
        for _ in 0..trials {
            for (way, r) in ways.iter().zip(results.iter_mut()) {
                let (ns, polls) = run(len, way.1);
                r.0.push(ns);
                r.1.push(polls);
            }
        }
        for (way, (ns, polls)) in ways.iter().zip(results) {
            let all: Vec<String> = ns.iter().map(|n| format!("{n:.1}")).collect();
            let calls = polls.iter().sum::<u64>() / polls.len() as u64;
            println!("| {len} | {} | {:.1} ({}) | {calls} |", way.0, median(ns), all.join(" / "));
        }
    }
}
