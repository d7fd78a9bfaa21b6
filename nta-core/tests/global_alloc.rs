//! `NtaGlobal` as the global allocator of this whole test binary (the test
//! harness included): threads build and drop collections, hand boxes to each
//! other, and exit, which flushes their thread caches.

use std::collections::HashMap;
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: nta_core::NtaGlobal = nta_core::NtaGlobal::new();

#[test]
fn collections_across_threads() {
    // A fresh large chunk has free space behind it: growing it is in place.
    let mut v: Vec<u8> = Vec::with_capacity(100_000);
    v.push(1);
    let before = v.as_ptr();
    assert!(GLOBAL.owns(before), "served by the pool");
    v.reserve_exact(150_000);
    assert_eq!(v.as_ptr(), before, "realloc grew the chunk in place");
    drop(v);

    let (tx, rx) = mpsc::channel::<Box<[u8]>>();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut map: HashMap<String, Vec<u32>> = HashMap::new();
                for i in 0..20_000u32 {
                    map.entry(format!("key-{}", i % 500)).or_default().push(i);
                    if i % 7 == 0 {
                        tx.send(vec![t as u8; (i % 1600) as usize + 1].into_boxed_slice()).unwrap();
                    }
                }
                map.values().map(|v| v.len()).sum::<usize>()
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || {
        let mut n = 0usize;
        for b in rx {
            assert!(b.iter().all(|&x| x == b[0]));
            n += 1;
        }
        n
    });
    let total: usize = producers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 4 * 20_000);
    assert_eq!(consumer.join().unwrap(), 4 * 20_000usize.div_ceil(7));
    // Above 2 MiB: a run in the pool. Over-aligned: the system allocator.
    let big = vec![1u8; 5 << 20];
    assert!(GLOBAL.owns(big.as_ptr()), "a 5 MiB buffer is a run of the pool");
    assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 5 << 20);
    let layout = std::alloc::Layout::from_size_align(100, 8192).unwrap();
    // SAFETY: valid layout; freed with the same layout.
    unsafe {
        let p = std::alloc::alloc(layout);
        assert!(!p.is_null() && p as usize % 8192 == 0);
        assert!(!GLOBAL.owns(p), "over-aligned requests go to the system allocator");
        std::alloc::dealloc(p, layout);
    }
    let st = GLOBAL.stats().expect("the pool was set up");
    assert!(st.allocs > 80_000 && st.frees > 80_000, "the pool served the program: {st:?}");
    assert!(st.runs >= 1);
}
