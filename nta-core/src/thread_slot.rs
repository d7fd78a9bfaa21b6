//! Thread slots: one thread's cache of freed chunks in one pool, and the
//! protocol that lets another thread take it over.
//!
//! # What a slot holds
//!
//! A LIFO stack of parked chunks per exact granule count (up to
//! [`TC_MAX_GRANULES`]), linked through each chunk's first word, with each
//! chunk's second word holding its parked mark (see `mark`). Per-size
//! counts, a byte total and the slot's share of the pool counters. The
//! owning thread reads and writes all of it with plain loads and stores:
//! no atomic read-modify-write on its fast path (see `thread_cache`).
//!
//! # Taking a slot over without slowing its owner (asymmetric fence)
//!
//! Two things need another thread to act on a slot: a pool that is about to
//! fail an allocation reclaims idle threads' caches (`reclaim`), and
//! `validate` and the double-free confirmation read them. The owner must
//! not pay a locked instruction per operation for this, so the slot uses an
//! asymmetric Dekker handshake, the heavy side being `membarrier(2)`:
//!
//! - **owner**, around every use of its stacks: `busy = 1` (plain store);
//!   compiler fence; if `steal` is set, `busy = 0` and go the shard way
//!   instead; else use the stacks; `busy = 0` (release store).
//! - **thief**: take the slot's `steal` flag (a CAS among thieves only);
//!   `membarrier()`; wait until `busy == 0` (acquire); now the stacks are the
//!   thief's until it clears `steal` (release).
//!
//! Why it is safe: `membarrier` makes every running thread of the process
//! execute a full barrier before it returns. For an owner operation, either
//! its load of `steal` comes after that barrier, and then it sees the flag
//! the thief stored before calling `membarrier`, and backs off; or its store
//! `busy = 1` came before the barrier, and then the thief's later load sees
//! it and waits for `busy = 0`. The owner never blocks inside its busy
//! section (it takes no lock there), so the thief's wait is short. (The
//! same argument underlies userspace RCU's and Folly's asymmetric fences.)
//! If the kernel has no `membarrier`, slots cannot be taken over, and
//! pools then run without thread caches (every free goes the shard way).
//!
//! Thieves exclude each other with the `steal` flag itself; one that holds
//! a slot never waits for a shard lock, so a thief may hold shard locks
//! while it takes slots (`validate` does).
//!
//! # Invariants
//!
//! - `bytes == sum over g of counts[g] * g * 32 <= TC_MAX_BYTES`, and
//!   `counts[g] <= TC_PER_CLASS`;
//! - every chunk on `heads[g]` is a live-marked chunk of exactly `g`
//!   granules whose second word is this slot's mark.

use crate::granule::GRANULE;
use crate::mark::{self, Key, Parked};
use crate::stats::{bump, Counters};
use crate::sys;
use std::ptr;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicPtr, AtomicU16, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::OnceLock;

/// Largest chunk, in granules, a thread cache holds (2 KiB).
pub const TC_MAX_GRANULES: usize = 64;
/// Chunks cached per size per thread.
pub const TC_PER_CLASS: u16 = 64;
/// Bytes cached per thread and pool at most.
pub const TC_MAX_BYTES: usize = 256 << 10;
/// Slots per pool (threads caching at once); further threads go the shard way.
pub const SLOTS: usize = 256;

/// One thread's cache in one pool.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct ThreadSlot {
    /// Set by the owner while it uses the stacks.
    busy: AtomicBool,
    /// Set by a thief that has taken (or is taking) the stacks.
    steal: AtomicBool,
    claimed: AtomicBool,
    /// The parked mark of this slot's chunks (see `mark`), set when the
    /// slot is claimed.
    mark: AtomicU64,
    heads: [AtomicPtr<u8>; TC_MAX_GRANULES + 1],
    counts: [AtomicU16; TC_MAX_GRANULES + 1],
    bytes: AtomicUsize,
    pub counters: Counters,
}

impl Default for ThreadSlot {
    fn default() -> Self {
        ThreadSlot {
            busy: AtomicBool::new(false),
            steal: AtomicBool::new(false),
            claimed: AtomicBool::new(false),
            mark: AtomicU64::new(0),
            heads: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            counts: std::array::from_fn(|_| AtomicU16::new(0)),
            bytes: AtomicUsize::new(0),
            counters: Counters::default(),
        }
    }
}

/// The membarrier this process uses, decided once.
fn barrier() -> Option<sys::Barrier> {
    static KIND: OnceLock<Option<sys::Barrier>> = OnceLock::new();
    *KIND.get_or_init(sys::barrier_init)
}

/// Whether slots can be taken over here (the kernel has `membarrier`).
/// Pools run without thread caches otherwise.
pub fn stealing_supported() -> bool {
    barrier().is_some()
}

