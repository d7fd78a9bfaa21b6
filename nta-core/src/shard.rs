//! Shards: the per-CPU owners of nodes.
//!
//! A shard owns a set of huge nodes (and the page nodes carved from them),
//! its free lists ([`Heap`]), its counters and its remote-free queue. A
//! thread works on the shard it was bound to with
//! `Pool::bind_current_thread`, or else on its home shard: the shard of the
//! CPU it first allocated on, which it leaves only when another thread is
//! using it.
//!
//! # Exclusion without waiting
//!
//! Threads sharing a shard (more threads than CPUs, or a preempted thread)
//! are kept apart by a one-byte try-lock. The fast path never waits on it:
//! an allocation whose shard is busy tries another shard, and a free whose
//! owner is busy goes to the owner's remote-free queue instead, which is
//! lock-free. Only cold paths (`shrink` from a foreign thread, `stats`,
//! `validate`) spin for a shard.
//!
//! Memory ordering: `try_lock` is an `Acquire` swap and the guard's drop a
//! `Release` store, so everything a holder wrote to the heap and node
//! metadata is visible to the next holder.

use crate::heap::Heap;
use crate::remote::RemoteQueue;
use crate::stats::Counters;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering::*};

/// One shard. Aligned so that two shards never share a cache line.
#[repr(align(128))]
#[derive(Debug)]
pub struct Shard {
    lock: AtomicBool,
    /// This shard's index in its pool.
    index: usize,
    heap: UnsafeCell<Heap>,
    pub counters: Counters,
    /// Pushed to by other threads; kept on its own cache line.
    pub remote: Padded<RemoteQueue>,
}

/// Puts its content on a cache line (pair) of its own.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

// SAFETY: the heap is only reached through a ShardGuard, which the lock
// makes exclusive; everything else is atomic.
unsafe impl Sync for Shard {}
// SAFETY: the raw pointers inside the heap designate pool memory, which is
// not tied to any thread.
unsafe impl Send for Shard {}

impl Shard {
    /// Shard `index` of a pool; `checked` turns on extent checksums.
    pub fn new(index: usize, checked: bool) -> Self {
        Shard {
            lock: AtomicBool::new(false),
            index,
            heap: UnsafeCell::new(Heap::new(checked)),
            counters: Counters::default(),
            remote: Padded(RemoteQueue::new()),
        }
    }
}

/// Exclusive access to a shard's heap; unlocks on drop (also on unwind).
#[derive(Debug)]
pub struct ShardGuard<'a> {
    shard: &'a Shard,
}

impl Shard {
    /// This shard's index in its pool.
    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// Takes the shard if no one holds it.
    #[inline]
    pub fn try_lock(&self) -> Option<ShardGuard<'_>> {
        // Test, then test-and-set: a held lock is seen with a shared read
        // of its line, so a thread going around a busy shard does not take
        // the line away from its holder.
        if self.lock.load(Relaxed) || self.lock.swap(true, Acquire) {
            None
        } else {
            Some(ShardGuard { shard: self })
        }
    }

    /// Takes the lock without a guard (fork `prepare`).
    pub fn lock_for_fork(&self) {
        std::mem::forget(self.lock());
    }

    /// Releases the lock taken by [`Shard::lock_for_fork`].
    ///
    /// # Safety
    /// Only in the fork `parent` and `child` handlers after `lock_for_fork`.
    pub unsafe fn unlock_for_fork(&self) {
        self.lock.store(false, Release);
    }

    /// Takes the shard, spinning (and yielding) while another thread holds
    /// it. Cold paths only.
    #[cold]
    pub fn lock(&self) -> ShardGuard<'_> {
        let mut spins = 0u32;
        loop {
            if !self.lock.load(Relaxed) {
                if let Some(g) = self.try_lock() {
                    return g;
                }
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl<'a> ShardGuard<'a> {
    /// The shard's heap.
    #[inline]
    pub fn heap(&mut self) -> &mut Heap {
        // SAFETY: holding the guard means holding the lock, so no other
        // reference to the heap exists.
        unsafe { &mut *self.shard.heap.get() }
    }

    /// The shard itself.
    #[inline]
    pub fn shard(&self) -> &'a Shard {
        self.shard
    }
}

impl Drop for ShardGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.shard.lock.store(false, Release);
    }
}
