//! What a free without the length costs against `free_sized` (issue 10:
//! "an unsized free should cost at most 1.1x a sized one").
//!
//! One thread allocates chunks of eight sizes from 40 to 1532 bytes, writes
//! a byte of each, and frees the oldest of 32 live ones, 1M times per run;
//! the frees are `free_sized` or `free` (each called through a function
//! that is not inlined, so both pay one call). The two ways alternate over
//! the trials; the medians of ns per alloc+free pair and their ratio are
//! printed.
//!
//! Run: `cargo run --release -p nta-core --example free_cost [TRIALS]`

use nta_core::Pool;
use std::ptr::NonNull;
use std::time::Instant;

#[inline(never)]
fn free_unsized(pool: &Pool, p: NonNull<u8>) {
    // SAFETY: the caller passes a live chunk of `pool`, freed once.
    unsafe { pool.free(p) }
}

#[inline(never)]
fn free_sized(pool: &Pool, p: NonNull<u8>, len: usize) {
    // SAFETY: the caller passes a live chunk of `pool` of this length, freed once.
    unsafe { pool.free_sized(p, len) }
}

const ROUNDS: usize = 1_000_000;
const LIVE: usize = 32;

/// ns per alloc+free pair.
fn run(pool: &Pool, sizes: &[usize], unsized_frees: bool) -> f64 {
    let mut ring: Vec<(NonNull<u8>, usize)> = Vec::with_capacity(LIVE);
    let start = Instant::now();
    for i in 0..ROUNDS {
        let len = sizes[i % sizes.len()];
        let p = pool.alloc(len).expect("the pool has room");
        // SAFETY: a fresh chunk of at least one byte.
        unsafe { p.as_ptr().write(1) };
        if ring.len() < LIVE {
            ring.push((p, len));
            continue;
        }
        let (q, l) = std::mem::replace(&mut ring[i % LIVE], (p, len));
        if unsized_frees {
            free_unsized(pool, q);
        } else {
            free_sized(pool, q, l);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / ROUNDS as f64;
    for (q, l) in ring {
        free_sized(pool, q, l);
    }
    ns
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let trials: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(15);
    let pool = Pool::builder().build().expect("a default pool");
    let sizes: Vec<usize> =
        (0..4096).map(|i| [64usize, 100, 200, 576, 1000, 1500, 40, 300][i % 8] + (i % 5) * 8).collect();
    let (mut with_len, mut without_len) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        with_len.push(run(&pool, &sizes, false));
        without_len.push(run(&pool, &sizes, true));
    }
    let (s, u) = (median(with_len), median(without_len));
    println!("ns per alloc+free pair, medians of {trials}: free_sized {s:.2}, free {u:.2}, ratio {:.2}", u / s);
}