/// The heavy side of the handshake: after this, every owner either sees the
/// `steal` flags set before the call or has published its `busy` store.
fn fence_owners() {
    if let Some(kind) = barrier() {
        if !sys::process_barrier(kind) {
            // Registration is per process; a forked child may need it again.
            let _ = sys::barrier_init();
            let ok = sys::process_barrier(kind);
            assert!(ok, "nta-core: membarrier failed after it had worked");
        }
    }
}

impl ThreadSlot {
    /// Claims a free slot of `slots` for the calling thread; `key` gives
    /// the pool's parked marks.
    pub fn claim(slots: &[ThreadSlot], key: Key) -> Option<&ThreadSlot> {
        let (i, slot) =
            slots.iter().enumerate().find(|(_, s)| !s.claimed.load(Relaxed) && !s.claimed.swap(true, Acquire))?;
        slot.mark.store(key.mark(Parked::ThreadSlot(i)), Relaxed);
        Some(slot)
    }

    /// Whether a thread has ever claimed the slot (its mark is set at the
    /// first claim and kept).
    pub fn was_claimed(&self) -> bool {
        self.mark.load(Relaxed) != 0
    }

    /// Gives the slot up (its stacks must be empty).
    pub fn unclaim(&self) {
        debug_assert_eq!(self.bytes.load(Relaxed), 0);
        self.claimed.store(false, Release);
    }

    /// Owner: starts using the stacks. False when a thief holds them; the
    /// caller then goes the shard way.
    #[inline]
    pub fn enter(&self) -> bool {
        self.busy.store(true, Relaxed);
        compiler_fence(SeqCst);
        if self.steal.load(Acquire) {
            self.busy.store(false, Release);
            return false;
        }
        true
    }

    /// Owner: done with the stacks.
    #[inline]
    pub fn leave(&self) {
        self.busy.store(false, Release);
    }

    /// Pops a chunk of `g` granules and clears its mark. Owner inside
    /// `enter`/`leave`, or a thief holding the slot.
    #[inline]
    pub fn pop(&self, g: usize) -> Option<*mut u8> {
        let head = self.heads[g].load(Relaxed);
        if head.is_null() {
            return None;
        }
        // SAFETY: parked chunks hold the next link in their first word and
        // their mark in the second; the caller has exclusive use of the stacks.
        let next = unsafe {
            mark::clear(head);
            head.cast::<*mut u8>().read()
        };
        self.heads[g].store(next, Relaxed);
        self.counts[g].store(self.counts[g].load(Relaxed) - 1, Relaxed);
        self.bytes.store(self.bytes.load(Relaxed) - g * GRANULE, Relaxed);
        Some(head)
    }

    /// Parks a chunk of `g` granules, writing the slot's mark into it;
    /// false when the size or the slot is full.
    ///
    /// # Safety
    /// `chunk` is a live chunk of `g` granules of the slot's pool, given up;
    /// the caller has exclusive use of the stacks.
    #[inline]
    pub unsafe fn push(&self, chunk: *mut u8, g: usize) -> bool {
        let count = self.counts[g].load(Relaxed);
        let bytes = self.bytes.load(Relaxed) + g * GRANULE;
        if count >= TC_PER_CLASS || bytes > TC_MAX_BYTES {
            return false;
        }
        // SAFETY: the chunk is ours and at least one granule long.
        unsafe {
            chunk.cast::<*mut u8>().write(self.heads[g].load(Relaxed));
            mark::write(chunk, self.mark.load(Relaxed));
        }
        self.heads[g].store(chunk, Relaxed);
        self.counts[g].store(count + 1, Relaxed);
        self.bytes.store(bytes, Relaxed);
        true
    }

    /// Checks the invariants of the module notes on the stacks' counts and
    /// byte total (the chunks themselves are checked against the bitmaps by
    /// `validate`). The caller has exclusive use of the stacks.
    pub fn check(&self) -> Result<(), String> {
        let mut bytes = 0;
        for g in 0..=TC_MAX_GRANULES {
            let mut len = 0usize;
            let mut c = self.heads[g].load(Relaxed);
            while !c.is_null() && len <= TC_PER_CLASS as usize {
                len += 1;
                // SAFETY: as in `pop`.
                c = unsafe { c.cast::<*mut u8>().read() };
            }
            let count = self.counts[g].load(Relaxed);
            if count as usize != len || count > TC_PER_CLASS {
                return Err(format!(
                    "the {g}-granule stack holds {len} chunks, counted {count} (at most {TC_PER_CLASS})"
                ));
            }
            bytes += len * g * GRANULE;
        }
        let counted = self.bytes.load(Relaxed);
        if bytes != counted || bytes > TC_MAX_BYTES {
            return Err(format!("the stacks hold {bytes} bytes, counted {counted} (at most {TC_MAX_BYTES})"));
        }
        Ok(())
    }

