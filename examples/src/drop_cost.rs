//! The measurement behind `drop-cost`: N buffers are allocated on one thread
//! and dropped either there (local free) or on another thread (remote free:
//! a push onto the owner shard's lock-free queue), then `collect()` drains
//! the queue on the owner. Then the receive-buffer cycle of the echo servers
//! without any socket: take a 64 KiB buffer, fill `n` bytes, trim, drop,
//! with NTA buffers and with `Vec` (`shrink_to_fit` as the trim). Prints
//! nanoseconds per buffer as markdown tables.

use std::time::{Duration, Instant};

use nta_net::{BufSource, HeapSource, PacketBuf, RxBuf};

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
    let remote_shard = 1 % pool.shard_count();
    let remote_ns = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Another shard than the owner's, so the frees are remote.
                pool.bind_current_thread(remote_shard);
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
    println!();
    println!("| rx cycle (alloc 65507 B, fill, trim, drop) | NTA ns | raw Pool ns | Vec ns | NTA / Vec |");
    println!("|---|---:|---:|---:|---:|");
    for fill_bytes in [64, 1400, 16384] {
        let cycles = buffers.min(200_000);
        let nta = rx_cycle(&pool, fill_bytes, cycles);
        let raw = raw_cycle(&pool, fill_bytes, cycles);
        let heap = rx_cycle(&HeapSource, fill_bytes, cycles);
        println!("| {fill_bytes} B | {nta:.1} | {raw:.1} | {heap:.1} | {:.3} |", nta / heap);
    }
    Ok(())
}

/// Nanoseconds per receive-buffer cycle with buffers from `source`. Keeps a
/// window of 32 buffers alive, as an echo server with packets in flight does.
fn rx_cycle<S: BufSource>(source: &S, fill_bytes: usize, cycles: usize) -> f64 {
    let payload = vec![0xa5u8; fill_bytes];
    let mut window: std::collections::VecDeque<S::Buf> = std::collections::VecDeque::with_capacity(32);
    let start = Instant::now();
    for _ in 0..cycles {
        let mut buf = source.try_alloc(nta_net::socket::MAX_UDP_PAYLOAD_BYTES).expect("room for a buffer");
        buf.spare_mut()[..fill_bytes].copy_from_slice(as_uninit(&payload));
        // SAFETY: `fill_bytes` bytes of the spare room were just written.
        unsafe { buf.set_len(fill_bytes) };
        buf.trim();
        if window.len() == 32 {
            window.pop_front();
        }
        window.push_back(std::hint::black_box(buf));
    }
    drop(window);
    per_buffer(start.elapsed(), cycles)
}

/// The same cycle on the bare pool API, without `PacketBuf` (no handle
/// clone): what nta-core itself costs.
fn raw_cycle(pool: &nta_core::Pool, fill_bytes: usize, cycles: usize) -> f64 {
    let alloc_bytes = nta_net::socket::MAX_UDP_PAYLOAD_BYTES;
    let mut window: std::collections::VecDeque<std::ptr::NonNull<u8>> = std::collections::VecDeque::with_capacity(32);
    let start = Instant::now();
    for _ in 0..cycles {
        let ptr = pool.alloc(alloc_bytes).expect("room for a buffer");
        // SAFETY: `ptr` is a live chunk of at least `alloc_bytes >= fill_bytes`.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0xa5, fill_bytes) };
        // SAFETY: live chunk allocated with `alloc_bytes`, shrunk once.
        unsafe { pool.shrink(ptr, fill_bytes) };
        if window.len() == 32 {
            let old = window.pop_front().expect("a full window");
            // SAFETY: a live chunk of `pool`, last resized to `fill_bytes`.
            unsafe { pool.free_sized(old, fill_bytes) };
        }
        window.push_back(std::hint::black_box(ptr));
    }
    for ptr in window {
        // SAFETY: as above.
        unsafe { pool.free_sized(ptr, fill_bytes) };
    }
    per_buffer(start.elapsed(), cycles)
}

fn as_uninit(bytes: &[u8]) -> &[std::mem::MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and initialised bytes
    // are valid `MaybeUninit` values.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len()) }
}
