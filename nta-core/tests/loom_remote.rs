//! Loom model of the remote-free queue (`src/remote.rs`, compiled here
//! against loom's atomics): two threads push while the owner drains. Every
//! pushed chunk must reach the owner exactly once, with its length intact.

#[allow(dead_code)]
mod sync {
    pub use loom::sync::atomic;
}

#[allow(dead_code)]
#[path = "../src/remote.rs"]
mod remote;

use loom::sync::Arc;
use remote::{RemoteLink, RemoteQueue};

/// A fake 32-byte chunk (the queue stores its link inside the chunk).
#[repr(C, align(32))]
struct Chunk([u8; 32]);

fn chunk() -> *mut u8 {
    Box::into_raw(Box::new(Chunk([0; 32]))).cast()
}

fn collect(q: &RemoteQueue, seen: &mut Vec<(usize, usize)>) {
    let mut node = q.take_all();
    while !node.is_null() {
        // SAFETY: every queued node is a live fake chunk written by `push`.
        let (next, len) = unsafe { ((*node).next, (*node).len) };
        seen.push((node as usize, len));
        node = next;
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
                        unsafe { q.push(c as *mut u8, 100 * t + i) };
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
        for c in chunks {
            // SAFETY: made by `chunk()` and no longer referenced.
            drop(unsafe { Box::from_raw(c as *mut Chunk) });
        }
        let _ = std::mem::size_of::<RemoteLink>();
    });
}
