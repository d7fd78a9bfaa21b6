//! A working set that fell: how much memory `Pool::trim` gives back, against
//! glibc's `malloc_trim(0)` on the same sequence (issue 10, "give back the
//! pages of free extents, not only whole segments").
//!
//! One thread allocates chunks (half under 512 B, 40% up to 4 KiB, 9% up
//! to 64 KiB, 1% up to 1 MiB; every byte written) to 40 MiB live, replaces
//! random ones 2M times, then frees nine in ten at random. It prints the
//! process's resident memory (RSS, which includes a memfd pool's shared
//! pages) above the baseline taken before the first allocation: before and
//! after the trim, the pages that still hold a live byte, and how long the
//! trim took.
//!
//! Run: `cargo run --release -p nta-core --example give_back -- [nta|private|glibc]`
//! (`nta`: the default memfd pool; `private`: `exportable(false)`).

use nta_core::{HugePages, Pool};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::ptr::NonNull;

const MIB: f64 = 1048576.0;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("statm resident");
    pages * 4096
}

fn size(rng: &mut rand::rngs::StdRng) -> usize {
    match rng.gen_range(0..100) {
        0..=49 => rng.gen_range(16..512),
        50..=89 => rng.gen_range(512..4096),
        90..=98 => rng.gen_range(4096..65536),
        _ => rng.gen_range(65536..1 << 20),
    }
}

/// The allocator under test.
enum Alloc {
    Nta(Pool),
    Glibc,
}

impl Alloc {
    fn alloc(&self, n: usize) -> NonNull<u8> {
        let p = match self {
            Alloc::Nta(pool) => pool.alloc(n),
            // SAFETY: plain malloc.
            Alloc::Glibc => NonNull::new(unsafe { libc::malloc(n) }.cast::<u8>()),
        };
        let p = p.expect("memory for the example");
        // SAFETY: a fresh block of `n` bytes.
        unsafe { p.as_ptr().write_bytes(1, n) };
        p
    }

    /// # Safety
    /// `p` is a live block of `n` bytes from `self.alloc`, freed once.
    unsafe fn free(&self, p: NonNull<u8>, n: usize) {
        match self {
            // SAFETY: per the caller.
            Alloc::Nta(pool) => unsafe { pool.free_sized(p, n) },
            // SAFETY: per the caller.
            Alloc::Glibc => unsafe { libc::free(p.as_ptr().cast()) },
        }
    }

    fn trim(&self) {
        match self {
            Alloc::Nta(pool) => pool.trim(),
            // SAFETY: no precondition.
            Alloc::Glibc => unsafe {
                libc::malloc_trim(0);
            },
        }
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "nta".into());
    let alloc = match mode.as_str() {
        "glibc" => Alloc::Glibc,
        "nta" | "private" => {
            let pool = Pool::builder()
                .capacity(512 << 20)
                .shards(1)
                .hugepages(HugePages::Off)
                .exportable(mode == "nta")
                .build()
                .expect("pool");
            pool.bind_current_thread(0);
            Alloc::Nta(pool)
        }
        other => panic!("unknown allocator {other}: nta, private or glibc"),
    };
    let base = rss_bytes();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut live: Vec<(NonNull<u8>, usize)> = Vec::new();
    let mut bytes = 0;
    while bytes < 40 << 20 {
        let n = size(&mut rng);
        live.push((alloc.alloc(n), n));
        bytes += n;
    }
    for _ in 0..2_000_000 {
        let (p, n) = live.swap_remove(rng.gen_range(0..live.len()));
        // SAFETY: a live block, removed from the set.
        unsafe { alloc.free(p, n) };
        let n = size(&mut rng);
        live.push((alloc.alloc(n), n));
    }
    let mut kept = Vec::new();
    for (p, n) in live {
        if rng.gen_range(0..10) == 0 {
            kept.push((p, n));
        } else {
            // SAFETY: as above.
            unsafe { alloc.free(p, n) };
        }
    }
    let live_bytes: usize = kept.iter().map(|k| k.1).sum();
    let pages: HashSet<usize> =
        kept.iter().flat_map(|&(p, n)| p.as_ptr() as usize / 4096..=(p.as_ptr() as usize + n - 1) / 4096).collect();
    let before = rss_bytes() - base;
    let t = std::time::Instant::now();
    alloc.trim();
    let took = t.elapsed();
    let after = rss_bytes() - base;
    println!(
        "{mode}: live {:.1} MiB on {:.1} MiB of pages; resident above baseline {:.1} MiB before trim, {:.1} MiB after ({:.2}x live); the trim took {:.2} ms",
        live_bytes as f64 / MIB,
        pages.len() as f64 * 4096.0 / MIB,
        before as f64 / MIB,
        after as f64 / MIB,
        after as f64 / live_bytes as f64,
        took.as_secs_f64() * 1e3,
    );
    if let Alloc::Nta(pool) = &alloc {
        let st = pool.stats();
        println!(
            "  pool: mapped {:.1} MiB, in use {:.1} MiB, discarded {:.1} MiB",
            st.mapped_bytes as f64 / MIB,
            st.in_use_bytes as f64 / MIB,
            st.discarded_bytes as f64 / MIB
        );
    }
    for (p, n) in kept {
        // SAFETY: as above.
        unsafe { alloc.free(p, n) };
    }
}
