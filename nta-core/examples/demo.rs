//! A tour of nta-core: exact-size packet buffers, trimming, coalescing,
//! cross-thread frees and the seed-002 fill test, with the pool's own stats.
//!
//! Run: `cargo run --release -p nta-core --example demo`

use nta_core::{Pool, Stats};
use std::ptr::NonNull;

fn show(label: &str, st: &Stats) {
    println!(
        "{label:<34} in use {:>10} B  mapped {:>10} B  largest free {:>9} B  page nodes {:>4}  segments hugetlb/thp/4k {}/{}/{}",
        st.in_use_bytes,
        st.mapped_bytes,
        st.largest_free_bytes,
        st.page_nodes,
        st.segments_hugetlb,
        st.segments_thp,
        st.segments_small
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder().capacity(64 << 20).shards(2).build()?;
    println!("nta-core demo: a 64 MiB pool with {} shards\n", pool.shard_count());

    // 1. An IMIX burst: 64, 594 and 1518-byte packets in exact granules.
    let sizes = [64usize, 594, 1518];
    let mut bufs: Vec<(NonNull<u8>, usize)> = Vec::new();
    for i in 0..12_000 {
        let len = sizes[[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2][i % 12]];
        bufs.push((pool.alloc(len).ok_or("pool exhausted")?, len));
    }
    show("12k IMIX packets", &pool.stats());

    // 2. Receive buffers are allocated at MTU size and trimmed to what arrived.
    let mut rx = Vec::new();
    for _ in 0..1000 {
        let b = pool.alloc(9000).ok_or("pool exhausted")?;
        // SAFETY: `b` is live; a 200-byte datagram "arrived".
        unsafe { pool.shrink(b, 200) };
        rx.push(b);
    }
    show("+1000 jumbo rx buffers trimmed", &pool.stats());

    // 3. Free half the packets on another thread: remote frees, merged later.
    let half: Vec<usize> = bufs.drain(..6000).map(|(p, _)| p.as_ptr() as usize).collect();
    let p2 = pool.clone();
    std::thread::spawn(move || {
        p2.bind_current_thread(1);
        for a in half {
            // SAFETY: each address is a live chunk handed over by main.
            unsafe { p2.free(NonNull::new(a as *mut u8).unwrap()) };
        }
    })
    .join()
    .map_err(|_| "freeing thread panicked")?;
    pool.collect();
    show("half freed on another thread", &pool.stats());

    // 4. Free everything: every node merges back into one free extent.
    for (p, len) in bufs {
        // SAFETY: live, freed once with its length.
        unsafe { pool.free_sized(p, len) };
    }
    for b in rx {
        // SAFETY: live, freed once.
        unsafe { pool.free(b) };
    }
    pool.validate()?;
    show("all freed (small ones cached)", &pool.stats());
    // Small frees wait in bounded caches for reuse; collect() merges them.
    pool.collect();
    pool.validate()?;
    show("caches merged (validated)", &pool.stats());

    // 5. The seed-002 fill test: random sizes up to 4 KiB until failure,
    //    then halve the maximum and go on.
    let fill = Pool::builder().capacity(64 << 20).shards(1).build()?;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let (mut max, mut live, mut kept) = (4096usize, 0usize, Vec::new());
    println!("\nseed-002 fill test, 64 MiB:");
    while max >= 32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 1 + (seed as usize) % max;
        match fill.alloc(len) {
            Some(p) => {
                live += len;
                kept.push(p);
            }
            None => {
                let st = fill.stats();
                println!(
                    "  max {max:>4} B: failed at {len:>4} B, utilization {:.4} (live requested / mapped)",
                    live as f64 / st.mapped_bytes as f64
                );
                max /= 2;
            }
        }
    }
    fill.validate()?;
    Ok(())
}
