//! `Pool::handle` and `Pool::leak`: a buffer's handle keeps its pool alive
//! like a clone; a leaked pool's handles are uncounted and stay valid.

use nta_core::{HugePages, Pool, PoolHandle};

fn pool() -> Pool {
    Pool::builder().capacity(8 << 20).shards(2).hugepages(HugePages::Off).build().unwrap()
}

fn use_pool(pool: &Pool) {
    let c = pool.alloc(594).unwrap();
    // SAFETY: a live chunk of 594 bytes.
    unsafe {
        c.as_ptr().write_bytes(0x5a, 594);
        pool.free_sized(c, 594);
    }
    pool.validate().unwrap();
}

#[test]
fn a_handle_keeps_the_pool_alive_after_every_pool_handle_drops() {
    let p = pool();
    assert!(!p.is_leaked());
    let h = p.handle();
    assert!(h.is_counted());
    let c = h.alloc(1500).unwrap();
    drop(p);
    // SAFETY: `c` is a live chunk of the pool `h` keeps alive.
    unsafe { h.free_sized(c, 1500) };
    use_pool(&h);
    let h2 = h.clone();
    drop(h);
    assert!(h2.is_counted());
    use_pool(&h2);
}

#[test]
fn a_leaked_pool_hands_out_uncounted_handles_that_stay_valid() {
    let p: &'static Pool = pool().leak();
    assert!(p.is_leaked());
    assert!(format!("{p:?}").contains("leaked: leaked"), "Debug says so, without printing the pool twice");
    // Every handle of it, from the leaked one or from a clone, is uncounted.
    let clone = p.clone();
    assert!(clone.is_leaked());
    let handles: Vec<PoolHandle> = (0..10_000).map(|i| if i % 2 == 0 { p.handle() } else { clone.handle() }).collect();
    assert!(handles.iter().all(|h| !h.is_counted()));
    let copies: Vec<PoolHandle> = handles.iter().map(PoolHandle::clone).collect();
    assert!(copies.iter().all(|h| !h.is_counted()));
    // Dropping far more uncounted handles than the pool has counted ones
    // leaves it alive and whole.
    drop(handles);
    drop(copies);
    drop(clone);
    use_pool(p);
    // A handle may move to another thread and free there.
    let h = p.handle();
    let c = h.alloc(64).unwrap().as_ptr() as usize;
    std::thread::spawn(move || {
        // SAFETY: a live 64-byte chunk of the leaked pool, freed once.
        unsafe { h.free_sized(std::ptr::NonNull::new(c as *mut u8).unwrap(), 64) };
    })
    .join()
    .unwrap();
    p.collect();
    assert_eq!(p.stats().in_use_bytes, 0);
    p.validate().unwrap();
}

#[test]
fn a_counted_handle_dropped_after_the_leak_leaves_the_pool_alive() {
    let p = pool();
    let before = p.handle();
    assert!(before.is_counted());
    let leaked = p.leak();
    assert!(!before.is_counted(), "no handle decrements once the pool is leaked");
    drop(before);
    use_pool(leaked);
    let h = leaked.handle();
    drop(h);
    use_pool(leaked);
}
