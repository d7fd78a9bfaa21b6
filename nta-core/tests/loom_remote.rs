//! Loom model of the remote-free queue (`src/remote.rs`, compiled here
//! against loom's atomics and loom's cells).
//!
//! What is checked:
//! - the atomics of the protocol (`head` CAS, `take_all` swap, `pushed`);
//! - the link words in the chunk (next, mark, len): `remote.rs` writes and
//!   reads them through `sync::cell_write` / `cell_read`, which here go
//!   through a `loom::cell::UnsafeCell`, so loom reports any interleaving in
//!   which the owner could read a link the producer has not published
//!   (a data race), and any in which a producer writes a link the owner is
//!   still reading;
//! - re-pushing a chunk after a drain (a chunk freed remotely, merged,
//!   reallocated and freed remotely again): no ABA, every push arrives once.
//!
//! What is not: the pool around the queue (who may push what) is modelled
//! by the test's own rules: each fake chunk is pushed only while no one
//! else holds it.

#[allow(dead_code)]
mod sync {
    pub use loom::sync::atomic;

    /// Loom stand-in: `at` points at a `loom::cell::UnsafeCell<T>` (the
    /// fake chunks below are exactly that), so the access is tracked.
    ///
    /// # Safety
    /// `at` must be the address of a live `loom::cell::UnsafeCell<T>`.
    pub unsafe fn cell_write<T>(at: *mut T, value: T) {
        // SAFETY: per the caller.
        let cell = unsafe { &*at.cast::<loom::cell::UnsafeCell<T>>() };
        // SAFETY: loom checks the access for races.
        cell.with_mut(|p| unsafe { p.write(value) });
    }

    /// # Safety
    /// As for `cell_write`.
    pub unsafe fn cell_read<T: Copy>(at: *const T) -> T {
        // SAFETY: per the caller.
        let cell = unsafe { &*at.cast::<loom::cell::UnsafeCell<T>>() };
        // SAFETY: loom checks the access for races.
        cell.with(|p| unsafe { p.read() })
    }
}

#[allow(dead_code)]
#[path = "../src/remote.rs"]
mod remote;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use remote::{Chain, RemoteLink, RemoteQueue};

/// A fake chunk: the queue's link words as a loom cell.
type Chunk = loom::cell::UnsafeCell<RemoteLink>;

fn chunk() -> *mut u8 {
    let link = RemoteLink { next: std::ptr::null_mut(), mark: 0, len: 0 };
    Box::into_raw(Box::new(Chunk::new(link))).cast()
}

fn collect(q: &RemoteQueue, seen: &mut Vec<(usize, usize)>) {
    let mut node = q.take_all();
    while !node.is_null() {
        // SAFETY: every detached node is a live fake chunk written by `push`.
        let link = unsafe { RemoteQueue::link(node) };
        seen.push((node as usize, link.len));
        node = link.next;
    }
}

fn free_chunks(chunks: &[usize]) {
    for &c in chunks {
        // SAFETY: made by `chunk()` and no longer referenced.
        drop(unsafe { Box::from_raw(c as *mut Chunk) });
    }
}

#[test]
fn two_producers_one_draining_owner() {
    loom::model(|| {
        let q = Arc::new(RemoteQueue::new());
        let chunks: Vec<usize> = (0..3).map(|_| chunk() as usize).collect();
        let producers: Vec<_> = [vec![chunks[0], chunks[1]], vec![chunks[2]]]
            .into_iter()
            .enumerate()
            .map(|(t, mine)| {
                let q = q.clone();
                loom::thread::spawn(move || {
                    for (i, c) in mine.into_iter().enumerate() {
                        // SAFETY: each fake chunk is pushed exactly once.
                        unsafe { q.push(c as *mut u8, 100 * t + i, 7) };
                    }
                })
            })
            .collect();
        let mut seen = Vec::new();
        collect(&q, &mut seen); // drains concurrently with the pushes
        for p in producers {
            p.join().unwrap();
        }
        collect(&q, &mut seen);
        seen.sort_unstable();
        let mut want: Vec<(usize, usize)> = vec![(chunks[0], 0), (chunks[1], 1), (chunks[2], 100)];
        want.sort_unstable();
        assert_eq!(seen, want, "every chunk drained exactly once with its length");
        assert!(q.is_empty());
        assert_eq!(q.pushed(), 3);
        free_chunks(&chunks);
    });
}

#[test]
fn chunk_pushed_again_after_a_drain() {
    // The producer pushes chunk A, the owner drains it and hands it back
    // (as if merged, reallocated and given to the producer again); the
    // producer pushes A again while it also pushes B. Every push must reach
    // the owner once: A twice in all, B once.
    loom::model(|| {
        let q = Arc::new(RemoteQueue::new());
        let (a, b) = (chunk() as usize, chunk() as usize);
        let handed_back = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (q, handed_back) = (q.clone(), handed_back.clone());
            loom::thread::spawn(move || {
                // SAFETY: A is ours until pushed.
                unsafe { q.push(a as *mut u8, 1, 7) };
                // SAFETY: B is ours until pushed.
                unsafe { q.push(b as *mut u8, 2, 7) };
                // Wait until the owner has drained A and handed it back.
                while handed_back.load(Ordering::Acquire) == 0 {
                    loom::thread::yield_now();
                }
                // SAFETY: A is ours again (handed back by the owner).
                unsafe { q.push(a as *mut u8, 3, 7) };
            })
        };
        let mut seen = Vec::new();
        while !seen.iter().any(|&(c, _)| c == a) {
            collect(&q, &mut seen);
            loom::thread::yield_now();
        }
        handed_back.store(1, Ordering::Release);
        producer.join().unwrap();
        collect(&q, &mut seen);
        let mut lens: Vec<usize> = seen.iter().map(|&(_, len)| len).collect();
        lens.sort_unstable();
        assert_eq!(lens, vec![1, 2, 3], "each push arrives exactly once");
        assert_eq!(seen.iter().filter(|&&(c, _)| c == a).count(), 2);
        assert!(q.is_empty());
        free_chunks(&[a, b]);
    });
}

#[test]
fn a_chain_and_a_single_push_race_a_draining_owner() {
    // One producer links two chunks and pushes them with one CAS while
    // another pushes one chunk and the owner drains: every chunk arrives
    // once, with its length, and the counter counts three.
    loom::model(|| {
        let q = Arc::new(RemoteQueue::new());
        let chunks: Vec<usize> = (0..3).map(|_| chunk() as usize).collect();
        let chained = {
            let (q, a, b) = (q.clone(), chunks[0], chunks[1]);
            loom::thread::spawn(move || {
                let mut chain = Chain::default();
                // SAFETY: each fake chunk is given to the chain once.
                unsafe {
                    chain.add(a as *mut u8, 10, 7);
                    chain.add(b as *mut u8, 11, 7);
                    q.push_chain(&chain);
                }
            })
        };
        let single = {
            let (q, c) = (q.clone(), chunks[2]);
            // SAFETY: pushed once.
            loom::thread::spawn(move || unsafe { q.push(c as *mut u8, 12, 7) })
        };
        let mut seen = Vec::new();
        collect(&q, &mut seen);
        chained.join().unwrap();
        single.join().unwrap();
        collect(&q, &mut seen);
        seen.sort_unstable();
        let mut want = vec![(chunks[0], 10), (chunks[1], 11), (chunks[2], 12)];
        want.sort_unstable();
        assert_eq!(seen, want);
        assert_eq!(q.pushed(), 3);
        free_chunks(&chunks);
    });
}
