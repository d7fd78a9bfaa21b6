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
    assert_eq!(st.live_requested_bytes, 0);
    assert!(st.remote_frees_queued > 0, "the test exercised remote frees");
    assert_eq!(st.remote_frees_queued, st.remote_frees_drained);
    assert_eq!(st.free_bytes, st.mapped_bytes);
}

#[test]
fn idle_shard_memory_is_not_stranded() {
    // Shard 1 frees all its chunks remotely into shard 0's queue and holds a
    // wholly free node; shard 0 then runs out and must reclaim both.
    let pool = Pool::builder().capacity(8 << 20).shards(2).hugepages(HugePages::Off).retain_bytes(0).build().unwrap();
    let p1 = pool.clone();
    let addrs: Vec<usize> = std::thread::spawn(move || {
        p1.bind_current_thread(1);
        let mut v = Vec::new();
        while let Some(p) = p1.alloc(60_000) {
            v.push(p.as_ptr() as usize);
        }
        // Give everything back from shard 1 itself except the last chunk.
        let last = v.pop().unwrap();
        for a in v {
            // SAFETY: live chunks of this pool.
            unsafe { p1.free(NonNull::new(a as *mut u8).unwrap()) };
        }
        vec![last]
    })
    .join()
    .unwrap();
    pool.bind_current_thread(0);
    // The freed nodes are parked or held by idle shard 1; shard 0 gets them.
    let mut got = Vec::new();
    while let Some(p) = pool.alloc(60_000) {
        got.push(p);
    }
    assert!(got.len() >= 90, "shard 0 reclaimed shard 1's free nodes (got {} chunks)", got.len());
    // Shard 0 frees shard 1's last chunk remotely; shard 1 goes idle.
    // SAFETY: live chunk.
    unsafe { pool.free(NonNull::new(addrs[0] as *mut u8).unwrap()) };
    for p in got {
        // SAFETY: live chunks.
        unsafe { pool.free(p) };
    }
    pool.collect();
    pool.validate().unwrap();
    assert_eq!(pool.stats().in_use_bytes, 0);
    pool.unbind_current_thread();
}
