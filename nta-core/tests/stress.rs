//! Multi-thread stress: threads allocate, fill, and pass chunks to other
//! threads, which check the fill and free them (remote frees). At the end
//! every chunk is back: `in_use` returns to 0.

use nta_core::{HugePages, Pool};
use rand::{Rng, SeedableRng};
use std::ptr::NonNull;
use std::sync::mpsc;

const THREADS: usize = 4;
const PER_THREAD: usize = 60_000;

struct Msg {
    addr: usize,
    len: usize,
    fill: u8,
}

fn check(m: &Msg) {
    // SAFETY: the sender gave up a live chunk of `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(m.addr as *const u8, m.len) };
    assert!(bytes.iter().all(|&b| b == m.fill), "chunk {:#x} ({} B) corrupted", m.addr, m.len);
}

#[test]
fn threads_free_each_others_chunks() {
    let pool = Pool::builder().capacity(256 << 20).shards(2).hugepages(HugePages::Off).build().unwrap();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::sync_channel::<Msg>(256)).unzip();
    let mut handles = Vec::new();
    for (t, rx) in rxs.into_iter().enumerate() {
        let pool = pool.clone();
        let tx = txs[(t + 1) % THREADS].clone();
        handles.push(std::thread::spawn(move || {
            pool.bind_current_thread(t);
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
            let mut local: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
            for i in 0..PER_THREAD {
                let len = match rng.gen_range(0..8) {
                    0..=4 => [64, 594, 1518][rng.gen_range(0..3)],
                    5 | 6 => rng.gen_range(1..4096),
                    _ => rng.gen_range(4096..66_000),
                };
                let fill = (t * 31 + i) as u8 | 1;
                if let Some(p) = pool.alloc(len) {
                    // SAFETY: fresh chunk of `len` bytes.
                    unsafe { p.as_ptr().write_bytes(fill, len) };
                    if rng.gen_bool(0.5) {
                        tx.send(Msg { addr: p.as_ptr() as usize, len, fill }).unwrap();
                    } else {
                        local.push((p, len, fill));
                    }
                }
                while let Ok(m) = rx.try_recv() {
                    check(&m);
                    // SAFETY: a live chunk handed over by another thread.
                    unsafe { pool.free(NonNull::new(m.addr as *mut u8).unwrap()) };
                }
                if local.len() > 64 {
                    let (p, len, fill) = local.swap_remove(rng.gen_range(0..local.len()));
                    check(&Msg { addr: p.as_ptr() as usize, len, fill });
                    // SAFETY: our own live chunk.
                    unsafe { pool.free_sized(p, len) };
                }
            }
            drop(tx);
            for (p, len, fill) in local {
                check(&Msg { addr: p.as_ptr() as usize, len, fill });
                // SAFETY: our own live chunk.
                unsafe { pool.free(p) };
            }
            // Drain what the previous thread still sends until it hangs up.
            for m in rx {
                check(&m);
                // SAFETY: as above.
                unsafe { pool.free(NonNull::new(m.addr as *mut u8).unwrap()) };
            }
        }));
    }
    drop(txs);
    for h in handles {
        h.join().unwrap();
    }
    pool.collect();
    pool.validate().unwrap();
    let st = pool.stats();
    assert_eq!(st.in_use_bytes, 0, "{st:?}");
    assert!(st.remote_frees_queued > 0, "the test exercised remote frees");
    assert_eq!(st.remote_frees_queued, st.remote_frees_drained);
    assert_eq!(st.free_bytes, st.mapped_bytes);
}

#[test]
fn idle_owners_remote_queue_is_reclaimed() {
    // Thread A (shard 0) allocates the whole pool and goes idle, alive.
    // Thread B (shard 1) frees every chunk: each free is a remote free into
    // idle shard 0's queue, which A never drains. B then allocates: the
    // pool must drain A's queue (and take the nodes) rather than fail.
    let pool = Pool::builder().capacity(8 << 20).shards(2).hugepages(HugePages::Off).retain_bytes(0).build().unwrap();
    let (filled_tx, filled_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let a = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.bind_current_thread(0);
            let mut v = Vec::new();
            while let Some(p) = pool.alloc(60_000) {
                v.push(p.as_ptr() as usize);
            }
            filled_tx.send(v).unwrap();
            let _ = done_rx.recv();
        })
    };
    let addrs = filled_rx.recv().unwrap();
    assert!(addrs.len() >= 128, "A filled the pool ({} chunks)", addrs.len());
    pool.bind_current_thread(1);
    for &addr in &addrs {
        // SAFETY: live chunks of this pool, handed over by A, freed once.
        unsafe { pool.free(NonNull::new(addr as *mut u8).unwrap()) };
    }
    let st = pool.stats();
    assert_eq!(st.remote_frees_queued, addrs.len() as u64, "every free went to shard 0's queue: {st:?}");
    assert_eq!(st.remote_frees_drained, 0, "idle shard 0 drained nothing");
    let mut got = Vec::new();
    while let Some(p) = pool.alloc(60_000) {
        got.push(p);
    }
    assert!(got.len() + 2 >= addrs.len(), "B got {} of {} chunks", got.len(), addrs.len());
    assert_eq!(pool.stats().remote_frees_drained, addrs.len() as u64, "the reclaim drained the idle owner's queue");
    for p in got {
        // SAFETY: live chunks.
        unsafe { pool.free(p) };
    }
    drop(done_tx);
    a.join().unwrap();
    pool.collect();
    pool.validate().unwrap();
    assert_eq!(pool.stats().in_use_bytes, 0);
    pool.unbind_current_thread();
}
