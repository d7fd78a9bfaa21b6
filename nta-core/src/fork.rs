//! `fork()`: what a child process may do with the pools it inherits.
//!
//! # Private pools (`exportable(false)`, and `NtaGlobal`)
//!
//! Their memory is private, so the child gets its own copy, as with glibc
//! or jemalloc. What must not be copied is a lock held by a thread that
//! does not exist in the child. So, as glibc and jemalloc do, the `prepare`
//! handler takes every lock of every private pool (each shard, then the
//! segment table; the same order every other path uses) and takes every
//! thread slot over (so no thread is halfway through its cache), and the
//! `parent` and `child` handlers release them. The child then allocates
//! and frees normally. Chunks parked in the caches of the parent's other threads are
//! not reachable in the child and stay allocated there (a bounded leak of
//! at most 256 KiB per such thread and pool).
//!
//! # Exportable pools (the default)
//!
//! Their segments are `MAP_SHARED` memfd mappings while their metadata is
//! private: after a fork, parent and child would carve the same physical
//! chunks out of two diverging copies of the metadata, and hand one buffer
//! to two owners. So the `child` handler *freezes* them: in the child,
//! `alloc` returns `None`, frees and resizes do nothing (the memory stays
//! the parent's, and the parent still owns every chunk), and the child's
//! thread-cache entries for them are forgotten without a flush. To use a
//! pool in a child, build a new one there.
//!
//! # Registry
//!
//! Pools built by `PoolBuilder` register in an intrusive list here (under
//! a futex lock that the fork handlers hold across the fork) and leave it
//! when dropped. `NtaGlobal`'s pool is reached through its own static.

use crate::inner::PoolInner;
use crate::lock::FutexLock;
use crate::sys;
use crate::thread_cache;
use std::ptr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Once;

struct List {
    head: *mut PoolInner,
}

// SAFETY: the pointers designate registered pools, which unregister before
// they are freed; the list is only used under the lock.
unsafe impl Send for List {}

static REGISTRY: FutexLock<List> = FutexLock::new(List { head: ptr::null_mut() });
static INSTALL: Once = Once::new();

/// Installs the fork handlers (once per process).
pub(crate) fn install_handlers() {
    INSTALL.call_once(|| {
        // Without the handlers a fork can copy a held lock; report nothing
        // here (there is no one to report to), the pools still work.
        let _ = sys::register_atfork(prepare, parent, child);
    });
}

/// Adds a pool that lives at a fixed address (inside an `Arc`).
pub(crate) fn register(pool: &PoolInner) {
    let p = pool as *const PoolInner as *mut PoolInner;
    let mut list = REGISTRY.lock();
    pool.registry_prev.store(ptr::null_mut(), Relaxed);
    pool.registry_next.store(list.head, Relaxed);
    if !list.head.is_null() {
        // SAFETY: registered pools are alive (they unregister in drop).
        unsafe { (*list.head).registry_prev.store(p, Relaxed) };
    }
    list.head = p;
}

/// Removes a registered pool (from its drop).
pub(crate) fn unregister(pool: &PoolInner) {
    let p = pool as *const PoolInner as *mut PoolInner;
    let mut list = REGISTRY.lock();
    let (prev, next) = (pool.registry_prev.load(Relaxed), pool.registry_next.load(Relaxed));
    if prev.is_null() {
        if list.head != p {
            return; // never registered
        }
        list.head = next;
    } else {
        // SAFETY: registered neighbours are alive.
        unsafe { (*prev).registry_next.store(next, Relaxed) };
    }
    if !next.is_null() {
        // SAFETY: as above.
        unsafe { (*next).registry_prev.store(prev, Relaxed) };
    }
}

/// Calls `f` on every registered pool; the registry lock must be held.
///
/// # Safety
/// The caller holds the registry lock (a guard or `lock_raw`).
unsafe fn each(head: *mut PoolInner, mut f: impl FnMut(&PoolInner)) {
    let mut p = head;
    while !p.is_null() {
        // SAFETY: registered pools are alive while the lock is held.
        let pool = unsafe { &*p };
        f(pool);
        p = pool.registry_next.load(Relaxed);
    }
}

/// The registry's head.
///
/// # Safety
/// This thread holds the registry lock through `lock_raw` (the fork
/// handlers run on the thread whose `prepare` took it).
unsafe fn head_locked() -> *mut PoolInner {
    // SAFETY: per the caller.
    unsafe { REGISTRY.get_unguarded().head }
}

extern "C" fn prepare() {
    REGISTRY.lock_raw();
    // SAFETY: the registry lock is held (just taken).
    unsafe {
        each(head_locked(), |p| {
            if !p.is_exportable() {
                p.lock_for_fork();
            }
        })
    };
    // The global pool last: other pools' code may allocate from it while
    // holding their own locks, never the other way round.
    if let Some(g) = crate::global::global_pool() {
        g.lock_for_fork();
    }
}

extern "C" fn parent() {
    // SAFETY: `prepare` took exactly these locks on this thread.
    unsafe {
        if let Some(g) = crate::global::global_pool() {
            g.unlock_for_fork();
        }
        each(head_locked(), |p| {
            if !p.is_exportable() {
                p.unlock_for_fork();
            }
        });
        REGISTRY.unlock_raw();
    }
}

extern "C" fn child() {
    // SAFETY: `prepare` took exactly these locks on the thread that called
    // fork, which is this thread in the child.
    unsafe {
        if let Some(g) = crate::global::global_pool() {
            g.unlock_for_fork();
        }
        let head = head_locked();
        each(head, |p| {
            if p.is_exportable() {
                p.freeze();
            } else {
                p.unlock_for_fork();
            }
        });
        thread_cache::forget_entries(|key| {
            let mut frozen = false;
            each(head, |p| frozen |= ptr::eq(p, key) && p.is_frozen());
            frozen
        });
        REGISTRY.unlock_raw();
    }
}
