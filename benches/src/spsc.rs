//! A bounded single-producer single-consumer ring, for the cross-thread
//! workload (P5).
//!
//! Layout: `slots[i & mask]` for the monotonically increasing counters `head`
//! (next slot to read, written only by the consumer) and `tail` (next slot to
//! write, written only by the producer). Invariant: `head <= tail <= head +
//! capacity`. The counters sit in separate cache lines so that the two
//! threads do not false-share.
//!
//! Orderings: the producer writes a slot, then publishes it with a Release
//! store of `tail`; the consumer's Acquire load of `tail` makes the slot's
//! contents visible. Symmetrically, the consumer's Release store of `head`
//! after reading a slot lets the producer (Acquire load of `head`) reuse it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// A bounded SPSC queue of `Copy` items.
#[derive(Debug)]
pub struct SpscRing<T: Copy> {
    slots: Box<[UnsafeCell<Option<T>>]>,
    mask: usize,
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
}

// SAFETY: a slot is only accessed by the producer between the consumer's
// release of it (head store) and its publication (tail store), and only by
// the consumer after that; the atomics order those accesses (see module docs).
// T is Copy + Send, so moving values across threads is sound.
unsafe impl<T: Copy + Send> Sync for SpscRing<T> {}

impl<T: Copy> SpscRing<T> {
    /// A ring of `capacity` slots, rounded up to a power of two.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        Self {
            slots: (0..capacity).map(|_| UnsafeCell::new(None)).collect(),
            mask: capacity - 1,
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Pushes `item`, or gives it back when the ring is full. Only one thread
    /// may push.
    #[inline]
    pub fn try_push(&self, item: T) -> Result<(), T> {
        // Relaxed: only this (producer) thread writes tail.
        let tail = self.tail.load(Ordering::Relaxed);
        if tail - self.head.load(Ordering::Acquire) > self.mask {
            return Err(item);
        }
        // SAFETY: the slot is not visible to the consumer until the store of
        // tail below, and the consumer has released it (head > tail - capacity).
        unsafe { *self.slots[tail & self.mask].get() = Some(item) };
        self.tail.store(tail + 1, Ordering::Release);
        Ok(())
    }

    /// Pops the oldest item, if any. Only one thread may pop.
    #[inline]
    pub fn try_pop(&self) -> Option<T> {
        // Relaxed: only this (consumer) thread writes head.
        let head = self.head.load(Ordering::Relaxed);
        if head == self.tail.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: the producer published this slot (tail > head) and will not
        // touch it again until the store of head below.
        let item = unsafe { (*self.slots[head & self.mask].get()).take() };
        self.head.store(head + 1, Ordering::Release);
        item
    }
}

/// Spins (then yields) until `attempt` succeeds; used by both ends of P5 so
/// that a descheduled partner on a 2-core machine does not stall the other.
#[inline]
pub fn spin_until<R>(mut attempt: impl FnMut() -> Option<R>) -> R {
    let mut spins = 0u32;
    loop {
        if let Some(result) = attempt() {
            return result;
        }
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_bounded() {
        let ring = SpscRing::new(4);
        for value in 0..4 {
            ring.try_push(value).unwrap();
        }
        assert_eq!(ring.try_push(9), Err(9));
        assert_eq!(ring.try_pop(), Some(0));
        ring.try_push(4).unwrap();
        let drained: Vec<i32> = std::iter::from_fn(|| ring.try_pop()).collect();
        assert_eq!(drained, vec![1, 2, 3, 4]);
    }

    #[test]
    fn across_threads_every_item_arrives_once_in_order() {
        let ring = SpscRing::new(8);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for value in 0..10_000u32 {
                    spin_until(|| ring.try_push(value).ok());
                }
            });
            for expected in 0..10_000u32 {
                assert_eq!(spin_until(|| ring.try_pop()), expected);
            }
        });
    }
}
