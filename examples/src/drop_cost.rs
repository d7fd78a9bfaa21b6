//! The measurement behind `drop-cost`: N buffers are allocated on one thread
//! and dropped either there (local free) or on another thread (remote free:
//! a push onto the owner shard's lock-free queue), then `collect()` drains
//! the queue on the owner. Then the receive-buffer cycle of the echo servers
//! without any socket: take a 64 KiB buffer, fill `n` bytes, trim, drop,
//! with NTA buffers and with `Vec` (`shrink_to_fit` as the trim). Last,
//! the plain pair: an IMIX-sized `PacketBuf` made and dropped (and frozen
//! into `Bytes`), from a pool whose handles are counted and from a leaked
//! one (`Pool::leak`), against the bare `alloc` + `free_sized`. Prints
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
    println!();
    pair_table(buffers)
}

/// Nanoseconds per receive-buffer cycle with buffers from `source`. Keeps a
/// window of 32 buffers alive, as an echo server with packets in flight does.
fn rx_cycle<S: BufSource>(source: &S, fill_bytes: usize, cycles: usize) -> f64 {
    let payload = vec![0xa5u8; fill_bytes];
    windowed(cycles, |_| {
        let mut buf = source.try_alloc(nta_net::socket::MAX_UDP_PAYLOAD_BYTES).expect("room for a buffer");
        buf.spare_mut()[..fill_bytes].copy_from_slice(as_uninit(&payload));
        // SAFETY: `fill_bytes` bytes of the spare room were just written.
        unsafe { buf.set_len(fill_bytes) };
        buf.trim();
        buf
    })
}

/// The same cycle on the bare pool API, without `PacketBuf` (no handle
/// clone): what nta-core itself costs.
fn raw_cycle(pool: &nta_core::Pool, fill_bytes: usize, cycles: usize) -> f64 {
    let alloc_bytes = nta_net::socket::MAX_UDP_PAYLOAD_BYTES;
    windowed(cycles, |_| {
        let ptr = pool.alloc(alloc_bytes).expect("room for a buffer");
        // SAFETY: `ptr` is a live chunk of at least `alloc_bytes >= fill_bytes`.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0xa5, fill_bytes) };
        // SAFETY: live chunk allocated with `alloc_bytes`, shrunk once.
        unsafe { pool.shrink(ptr, fill_bytes) };
        Chunk(pool, ptr, fill_bytes)
    })
}

/// A chunk of the bare pool API, freed with its length when dropped.
struct Chunk<'a>(&'a nta_core::Pool, std::ptr::NonNull<u8>, usize);

impl Drop for Chunk<'_> {
    fn drop(&mut self) {
        // SAFETY: a live chunk of the pool, allocated or last resized with
        // this length, freed once.
        unsafe { self.0.free_sized(self.1, self.2) }
    }
}

/// Nanoseconds per buffer that `make(i)` makes (and writes), kept in a
/// window of 32 alive and dropped when it leaves the window.
fn windowed<T>(cycles: usize, mut make: impl FnMut(usize) -> T) -> f64 {
    let mut window: std::collections::VecDeque<T> = std::collections::VecDeque::with_capacity(32);
    let start = Instant::now();
    for i in 0..cycles {
        let buf = make(i);
        if window.len() == 32 {
            window.pop_front();
        }
        window.push_back(std::hint::black_box(buf));
    }
    drop(window);
    per_buffer(start.elapsed(), cycles)
}

/// IMIX sizes (64, 594 and 1518 B at 7:4:1), in a fixed order.
const IMIX: [usize; 12] = [64, 594, 64, 1518, 64, 594, 64, 64, 594, 64, 594, 64];

/// Rounds of the pair table; each cell is the median round.
const PAIR_ROUNDS: usize = 5;

/// The pair table: each round measures every variant once, in turn.
fn pair_table(buffers: usize) -> Result<(), String> {
    let counted = build_pool(64)?;
    let leaked = build_pool(64)?.leak();
    let cycles = buffers.max(1000) * 10;
    let mut cells: [Vec<f64>; 6] = Default::default();
    for _ in 0..PAIR_ROUNDS {
        cells[0].push(raw_pair(&counted, cycles));
        cells[1].push(buf_pair(&counted, false, cycles));
        cells[2].push(buf_pair(&counted, true, cycles));
        cells[3].push(raw_pair(leaked, cycles));
        cells[4].push(buf_pair(leaked, false, cycles));
        cells[5].push(buf_pair(leaked, true, cycles));
    }
    let [raw_c, buf_c, frozen_c, raw_l, buf_l, frozen_l] = cells.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });
    println!("IMIX pair (alloc, write a byte, drop; 32 buffers live), median of {PAIR_ROUNDS} rounds of {cycles}");
    println!();
    println!("| pool | raw alloc + free_sized ns | PacketBuf ns | / raw | PacketBuf + freeze ns | / raw |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, raw, buf, frozen) in [("handles counted", raw_c, buf_c, frozen_c), ("leaked", raw_l, buf_l, frozen_l)] {
        println!("| {name} | {raw:.1} | {buf:.1} | {:.2} | {frozen:.1} | {:.2} |", buf / raw, frozen / raw);
    }
    Ok(())
}

/// An IMIX `PacketBuf` made, written and dropped (frozen into `Bytes`
/// first with `freeze`).
fn buf_pair(pool: &nta_core::Pool, freeze: bool, cycles: usize) -> f64 {
    use bytes::BufMut;
    let make = |i: usize| {
        let mut buf = PacketBuf::with_capacity(pool, IMIX[i % IMIX.len()]);
        buf.put_u8(1);
        buf
    };
    if freeze {
        windowed(cycles, |i| make(i).freeze())
    } else {
        windowed(cycles, make)
    }
}

/// [`buf_pair`] on the bare pool API: `alloc`, and `free_sized` on drop.
fn raw_pair(pool: &nta_core::Pool, cycles: usize) -> f64 {
    windowed(cycles, |i| {
        let len = IMIX[i % IMIX.len()];
        let ptr = pool.alloc(len).expect("room for a buffer");
        // SAFETY: a live chunk of at least one byte.
        unsafe { ptr.as_ptr().write(1) };
        Chunk(pool, ptr, len)
    })
}

fn as_uninit(bytes: &[u8]) -> &[std::mem::MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and initialised bytes
    // are valid `MaybeUninit` values.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len()) }
}
