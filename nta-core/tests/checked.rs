//! Checked mode: a double free, an interior free and a foreign free each
//! panic with the documented message ("nta-core: invalid free of 0x…: …").

use nta_core::{HugePages, Pool};
use std::ptr::NonNull;

fn checked_pool() -> Pool {
    Pool::builder().capacity(8 << 20).shards(2).hugepages(HugePages::Off).checked(true).build().unwrap()
}

#[test]
#[should_panic(expected = "double free (the chunk is already free)")]
fn double_free() {
    let pool = checked_pool();
    pool.bind_current_thread(0);
    let p = pool.alloc(100).unwrap();
    // SAFETY: deliberately invalid second free; checked mode must catch it.
    unsafe {
        pool.free(p);
        pool.free(p);
    }
}

#[test]
#[should_panic(expected = "interior pointer (not the start of a chunk)")]
fn interior_free() {
    let pool = checked_pool();
    let p = pool.alloc(1000).unwrap();
    // SAFETY: deliberately invalid: points 64 bytes into a live chunk.
    unsafe { pool.free(NonNull::new(p.as_ptr().add(64)).unwrap()) };
}

#[test]
#[should_panic(expected = "interior pointer")]
fn unaligned_interior_free() {
    let pool = checked_pool();
    let p = pool.alloc(1000).unwrap();
    // SAFETY: deliberately invalid: not granule aligned.
    unsafe { pool.free(NonNull::new(p.as_ptr().add(3)).unwrap()) };
}

#[test]
#[should_panic(expected = "pointer is not from this pool")]
fn foreign_free() {
    let pool = checked_pool();
    let mut outside = Box::new([0u8; 64]);
    // SAFETY: deliberately invalid: heap memory the pool never made.
    unsafe { pool.free(NonNull::new(outside.as_mut_ptr()).unwrap()) };
}

#[test]
#[should_panic(expected = "pointer is not from this pool")]
fn foreign_free_from_another_pool() {
    let pool = checked_pool();
    let other = checked_pool();
    let p = other.alloc(64).unwrap();
    // SAFETY: deliberately invalid: `p` belongs to `other`.
    unsafe { pool.free(p) };
}

#[test]
#[should_panic(expected = "already queued for a remote free")]
fn double_remote_free() {
    let pool = checked_pool();
    pool.bind_current_thread(0);
    let p = pool.alloc(300).unwrap();
    let addr = p.as_ptr() as usize;
    let pool2 = pool.clone();
    let r = std::thread::spawn(move || {
        pool2.bind_current_thread(1);
        let p = NonNull::new(addr as *mut u8).unwrap();
        // SAFETY: deliberately invalid second free from a foreign shard.
        unsafe {
            pool2.free(p);
            pool2.free(p);
        }
    })
    .join();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

#[test]
#[should_panic(expected = "size mismatch: freed with len 5000")]
fn wrong_size() {
    let pool = checked_pool();
    pool.bind_current_thread(0);
    let p = pool.alloc(100).unwrap();
    // SAFETY: deliberately invalid length.
    unsafe { pool.free_sized(p, 5000) };
}

#[test]
fn message_names_the_pointer() {
    let pool = checked_pool();
    pool.bind_current_thread(0);
    let p = pool.alloc(100).unwrap();
    // SAFETY: valid first free.
    unsafe { pool.free(p) };
    let addr = p.as_ptr() as usize;
    let pool2 = pool.clone();
    let err = std::thread::spawn(move || {
        pool2.bind_current_thread(0);
        // SAFETY: deliberately invalid double free.
        unsafe { pool2.free(NonNull::new(addr as *mut u8).unwrap()) };
    })
    .join()
    .unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert_eq!(
        msg,
        &format!("nta-core: invalid free of {:p}: double free (the chunk is already free)", addr as *const u8)
    );
    // The pool is still usable and consistent after the caught misuse.
    pool.validate().unwrap();
    assert!(pool.alloc(100).is_some());
}

#[test]
fn freed_memory_is_poisoned() {
    let pool = checked_pool();
    pool.bind_current_thread(0);
    let p = pool.alloc(256).unwrap();
    let q = pool.alloc(256).unwrap(); // keeps p from merging into a header-only extent
                                      // SAFETY: fresh chunks; we read p's bytes after the free only to observe
                                      // the poison (the memory stays mapped).
    unsafe {
        p.as_ptr().write_bytes(0x11, 256);
        pool.free(p);
        let tail = std::slice::from_raw_parts(p.as_ptr().add(32), 256 - 64);
        assert!(tail.iter().all(|&b| b == nta_core::checked::POISON));
        pool.free(q);
    }
}