    /// Room for more chunks of `g` granules (1..=TC_MAX_GRANULES).
    pub fn room(&self, g: usize) -> usize {
        let by_count = (TC_PER_CLASS - self.counts[g].load(Relaxed)) as usize;
        let by_bytes = TC_MAX_BYTES.saturating_sub(self.bytes.load(Relaxed)) / (g.max(1) * GRANULE);
        by_count.min(by_bytes)
    }

    /// Chunks parked of `g` granules (owner, or a thief holding the slot).
    pub fn count(&self, g: usize) -> usize {
        usize::from(self.counts[g].load(Relaxed))
    }

    /// The granule count whose stack holds the most bytes (0 when every
    /// stack is empty). Owner, or a thief holding the slot.
    pub fn fullest(&self) -> usize {
        let mut best = (0, 0);
        for (g, c) in self.counts.iter().enumerate() {
            let bytes = usize::from(c.load(Relaxed)) * g;
            if bytes > best.1 {
                best = (g, bytes);
            }
        }
        best.0
    }

    /// Bytes cached (a racy read from other threads).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }

    /// Whether a thread has claimed the slot.
    pub fn is_claimed(&self) -> bool {
        self.claimed.load(Acquire)
    }

    /// Calls `f(chunk, granules)` for every parked chunk. The caller has
    /// exclusive use of the stacks (owner, or a thief).
    pub fn for_each(&self, mut f: impl FnMut(*mut u8, usize)) {
        for (g, head) in self.heads.iter().enumerate() {
            let mut c = head.load(Acquire);
            while !c.is_null() {
                f(c, g);
                // SAFETY: as in `pop`.
                c = unsafe { c.cast::<*mut u8>().read() };
            }
        }
    }

    /// Accounts a chunk that leaves the cache to be freed for real: the slot
    /// counted it as free, so its share goes back to "in use" here and the
    /// real free counts it once.
    pub fn unaccount(&self, g: usize) {
        bump(&self.counters.in_use_granules, g as i64);
        bump(&self.counters.frees, -1);
    }

    /// Thief: takes the slot's stacks. Other thieves are waited for; the
    /// owner is not (see the module notes: the caller must call
    /// [`wait_owners`] before touching the stacks).
    pub fn steal_begin(&self) {
        let mut spins = 0u32;
        while self.steal.compare_exchange(false, true, Acquire, Relaxed).is_err() {
            backoff(&mut spins);
        }
    }

    /// Thief: gives the stacks back to their owner.
    pub fn steal_end(&self) {
        self.steal.store(false, Release);
    }

    /// Detaches every stack (a thief holding the slot): returns the heads
    /// and counts, leaving the slot empty. Marks are left in the chunks.
    pub fn take_all(&self) -> [(*mut u8, u16); TC_MAX_GRANULES + 1] {
        let mut out = [(ptr::null_mut(), 0); TC_MAX_GRANULES + 1];
        for (g, o) in out.iter_mut().enumerate() {
            *o = (self.heads[g].swap(ptr::null_mut(), Relaxed), self.counts[g].swap(0, Relaxed));
        }
        self.bytes.store(0, Relaxed);
        out
    }
}

/// Thief: after setting `steal` on the slots it wants, waits until no
/// owner of them is inside a busy section. From then until `steal_end`,
/// those slots' stacks are the thief's.
pub fn wait_owners<'a>(slots: impl Iterator<Item = &'a ThreadSlot>) {
    fence_owners();
    for slot in slots {
        let mut spins = 0u32;
        while slot.busy.load(Acquire) {
            backoff(&mut spins);
        }
    }
}

fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_agrees_with_the_stacks_and_catches_a_wrong_count() {
        let slot = ThreadSlot::default();
        // Four fake chunks of one granule each (32 bytes, 32-aligned).
        #[repr(align(32))]
        struct Granule([u8; 32]);
        let mut mem: Vec<Granule> = (0..4).map(|_| Granule([0; 32])).collect();
        assert!(slot.enter());
        for c in mem.iter_mut() {
            // SAFETY: our own 32-byte blocks, standing in for 1-granule chunks.
            assert!(unsafe { slot.push(c.0.as_mut_ptr(), 1) });
        }
        slot.leave();
        assert_eq!(slot.check(), Ok(()));
        slot.counts[1].store(3, Relaxed);
        assert!(slot.check().unwrap_err().contains("holds 4 chunks, counted 3"));
        slot.counts[1].store(4, Relaxed);
        slot.bytes.store(96, Relaxed);
        assert!(slot.check().unwrap_err().contains("hold 128 bytes, counted 96"));
        slot.bytes.store(128, Relaxed);
        assert_eq!(slot.check(), Ok(()));
    }
}
