//! `fork()` with pools alive: `NtaGlobal` (the global allocator of this
//! whole test binary) survives a fork while other threads allocate, a
//! private pool works in the child, and an exportable pool is frozen in
//! the child (allocations fail, frees do nothing) so parent and child never
//! share a chunk. Each child reports through its exit status; a child that
//! hangs (a lock copied while held) fails the test after a timeout.

use nta_core::{HugePages, NtaGlobal, Pool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: NtaGlobal = NtaGlobal::new();

/// Forks; the child runs `child` and `_exit`s with its return value.
/// Returns the child's exit code, or `None` if it did not exit within 10 s
/// (it is then killed).
fn fork_and_wait(child: impl FnOnce() -> i32) -> Option<i32> {
    // SAFETY: fork has no preconditions; the child only runs `child` (which
    // sticks to what the test means to check) and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 });
        }
        if start.elapsed() > Duration::from_secs(10) {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Allocation-heavy work on the global allocator.
fn busy_work(round: usize) -> usize {
    let mut map = std::collections::HashMap::new();
    for i in 0..2000 {
        map.insert(format!("key-{round}-{i}"), vec![i as u8; i % 700 + 1]);
    }
    let big = vec![round as u8; 3 << 20]; // a run in the global pool
    map.values().map(Vec::len).sum::<usize>() + big.len()
}

#[test]
fn the_global_allocator_and_a_private_pool_survive_fork_under_load() {
    let private =
        Pool::builder().capacity(64 << 20).shards(2).hugepages(HugePages::Off).exportable(false).build().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (stop, private) = (&stop, &private);
            s.spawn(move || {
                let mut round = t;
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(busy_work(round));
                    let chunks: Vec<_> = (0..500).filter_map(|i| private.alloc(64 + i * 7)).collect();
                    for (i, p) in chunks.into_iter().enumerate() {
                        // SAFETY: live chunks of `private`, freed once.
                        unsafe { private.free_sized(p, 64 + i * 7) };
                    }
                    round += 2;
                }
            });
        }
        for i in 0..40 {
            let code = fork_and_wait(|| {
                let n = busy_work(1000 + i);
                let p = private.alloc(1500).expect("a private pool allocates in the child");
                // SAFETY: fresh chunk of `private`.
                unsafe {
                    p.as_ptr().write_bytes(7, 1500);
                    private.free_sized(p, 1500);
                }
                if private.validate().is_err() {
                    return 3;
                }
                i32::from(n == 0) * 2
            });
            if code != Some(0) {
                stop.store(true, Ordering::Relaxed);
                panic!("fork {i}: child ended with {code:?} (None: it hung)");
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    private.collect();
    private.validate().unwrap();
    assert!(GLOBAL.stats().is_some_and(|s| s.allocs > 0));
}

#[test]
fn an_exportable_pool_is_frozen_in_the_child() {
    let pool = Pool::builder().capacity(16 << 20).shards(1).hugepages(HugePages::Off).build().unwrap();
    let a = pool.alloc(1000).unwrap();
    // SAFETY: fresh chunk.
    unsafe { a.as_ptr().write_bytes(0xAA, 1000) };
    let warm = pool.alloc(100).unwrap();
    // SAFETY: parks `warm` in this thread's cache, which the child inherits.
    unsafe { pool.free_sized(warm, 100) };
    let code = fork_and_wait(|| {
        if pool.alloc(100).is_some() || pool.alloc(5000).is_some() || pool.alloc(5 << 20).is_some() {
            return 1; // the child carved shared memory
        }
        // SAFETY: `a` is the parent's live chunk; in the child these must
        // change nothing (the memory is shared with the parent).
        unsafe {
            pool.free_sized(a, 1000);
            pool.free(a);
            if pool.try_grow(a, 2000) {
                return 2;
            }
        }
        if pool.validate().is_ok() {
            return 3; // a frozen pool is not walked
        }
        0
    });
    assert_eq!(code, Some(0), "child exit code");
    // The parent's chunk is intact and still the parent's.
    // SAFETY: `a` is live.
    let bytes = unsafe { std::slice::from_raw_parts(a.as_ptr(), 1000) };
    assert!(bytes.iter().all(|&b| b == 0xAA));
    let b = pool.alloc(100).unwrap();
    // SAFETY: live chunks, freed once.
    unsafe {
        pool.free(a);
        pool.free_sized(b, 100);
    }
    pool.collect();
    pool.validate().unwrap();
    assert_eq!(pool.stats().in_use_bytes, 0);
}
