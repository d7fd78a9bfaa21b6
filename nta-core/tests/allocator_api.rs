//! `allocator_api2::Allocator` for `Pool`: collections in the pool.

use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;
use nta_core::{HugePages, Pool};

#[test]
fn vec_in_pool_grows_and_returns_memory() {
    let pool = Pool::builder().capacity(16 << 20).shards(1).hugepages(HugePages::Off).build().unwrap();
    {
        let mut v: AVec<u8, &Pool> = AVec::new_in(&pool);
        for i in 0..100_000u32 {
            v.push(i as u8);
        }
        assert!(pool.contains(v.as_ptr()));
        assert_eq!(v.iter().map(|&b| b as u64).sum::<u64>(), (0..100_000u64).map(|i| i % 256).sum());
        v.truncate(10);
        v.shrink_to_fit();
        assert!(pool.stats().in_use_bytes <= 64);
        let b = ABox::new_in([7u64; 300], pool.clone());
        assert!(pool.contains(b.as_ptr().cast()));
        pool.validate().unwrap();
    }
    pool.validate().unwrap();
    assert_eq!(pool.stats().in_use_bytes, 0);
}
