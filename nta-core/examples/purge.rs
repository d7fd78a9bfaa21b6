//! A burst, then a small working set: how much memory a working pool keeps
//! resident once the burst is over (issue 10, decay; `PoolBuilder::purge_delay`).
//!
//! One thread allocates 64 MiB of 1518-byte buffers (every byte written)
//! and frees them all. It then keeps working for 13 s: 64 live buffers
//! replaced one by one, with a 3000-byte buffer allocated and freed at each
//! step (above the thread caches' sizes, so the pool's slow path runs), and
//! a 1 ms sleep every 1000 steps. It prints the process's resident memory
//! above the baseline taken before the burst (RSS, which includes the
//! memfd pool's shared pages) at 0, 1, 5, 9, 11 and 13 s after the burst,
//! and the bytes the pool gave back.
//!
//! Run: `cargo run --release -p nta-core --example purge -- [default|keep]`
//! (`default`: the default purge delay, 10 s; `keep`: `Duration::MAX`,
//! the pool keeps the pages of its free memory, as before the purge).

use nta_core::{HugePages, Pool};
use std::time::{Duration, Instant};

const MIB: f64 = 1048576.0;
const BUF: usize = 1518;
const SIDE: usize = 3000;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("statm resident");
    pages * 4096
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "default".into());
    let mut builder = Pool::builder().hugepages(HugePages::Off);
    match mode.as_str() {
        "default" => {}
        "keep" => builder = builder.purge_delay(Duration::MAX),
        other => {
            eprintln!("unknown mode {other:?}: use default or keep");
            std::process::exit(2);
        }
    }
    let pool = builder.build().expect("a pool");
    let base = rss_bytes();
    let mib_above = |b: u64| b.saturating_sub(base) as f64 / MIB;

    let burst: Vec<_> = (0..(64 << 20) / BUF)
        .map(|_| {
            let p = pool.alloc(BUF).expect("memory for the burst");
            // SAFETY: a fresh chunk of BUF bytes.
            unsafe { p.as_ptr().write_bytes(1, BUF) };
            p
        })
        .collect();
    println!("{mode}: after the burst {:.1} MiB above the baseline", mib_above(rss_bytes()));
    for p in burst {
        // SAFETY: live chunks of BUF bytes, each freed once.
        unsafe { pool.free_sized(p, BUF) };
    }

    let mut live: Vec<_> = (0..64).map(|_| pool.alloc(BUF).expect("memory")).collect();
    let start = Instant::now();
    let mut marks = [0u64, 1, 5, 9, 11, 13].into_iter().peekable();
    let mut step = 0usize;
    while let Some(&mark) = marks.peek() {
        let k = step % live.len();
        // SAFETY: `live[k]` is a live chunk of BUF bytes, freed once and
        // replaced at once.
        unsafe { pool.free_sized(live[k], BUF) };
        live[k] = pool.alloc(BUF).expect("memory");
        let side = pool.alloc(SIDE).expect("memory");
        // SAFETY: a fresh chunk of SIDE bytes, written, then freed once.
        unsafe {
            side.as_ptr().write_bytes(2, SIDE);
            pool.free_sized(side, SIDE);
        }
        step += 1;
        if step % 1000 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        if start.elapsed() >= Duration::from_secs(mark) {
            println!("{mode}: {mark:>2} s later {:.1} MiB", mib_above(rss_bytes()));
            marks.next();
        }
    }
    for p in live {
        // SAFETY: live chunks of BUF bytes, each freed once.
        unsafe { pool.free_sized(p, BUF) };
    }
    println!("{mode}: the pool gave back {:.1} MiB", pool.stats().discarded_bytes as f64 / MIB);
}
