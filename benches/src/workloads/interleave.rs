//! Several allocators timed in one process, their work interleaved by
//! blocks: the comparison that a shared host cannot skew.
//!
//! On this machine, separate processes of one allocator differ by up to
//! 1.9x from run to run (the host's other tenants come and go over
//! seconds), more than the allocators differ from each other. Blocks of a
//! few milliseconds taken in turn meet the same host, so their ratio holds
//! where the separate runs' medians flip.
//!
//! Each allocator is a [`Lane`] with its own workload state (the same seed,
//! so the same sizes and choices). [`run`] advances every lane by a
//! warm-up first, then runs `rounds` rounds of one block per lane, the
//! order rotated by one lane per round, and times each block.
//!
//! The given peer (NTA in the suite) is lane 0; the others are glibc,
//! jemalloc and mimalloc (`crate::peers`).

use std::time::Instant;

use super::nanos;

/// One allocator with its own workload state.
pub trait Lane {
    /// The allocator's name (`Peer::name`).
    fn name(&self) -> &'static str;
    /// Runs `steps` steps of the workload. Implementations are generic over
    /// the peer and out of line, so each peer's loop is compiled as in a
    /// run of its own (its fast paths inlined into it).
    fn block(&mut self, steps: u64);
    /// Frees what is live; returns the allocations that failed.
    fn finish(&mut self) -> u64;
}

/// The interleaved mode's result: one lane per allocator.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Interleaved {
    /// Steps per block (alloc+free pairs in P1, operations in P6).
    pub block: u64,
    /// Blocks each lane ran.
    pub rounds: u64,
    /// The lanes, the given peer first.
    pub lanes: Vec<LaneResult>,
}

/// One allocator's share of an interleaved run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LaneResult {
    /// The peer's name (`Peer::name`).
    pub alloc: String,
    /// Timed steps.
    pub steps: u64,
    /// Nanoseconds in its timed blocks.
    pub ns: u64,
    /// Allocations that returned `None`, the warm-up's included.
    pub failed_allocs: u64,
}

impl LaneResult {
    /// Nanoseconds per step.
    pub fn ns_per_step(&self) -> f64 {
        self.ns as f64 / self.steps.max(1) as f64
    }

    /// Steps per second.
    pub fn steps_per_sec(&self) -> f64 {
        self.steps as f64 * 1e9 / self.ns.max(1) as f64
    }
}

impl Interleaved {
    /// The lane of allocator `name`.
    pub fn lane(&self, name: &str) -> Option<&LaneResult> {
        self.lanes.iter().find(|l| l.alloc == name)
    }

    /// The time ratio of lane `a` over lane `b` (below 1: `a` faster).
    pub fn time_ratio(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.lane(a)?, self.lane(b)?);
        Some(a.ns_per_step() / b.ns_per_step())
    }
}

/// Runs `lanes`: `warmup` untimed steps each, then `steps` rounded down to
/// whole blocks of at most `block` (at least one block) per lane, in turn.
pub fn run(lanes: &mut [&mut dyn Lane], steps: u64, block: u64, warmup: u64) -> Interleaved {
    let block = steps.clamp(1, block.max(1));
    let rounds = (steps / block).max(1);
    for lane in lanes.iter_mut() {
        lane.block(warmup);
    }
    let mut ns = vec![0u64; lanes.len()];
    for round in 0..rounds as usize {
        for k in 0..lanes.len() {
            let i = (round + k) % lanes.len();
            let start = Instant::now();
            lanes[i].block(block);
            ns[i] += nanos(start.elapsed());
        }
    }
    let lanes = lanes
        .iter_mut()
        .zip(ns)
        .map(|(lane, ns)| {
            let failed_allocs = lane.finish();
            LaneResult { alloc: lane.name().to_string(), steps: rounds * block, ns, failed_allocs }
        })
        .collect();
    Interleaved { block, rounds, lanes }
}
