//! Atomics and plain-memory cells used by the lock-free protocols,
//! swappable for loom's.
//!
//! `remote.rs` imports its atomics and its chunk-word accessors from
//! `crate::sync`. The loom model in `tests/loom_remote.rs` compiles the same
//! file with a `sync` module that re-exports `loom::sync` and implements
//! [`cell_write`] and [`cell_read`] on `loom::cell::UnsafeCell`s, so the
//! exact code that ships is model-checked, the link words included.
//! [`prefetch`], a cache hint for the free paths, lives here too (remote.rs
//! does not use it, so the loom stand-in needs none).

pub use std::sync::atomic;

/// Writes plain memory that another thread reads after a synchronising
/// atomic operation.
///
/// # Safety
/// `at` must be valid for writes, aligned, and not accessed concurrently.
#[inline]
pub unsafe fn cell_write<T>(at: *mut T, value: T) {
    // SAFETY: per the caller.
    unsafe { at.write(value) }
}

/// Reads memory written with [`cell_write`].
///
/// # Safety
/// `at` must be valid for reads, aligned, initialised, and not written
/// concurrently.
#[inline]
pub unsafe fn cell_read<T: Copy>(at: *const T) -> T {
    // SAFETY: per the caller.
    unsafe { at.read() }
}

/// Asks the CPU to start loading the cache line at `p` (a hint: never
/// faults, whatever `p` is; nothing on other architectures).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint and never faults, even on a null or
    // unmapped address; SSE is part of x86_64's baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
