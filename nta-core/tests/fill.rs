//! The seed-002 fill test: allocate random sizes up to 4 KiB until an
//! allocation fails, then halve the maximum size and continue. Utilization
//! (live requested bytes / mapped bytes) must be at least 0.95 at every
//! failure.

use nta_core::{HugePages, Pool};
use rand::{Rng, SeedableRng};

fn fill(seed: u64, hugepages: HugePages) -> Vec<(usize, usize, f64)> {
    let pool = Pool::builder().capacity(64 << 20).shards(1).hugepages(hugepages).build().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut live_requested = 0usize;
    let mut live_granules = 0usize;
    let mut failures = Vec::new();
    let mut max = 4096;
    let mut kept = Vec::new();
    while max >= 32 {
        let len = rng.gen_range(1..=max);
        match pool.alloc(len) {
            Some(p) => {
                live_requested += len;
                live_granules += len.div_ceil(32);
                kept.push(p);
            }
            None => {
                let st = pool.stats();
                assert_eq!(st.in_use_bytes as usize, live_granules * 32);
                assert_eq!(st.mapped_bytes, 64 << 20, "the whole capacity is mapped at the first failure");
                failures.push((max, len, live_requested as f64 / st.mapped_bytes as f64));
                max /= 2;
            }
        }
    }
    pool.validate().unwrap();
    failures
}

#[test]
fn utilization_at_every_failure_is_at_least_95_percent() {
    for seed in [1u64, 2, 3, 0x5EED_0002] {
        for hp in [HugePages::Off, HugePages::Try] {
            let failures = fill(seed, hp);
            assert_eq!(failures.len(), 8, "one failure per maximum from 4096 down to 32");
            for (max, len, util) in failures {
                println!("seed {seed} {hp:?}: max {max:>4} failed at {len:>4} B, utilization {util:.4}");
                assert!(util >= 0.95, "seed {seed}: utilization {util:.4} at max {max} (failed request {len} B)");
            }
        }
    }
}
