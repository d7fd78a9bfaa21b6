//! Coalescing: after freeing everything, in any order, each node holds
//! exactly one free extent and `free_bytes == mapped_bytes`.

use nta_core::{GranuleState, HugePages, Pool};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::ptr::NonNull;

#[derive(Clone, Copy, Debug)]
enum Order {
    Forward,
    Reverse,
    Alternating,
    Random,
}

fn fill_then_free(order: Order, sized: bool) {
    let pool =
        Pool::builder().capacity(32 << 20).shards(1).hugepages(HugePages::Off).retain_bytes(64 << 20).build().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC0A1E5CE ^ order as u64);
    let mut chunks: Vec<(NonNull<u8>, usize)> = Vec::new();
    for _ in 0..20_000 {
        let len = match rng.gen_range(0..10) {
            0..=5 => [64, 594, 1518, 40, 1500][rng.gen_range(0..5)],
            6..=8 => rng.gen_range(1..4096),
            _ => rng.gen_range(4096..70_000),
        };
        match pool.alloc(len) {
            Some(p) => chunks.push((p, len)),
            None => break,
        }
    }
    assert!(chunks.len() > 1000);
    pool.validate().unwrap();
    let order_idx: Vec<usize> = match order {
        Order::Forward => (0..chunks.len()).collect(),
        Order::Reverse => (0..chunks.len()).rev().collect(),
        Order::Alternating => (0..chunks.len()).step_by(2).chain((1..chunks.len()).step_by(2)).collect(),
        Order::Random => {
            let mut v: Vec<usize> = (0..chunks.len()).collect();
            v.shuffle(&mut rng);
            v
        }
    };
    for (k, &i) in order_idx.iter().enumerate() {
        let (p, len) = chunks[i];
        // SAFETY: each chunk is live and freed exactly once.
        unsafe {
            if sized {
                pool.free_sized(p, len)
            } else {
                pool.free(p)
            }
        }
        if k % 4096 == 0 {
            pool.validate().unwrap();
        }
    }
    pool.validate().unwrap();
    let st = pool.stats();
    assert_eq!(st.free_bytes, st.mapped_bytes, "{order:?}: quick-cached chunks count as free");
    assert!(st.cached_bytes <= 128 << 10 && st.thread_cached_bytes <= 256 << 10, "cache bounds");
    // Merge what the quick cache deferred.
    pool.collect();
    pool.validate().unwrap();
    let st = pool.stats();
    assert_eq!((st.cached_bytes, st.thread_cached_bytes, st.pending_bytes), (0, 0, 0));
    assert_eq!(st.in_use_bytes, 0);
    assert_eq!(st.free_bytes, st.mapped_bytes, "{order:?}");
    assert_eq!(st.page_nodes, 0);
    let nodes = pool.occupancy();
    assert_eq!(nodes.len() as u64 * nta_core::HUGE_NODE_BYTES as u64, st.mapped_bytes);
    for node in &nodes {
        // One free extent: every granule free, no page node left inside.
        assert!((0..65536).all(|g| node.granule(g) == GranuleState::Free), "node {} not wholly free", node.segment);
        assert!((0..512).all(|p| !node.is_page_node(p)));
    }
    assert_eq!(st.largest_free_bytes, nta_core::HUGE_NODE_BYTES as u64);
}

#[test]
fn free_in_order() {
    fill_then_free(Order::Forward, false);
}

#[test]
fn free_in_reverse() {
    fill_then_free(Order::Reverse, true);
}

#[test]
fn free_alternating() {
    fill_then_free(Order::Alternating, false);
}

#[test]
fn free_random() {
    fill_then_free(Order::Random, true);
}

/// A burst of sized frees of one size, in address order or its reverse:
/// the thread cache hands them back in batches of neighbours, which the
/// shard merges as runs (`free_batch`). Small sizes come from page nodes,
/// so runs meet page-node edges, where neighbours in address are not
/// neighbours in the tree and must not merge. The pool stays valid
/// throughout, and ends with every node one free extent.
#[test]
fn burst_frees_of_one_size_merge_as_runs() {
    for (len, order) in [(16, Order::Forward), (16, Order::Reverse), (64, Order::Forward), (1024, Order::Reverse)] {
        let pool = Pool::builder()
            .capacity(64 << 20)
            .shards(1)
            .hugepages(HugePages::Off)
            .retain_bytes(64 << 20)
            .build()
            .unwrap();
        let chunks: Vec<NonNull<u8>> = (0..40_000).map(|_| pool.alloc(len).unwrap()).collect();
        let before = pool.stats();
        assert!(before.page_nodes > 0 || len > 512, "small chunks come from page nodes: {before:?}");
        let idx: Vec<usize> = if matches!(order, Order::Forward) {
            (0..chunks.len()).collect()
        } else {
            (0..chunks.len()).rev().collect()
        };
        for (k, &i) in idx.iter().enumerate() {
            // SAFETY: each chunk is live and freed once, with its length.
            unsafe { pool.free_sized(chunks[i], len) };
            if k % 5000 == 0 {
                pool.validate().unwrap_or_else(|e| panic!("{len} B {order:?} after {k} frees: {e}"));
            }
        }
        pool.collect();
        pool.validate().unwrap();
        let st = pool.stats();
        assert_eq!((st.in_use_bytes, st.page_nodes), (0, 0), "{len} B {order:?}: {st:?}");
        assert_eq!(st.free_bytes, st.mapped_bytes);
        assert_eq!(st.largest_free_bytes, nta_core::HUGE_NODE_BYTES as u64, "{len} B {order:?}");
        assert_eq!(st.frees, st.allocs, "every free counted once");
    }
}
