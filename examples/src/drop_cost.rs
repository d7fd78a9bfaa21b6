//! The measurement behind `drop-cost`: N buffers are allocated on one thread
//! and dropped either there (local free) or on another thread (remote free:
//! a push onto the owner shard's lock-free queue), then `collect()` drains
//! the queue on the owner. Prints nanoseconds per buffer as a markdown table.

use std::time::{Duration, Instant};

use nta_net::PacketBuf;

use crate::build_pool;

fn per_buffer(elapsed: Duration, buffers: usize) -> f64 {
    elapsed.as_nanos() as f64 / buffers as f64
}

/// Runs the measurement and prints the table.
pub fn drop_cost_main(args: impl IntoIterator<Item = String>) -> Result<(), String> {
    let (mut buffers, mut bytes) = (100_000usize, 1500usize);
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value: usize =
            args.next().ok_or_else(|| format!("{flag} needs a value"))?.parse().map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--buffers" => buffers = value,
            "--bytes" => bytes = value,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    let pool = build_pool(((buffers * bytes.next_multiple_of(32)) >> 20) + 64)?;
    pool.bind_current_thread(0);
    let alloc = |n: usize| -> Vec<PacketBuf> { (0..n).map(|_| PacketBuf::with_capacity(&pool, bytes)).collect() };

    let local = alloc(buffers);
    let start = Instant::now();
    drop(local);
    let local_ns = per_buffer(start.elapsed(), buffers);

    let remote = alloc(buffers);
    let remote_ns = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let start = Instant::now();
                drop(remote);
                per_buffer(start.elapsed(), buffers)
            })
            .join()
            .expect("the dropping thread")
    });
    let start = Instant::now();
    pool.collect();
    let drain_ns = per_buffer(start.elapsed(), buffers);
    let stats = pool.stats();

    println!("{buffers} buffers of {bytes} B");
    println!();
    println!("| free path | ns per buffer |");
    println!("|---|---:|");
    println!("| drop on the allocating thread | {local_ns:.1} |");
    println!("| drop on another thread (remote queue push) | {remote_ns:.1} |");
    println!("| owner drains the remote queue (`collect`) | {drain_ns:.1} |");
    println!();
    println!(
        "remote frees queued {}, drained {}, in use after: {} bytes",
        stats.remote_frees_queued, stats.remote_frees_drained, stats.in_use_bytes
    );
    Ok(())
}
