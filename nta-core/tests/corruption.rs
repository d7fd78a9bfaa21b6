//! Corruption detection, in child processes (after snmalloc's
//! `corruption_detection` tests): each scenario runs in a fresh copy of
//! this test binary, does one invalid thing, and must die with its
//! documented message, within a time limit (a deadlock fails too).
//!
//! The parent test `scenarios_die_with_their_message` re-runs this binary
//! with `NTA_SCENARIO=<name>` and the filter `child_entry`; `child_entry`
//! runs the named scenario and does nothing when the variable is unset.

use nta_core::{HugePages, Pool};
use std::process::{Command, Stdio};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

fn pool(checked: bool) -> Pool {
    Pool::builder().capacity(16 << 20).shards(2).hugepages(HugePages::Off).checked(checked).build().unwrap()
}

/// Each scenario: its name, the message it must die with, and its body.
const SCENARIOS: &[(&str, &str, fn())] = &[
    ("double_free_thread_cache", "double free", || {
        let p = pool(false);
        let a = p.alloc(100).unwrap();
        // SAFETY: deliberately invalid: the second free_sized parks `a` twice.
        unsafe {
            p.free_sized(a, 100);
            p.free_sized(a, 100);
        }
    }),
    ("double_free_unsized_quick_cache", "double free", || {
        let p = pool(false);
        p.bind_current_thread(0);
        let a = p.alloc(100).unwrap();
        // SAFETY: deliberately invalid: both unsized frees go the shard way.
        unsafe {
            p.free(a);
            p.free(a);
        }
    }),
    ("double_free_sized_then_unsized", "double free", || {
        let p = pool(false);
        let a = p.alloc(600).unwrap();
        // SAFETY: deliberately invalid.
        unsafe {
            p.free_sized(a, 600);
            p.free(a);
        }
    }),
    ("double_free_merged", "double free", || {
        let p = pool(false);
        let a = p.alloc(9000).unwrap(); // above the caches: merged at once
                                        // SAFETY: deliberately invalid.
        unsafe {
            p.free(a);
            p.free_sized(a, 9000);
        }
    }),
    ("double_free_merged_through_thread_cache", "double free", || {
        let p = pool(false);
        p.bind_current_thread(0);
        let a = p.alloc(100).unwrap();
        p.collect();
        // SAFETY: deliberately invalid: the first free is merged by
        // collect(), the second goes to the thread-cache path.
        unsafe {
            p.free(a);
            p.collect();
            p.free_sized(a, 100);
        }
    }),
    ("double_free_remote", "double free", || {
        let p = pool(false);
        p.bind_current_thread(0);
        let a = p.alloc(100).unwrap().as_ptr() as usize;
        let q = p.clone();
        std::thread::spawn(move || {
            q.bind_current_thread(1);
            let a = NonNull::new(a as *mut u8).unwrap();
            // SAFETY: deliberately invalid: shard 1 frees shard 0's chunk
            // twice, unsized, so both go to shard 0's remote queue.
            unsafe {
                q.free(a);
                q.free(a);
            }
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    }),
    ("double_free_across_thread_caches", "double free", || {
        let p = pool(false);
        let a = p.alloc(100).unwrap().as_ptr() as usize;
        let q = p.clone();
        // Thread A parks the chunk in its cache and stays alive.
        let (parked_tx, parked_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            // SAFETY: a live chunk, freed once here.
            unsafe { q.free_sized(NonNull::new(a as *mut u8).unwrap(), 100) };
            parked_tx.send(()).unwrap();
            let _ = done_rx.recv();
        });
        parked_rx.recv().unwrap();
        // SAFETY: deliberately invalid: this thread frees it again.
        unsafe { p.free_sized(NonNull::new(a as *mut u8).unwrap(), 100) };
        drop(done_tx);
        holder.join().unwrap();
    }),
    ("double_free_run", "double free", || {
        let p = pool(false);
        let a = p.alloc(5 << 20).unwrap();
        // SAFETY: deliberately invalid.
        unsafe {
            p.free(a);
            p.free(a);
        }
    }),
    ("interior_free", "interior pointer", || {
        let p = pool(false);
        let a = p.alloc(1000).unwrap();
        // SAFETY: deliberately invalid: 64 bytes into a live chunk.
        unsafe { p.free(NonNull::new(a.as_ptr().add(64)).unwrap()) };
    }),
    ("interior_free_sized", "interior pointer", || {
        let p = pool(false);
        let a = p.alloc(1000).unwrap();
        // SAFETY: deliberately invalid, through the thread-cache path.
        unsafe { p.free_sized(NonNull::new(a.as_ptr().add(64)).unwrap(), 100) };
    }),
    ("interior_free_of_run", "interior pointer", || {
        let p = pool(false);
        let a = p.alloc(5 << 20).unwrap();
        // SAFETY: deliberately invalid: inside the run's second segment.
        unsafe { p.free(NonNull::new(a.as_ptr().add(3 << 20)).unwrap()) };
    }),
    ("foreign_pointer", "pointer is not from this pool", || {
        let p = pool(false);
        let mut outside = Box::new([0u8; 64]);
        // SAFETY: deliberately invalid: heap memory the pool never made.
        unsafe { p.free(NonNull::new(outside.as_mut_ptr()).unwrap()) };
    }),
    ("foreign_pointer_sized", "pointer is not from this pool", || {
        let p = pool(false);
        let mut outside = Box::new([0u8; 64]);
        // SAFETY: deliberately invalid.
        unsafe { p.free_sized(NonNull::new(outside.as_mut_ptr()).unwrap(), 64) };
    }),
    ("wrong_size", "size mismatch", || {
        let p = pool(false);
        let a = p.alloc(100).unwrap();
        // SAFETY: deliberately invalid: the chunk holds 128 bytes.
        unsafe { p.free_sized(a, 5000) };
    }),
    ("absurd_size", "size mismatch", || {
        let p = pool(false);
        let a = p.alloc(100).unwrap();
        // SAFETY: deliberately invalid.
        unsafe { p.free_sized(a, usize::MAX) };
    }),
    ("absurd_shrink", "would grow", || {
        let p = pool(false);
        let a = p.alloc(100).unwrap();
        // SAFETY: `a` is live; the length is what is wrong.
        unsafe { p.shrink(a, usize::MAX) };
    }),
    ("checked_overrun_into_free_neighbour", "heap corruption", || {
        let p = pool(true);
        p.bind_current_thread(0);
        let a = p.alloc(100).unwrap(); // 128 bytes; the rest of its page node is free
                                       // SAFETY: deliberately invalid: 12 bytes past the end of `a`, into
                                       // the header of its free right neighbour.
        unsafe { a.as_ptr().add(128).write_bytes(0x41, 12) };
        // Carving from that neighbour finds the damage.
        let _ = p.alloc(100);
    }),
    ("checked_overrun_found_on_merge", "heap corruption", || {
        let p = pool(true);
        p.bind_current_thread(0);
        let a = p.alloc(100).unwrap();
        // SAFETY: deliberately invalid write past the end of `a`; then the
        // free of `a` merges with the damaged neighbour.
        unsafe {
            a.as_ptr().add(128).write_bytes(0x41, 8);
            p.free(a);
        }
    }),
];

#[test]
fn child_entry() {
    let Ok(name) = std::env::var("NTA_SCENARIO") else { return };
    let (_, _, body) = SCENARIOS.iter().find(|(n, _, _)| *n == name).expect("known scenario");
    body();
    // Reaching here means the invalid operation went unnoticed.
    std::process::exit(3);
}

#[test]
fn scenarios_die_with_their_message() {
    let exe = std::env::current_exe().unwrap();
    let mut failures = Vec::new();
    for (name, message, _) in SCENARIOS {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
            .env("NTA_SCENARIO", name)
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > Duration::from_secs(30) {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let expected = "nta-core: invalid free of 0x";
        let ok = match status {
            None => {
                failures.push(format!("{name}: hung (deadlock?)"));
                continue;
            }
            Some(s) => {
                !s.success()
                    && s.code() != Some(3)
                    && stderr.contains(message)
                    && (message.contains("corruption") || message.contains("grow") || stderr.contains(expected))
            }
        };
        if !ok {
            failures.push(format!("{name}: status {status:?}, wanted a panic with {message:?}; stderr:\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{} scenario(s) failed:\n{}", failures.len(), failures.join("\n"));
}
