//! P4, the table of seed 001: 1M objects of one size, freed in an order.
//!
//! For each size (4, 16, 64, 256, 1024 B) and each order (in order;
//! alternately, even indices then odd; reversed), allocate all objects
//! (timed), then free them in that order (timed). The objects are not
//! written, as in the seed's kernel benchmark.
//!
//! Each cell is preceded by one untimed pass of the same cell, so the figures
//! are steady state: an allocator that keeps its memory does not pay the
//! first-touch page faults in the timed pass, and one that returns memory to
//! the OS when it is freed (NTA above its `retain_bytes`) pays them again.

use std::ptr::NonNull;
use std::time::Instant;

use super::{nanos, Scale};
use crate::peers::Peer;

/// The object sizes of the table, in bytes.
pub const OBJECT_SIZES: [usize; 5] = [4, 16, 64, 256, 1024];

/// The order in which the objects are freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FreeOrder {
    /// Index 0, 1, 2, ...
    InOrder,
    /// Even indices, then odd ones.
    Alternate,
    /// Last index first.
    Reverse,
}

impl FreeOrder {
    /// Every order, in the table's order.
    pub const ALL: [FreeOrder; 3] = [FreeOrder::InOrder, FreeOrder::Alternate, FreeOrder::Reverse];

    /// The order's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FreeOrder::InOrder => "in order",
            FreeOrder::Alternate => "alternate",
            FreeOrder::Reverse => "reverse",
        }
    }

    /// The index freed at step `step` of `count`.
    #[inline]
    pub fn index(self, step: usize, count: usize) -> usize {
        match self {
            FreeOrder::InOrder => step,
            FreeOrder::Reverse => count - 1 - step,
            FreeOrder::Alternate => {
                let evens = count.div_ceil(2);
                if step < evens {
                    2 * step
                } else {
                    2 * (step - evens) + 1
                }
            }
        }
    }
}

/// P4 parameters.
#[derive(Clone, Debug)]
pub struct FreeOrderParams {
    /// Objects per cell.
    pub objects: usize,
}

impl FreeOrderParams {
    /// The parameters at `scale`.
    pub fn at(scale: Scale) -> Self {
        let objects = match scale {
            Scale::Full | Scale::Quick => 1 << 20,
            Scale::Tiny => 1000,
        };
        Self { objects }
    }
}

/// One cell of the table.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FreeOrderCell {
    /// Object size in bytes.
    pub object_bytes: usize,
    /// Free order.
    pub order: FreeOrder,
    /// Objects allocated.
    pub objects: usize,
    /// Time to allocate all objects.
    pub alloc_ns: u64,
    /// Time to free them.
    pub free_ns: u64,
    /// Allocations that returned `None` (not freed, not retried).
    pub failed_allocs: u64,
}

/// Measures one cell.
pub fn run_cell<P: Peer + ?Sized>(peer: &P, object_bytes: usize, order: FreeOrder, objects: usize) -> FreeOrderCell {
    let mut blocks: Vec<Option<NonNull<u8>>> = Vec::with_capacity(objects);
    let start = Instant::now();
    for _ in 0..objects {
        blocks.push(peer.alloc(object_bytes));
    }
    let alloc_ns = nanos(start.elapsed());
    let failed_allocs = blocks.iter().filter(|block| block.is_none()).count() as u64;
    let start = Instant::now();
    for step in 0..objects {
        if let Some(ptr) = blocks[order.index(step, objects)] {
            // SAFETY: each index is visited once, and its block is live.
            unsafe { peer.free(ptr, object_bytes) };
        }
    }
    let free_ns = nanos(start.elapsed());
    peer.settle();
    FreeOrderCell { object_bytes, order, objects, alloc_ns, free_ns, failed_allocs }
}

/// Runs the whole table on `peer`: sizes outer, orders inner, each cell
/// after an untimed pass of itself (see the module docs).
pub fn run<P: Peer + ?Sized>(peer: &P, params: &FreeOrderParams) -> Vec<FreeOrderCell> {
    let mut cells = Vec::new();
    for object_bytes in OBJECT_SIZES {
        for order in FreeOrder::ALL {
            run_cell(peer, object_bytes, order, params.objects);
            cells.push(run_cell(peer, object_bytes, order, params.objects));
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_order_is_a_permutation() {
        for count in [1, 2, 7, 10] {
            for order in FreeOrder::ALL {
                let mut seen: Vec<usize> = (0..count).map(|step| order.index(step, count)).collect();
                seen.sort_unstable();
                assert_eq!(seen, (0..count).collect::<Vec<_>>(), "{order:?} {count}");
            }
        }
        assert_eq!(FreeOrder::Alternate.index(1, 5), 2);
        assert_eq!(FreeOrder::Alternate.index(3, 5), 1);
    }
}
