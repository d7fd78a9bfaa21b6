//! P6, churn: random alloc, free and shrink, with footprint sampled over time.
//!
//! Each operation is a shrink with probability 1/10 (a random live block to a
//! random smaller length, as when a packet's tail is trimmed); otherwise an
//! allocation with probability `1 - live / (2 · target_live)` and a free of a
//! random live block else, so the live count reverts to `target_live`. Sizes
//! come half from the IMIX and half from the long-tailed distribution.
//!
//! The footprint (the allocator's own held bytes, and resident memory: RSS
//! plus hugetlb pages; both deltas from the start) is sampled
//! [`ChurnParams::samples`] times at even intervals.
//! It must stay flat: the report gives the last sample over the one at a
//! quarter of the run (after warm-up).

use std::ptr::NonNull;
use std::time::Instant;

use super::{nanos, Scale, DEFAULT_SEED};
use crate::mem_stats::Resident;
use crate::peers::{touch, Peer};
use crate::rng::SplitMix64;
use crate::sizes;

/// P6 parameters.
#[derive(Clone, Debug)]
pub struct ChurnParams {
    /// Operations in all.
    pub ops: u64,
    /// Live blocks the churn reverts to.
    pub target_live: usize,
    /// Footprint samples over the run.
    pub samples: u64,
    /// Seed of every choice.
    pub seed: u64,
}

impl ChurnParams {
    /// The parameters at `scale`.
    pub fn at(scale: Scale) -> Self {
        let ops = match scale {
            Scale::Full => 100_000_000,
            Scale::Quick => 20_000_000,
            Scale::Tiny => 20_000,
        };
        Self { ops, target_live: 10_000, samples: 20, seed: DEFAULT_SEED }
    }
}

/// One footprint sample.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChurnSample {
    /// Operations done when sampled.
    pub ops_done: u64,
    /// Requested bytes of live blocks.
    pub live_requested_bytes: u64,
    /// The allocator's own held bytes (delta), if it reports them.
    pub held_bytes: Option<u64>,
    /// Resident delta (RSS + hugetlb), if readable.
    pub resident_bytes: Option<u64>,
}

/// P6 result.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChurnResult {
    /// Operations done.
    pub ops: u64,
    /// Of which allocations, frees and shrinks.
    pub allocs: u64,
    /// Frees.
    pub frees: u64,
    /// Shrinks.
    pub shrinks: u64,
    /// Allocations (or shrinks) that returned `None`.
    pub failed_allocs: u64,
    /// Wall time, sampling included (it is a few dozen reads).
    pub elapsed_ns: u64,
    /// Footprint over time.
    pub samples: Vec<ChurnSample>,
}

impl ChurnResult {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / (self.elapsed_ns.max(1) as f64 / 1e9)
    }

    /// Last sample's footprint over the footprint a quarter of the way in, by
    /// `pick` (the own figure, or the resident one).
    pub fn drift_by(&self, pick: impl Fn(&ChurnSample) -> Option<u64>) -> Option<f64> {
        let reference = pick(self.samples.get(self.samples.len() / 4)?)?;
        let last = pick(self.samples.last()?)?;
        Some(last as f64 / reference.max(1) as f64)
    }

    /// Drift by the own figure where there is one, else by resident memory.
    pub fn drift(&self) -> Option<f64> {
        self.drift_by(|sample| sample.held_bytes.or(sample.resident_bytes))
    }

    /// Largest footprint sample by `pick` over the largest live requested bytes.
    pub fn peak_ratio_by(&self, pick: impl Fn(&ChurnSample) -> Option<u64>) -> Option<f64> {
        let footprint = self.samples.iter().filter_map(pick).max()?;
        let live = self.samples.iter().map(|s| s.live_requested_bytes).max()?;
        Some(footprint as f64 / live.max(1) as f64)
    }

    /// Largest own held bytes over the largest live requested bytes.
    pub fn held_peak_ratio(&self) -> Option<f64> {
        self.peak_ratio_by(|sample| sample.held_bytes)
    }

    /// Largest resident delta over the largest live requested bytes.
    pub fn resident_peak_ratio(&self) -> Option<f64> {
        self.peak_ratio_by(|sample| sample.resident_bytes)
    }
}

/// Runs P6 on `peer`.
pub fn run<P: Peer + ?Sized>(peer: &P, params: &ChurnParams) -> ChurnResult {
    let mut rng = SplitMix64::new(params.seed);
    let mut live: Vec<(NonNull<u8>, usize)> = Vec::with_capacity(params.target_live * 3);
    // Write the whole capacity once, so its pages are resident before the
    // baseline and not counted against the allocator.
    live.resize(live.capacity(), (NonNull::dangling(), 0));
    for entry in live.iter_mut() {
        // SAFETY: entry is a valid, exclusive reference.
        unsafe { std::ptr::write_volatile(entry, (NonNull::dangling(), 0)) };
    }
    live.clear();
    let mut live_requested_bytes = 0u64;
    let (mut allocs, mut frees, mut shrinks, mut failed_allocs) = (0u64, 0u64, 0u64, 0u64);
    let base_held = peer.held_bytes();
    let with_hugetlb = peer.may_map_hugetlb();
    let base_resident = Resident::read(with_hugetlb);
    let sample_every = (params.ops / params.samples.max(1)).max(1);
    let mut samples = Vec::new();
    let double_target = 2 * params.target_live.max(1) as u64;
    let start = Instant::now();
    for op in 0..params.ops {
        if rng.below(10) == 0 && !live.is_empty() {
            let index = rng.below(live.len() as u64) as usize;
            let (ptr, len) = live[index];
            let new_len = rng.range_inclusive(1, len);
            // SAFETY: live[index] is a live block of len bytes.
            match unsafe { peer.resize(ptr, len, new_len) } {
                Some(new_ptr) => {
                    live[index] = (new_ptr, new_len);
                    live_requested_bytes -= (len - new_len) as u64;
                    shrinks += 1;
                }
                None => failed_allocs += 1,
            }
        } else if rng.below(double_target) >= live.len() as u64 {
            let len = if rng.below(2) == 0 { sizes::imix(&mut rng) } else { sizes::long_tail(&mut rng) };
            match peer.alloc(len) {
                Some(ptr) => {
                    // SAFETY: ptr is a fresh block of len bytes.
                    unsafe { touch(ptr, len) };
                    live.push((ptr, len));
                    live_requested_bytes += len as u64;
                    allocs += 1;
                }
                None => failed_allocs += 1,
            }
        } else {
            let index = rng.below(live.len() as u64) as usize;
            let (ptr, len) = live.swap_remove(index);
            // SAFETY: the block was live and is removed from the set, so freed once.
            unsafe { peer.free(ptr, len) };
            live_requested_bytes -= len as u64;
            frees += 1;
        }
        if (op + 1) % sample_every == 0 {
            samples.push(ChurnSample {
                ops_done: op + 1,
                live_requested_bytes,
                held_bytes: base_held.zip(peer.held_bytes()).map(|(base, now)| now.saturating_sub(base)),
                resident_bytes: base_resident
                    .zip(Resident::read(with_hugetlb))
                    .map(|(base, now)| now.since(&base).total_bytes()),
            });
        }
    }
    let elapsed_ns = nanos(start.elapsed());
    for (ptr, len) in live {
        // SAFETY: every remaining block is live and freed once.
        unsafe { peer.free(ptr, len) };
    }
    peer.settle();
    ChurnResult { ops: params.ops, allocs, frees, shrinks, failed_allocs, elapsed_ns, samples }
}
