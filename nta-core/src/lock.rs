//! A futex mutex for the cold paths: the segment table and the pool registry.
//!
//! # Why not `std::sync::Mutex` or `parking_lot`
//!
//! - It must never allocate: nta-core can be the global allocator, and a
//!   `parking_lot` lock under contention allocates its parking table.
//! - It must be held across `fork()`: the fork handlers (see `fork`) take
//!   it in `prepare` and release it in `parent` and `child`, which a guard
//!   object cannot express. [`FutexLock::lock_raw`] and
//!   [`FutexLock::unlock_raw`] can.
//!
//! # Protocol (Drepper, "Futexes Are Tricky", mutex 2)
//!
//! `state`: 0 unlocked, 1 locked, 2 locked with waiters. Lock: CAS 0 -> 1;
//! on failure swap in 2 and sleep while the word is 2. Unlock: swap in 0;
//! if it was 2, wake one sleeper. `Acquire` on taking and `Release` on
//! leaving order the protected data.
//!
//! A panic while a guard is held releases the lock on unwind (no
//! poisoning: every user keeps its data consistent between field writes).

use crate::sys;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering::*};

/// A mutex around `T`, futex based, allocation-free.
pub struct FutexLock<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `state`, as in std's Mutex.
unsafe impl<T: Send> Sync for FutexLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for FutexLock<T> {}

impl<T> std::fmt::Debug for FutexLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FutexLock").field("state", &self.state.load(Relaxed)).finish_non_exhaustive()
    }
}

/// Exclusive access to the value; unlocks on drop.
pub struct FutexGuard<'a, T> {
    lock: &'a FutexLock<T>,
}

impl<T> FutexLock<T> {
    pub const fn new(value: T) -> Self {
        FutexLock { state: AtomicU32::new(0), value: UnsafeCell::new(value) }
    }

    /// Takes the lock, sleeping while another thread holds it.
    pub fn lock(&self) -> FutexGuard<'_, T> {
        self.lock_raw();
        FutexGuard { lock: self }
    }

    /// Takes the lock without a guard (fork handlers). Pair with
    /// [`FutexLock::unlock_raw`].
    pub fn lock_raw(&self) {
        if self.state.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
            return;
        }
        self.lock_contended();
    }

    #[cold]
    fn lock_contended(&self) {
        while self.state.swap(2, Acquire) != 0 {
            sys::futex_wait(&self.state, 2);
        }
    }

    /// The value, without a guard.
    ///
    /// # Safety
    /// The calling thread holds the lock through [`FutexLock::lock_raw`],
    /// and no other reference to the value exists.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_unguarded(&self) -> &mut T {
        // SAFETY: per the caller, access is exclusive.
        unsafe { &mut *self.value.get() }
    }

    /// Releases a lock taken with [`FutexLock::lock_raw`].
    ///
    /// # Safety
    /// The lock must be held, by a `lock_raw` of this thread (or, in a
    /// forked child, of the thread that called `fork`), and no guard may
    /// exist for it.
    pub unsafe fn unlock_raw(&self) {
        if self.state.swap(0, Release) == 2 {
            sys::futex_wake_one(&self.state);
        }
    }
}

impl<T> std::ops::Deref for FutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> std::ops::DerefMut for FutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for FutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard took the lock and no other guard exists.
        unsafe { self.lock.unlock_raw() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_under_contention() {
        let lock = Arc::new(FutexLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 80_000);
    }
}
