//! P3, the fill test of seed 002.
//!
//! In a fixed capacity, allocate uniformly random sizes in `1..=max` until an
//! allocation fails; record the utilization; halve `max` and continue, down
//! to [`FillParams::last_max_bytes`]. Nothing is freed. Utilization is live
//! requested bytes over the capacity, so rounding, headers, metadata and
//! fragmentation all count against the allocator.
//!
//! The fragmentation map ([`FragMap`]) is taken at the first failure (the
//! first graph of seed 002) and in the final state.
//!
//! Peers without a cap of their own run under
//! [`CapEmulated`](crate::peers::CapEmulated), which counts usable sizes: it
//! sees size-class rounding but not fragmentation or metadata, and reports
//! mark those rows "emulated".

use std::ptr::NonNull;

use super::{Scale, DEFAULT_SEED};
use crate::frag_map::FragMap;
use crate::peers::Peer;
use crate::rng::SplitMix64;

/// P3 parameters.
#[derive(Clone, Debug)]
pub struct FillParams {
    /// The capacity the peer was built with, in bytes.
    pub capacity_bytes: usize,
    /// Largest request size of the first phase.
    pub start_max_bytes: usize,
    /// Largest request size of the last phase.
    pub last_max_bytes: usize,
    /// Seed of the size sequence.
    pub seed: u64,
}

impl FillParams {
    /// The parameters at `scale` (the capacity is 64 MiB except in `Tiny`).
    pub fn at(scale: Scale) -> Self {
        let capacity_bytes = match scale {
            Scale::Full | Scale::Quick => 64 << 20,
            Scale::Tiny => 4 << 20,
        };
        Self { capacity_bytes, start_max_bytes: 4096, last_max_bytes: 32, seed: DEFAULT_SEED }
    }
}

/// One phase: from the start (or the previous failure) to a failure.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FillPhase {
    /// Largest request size in this phase.
    pub max_request_bytes: usize,
    /// The request that failed.
    pub failed_request_bytes: usize,
    /// Successful allocations in this phase.
    pub allocations: u64,
    /// Requested bytes of all live blocks at the failure.
    pub live_requested_bytes: u64,
    /// `live_requested_bytes / capacity`.
    pub utilization: f64,
}

/// P3 result.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FillResult {
    /// One entry per failure, largest `max` first.
    pub phases: Vec<FillPhase>,
    /// True if the live requested bytes ever exceeded the capacity: the cap
    /// is not enforced, and the run stopped there.
    pub cap_violated: bool,
    /// The fragmentation map at the first failure, if the peer has maps.
    #[serde(skip)]
    pub first_map: Option<FragMap>,
    /// The fragmentation map of the final state, if the peer has maps.
    #[serde(skip)]
    pub final_map: Option<FragMap>,
}

impl FillResult {
    /// The lowest utilization over all failures.
    pub fn min_utilization(&self) -> f64 {
        self.phases.iter().map(|phase| phase.utilization).fold(f64::INFINITY, f64::min)
    }
}

/// Runs P3 on `peer`, which must have been built with
/// `params.capacity_bytes` as its capacity.
pub fn run<P: Peer + ?Sized>(peer: &P, params: &FillParams) -> FillResult {
    let mut rng = SplitMix64::new(params.seed);
    let mut live: Vec<(NonNull<u8>, usize)> = Vec::new();
    let mut live_requested_bytes = 0u64;
    let mut phases = Vec::new();
    let mut max_request_bytes = params.start_max_bytes.max(1);
    let mut allocations = 0u64;
    let mut cap_violated = false;
    let mut first_map = None;
    loop {
        let len = rng.range_inclusive(1, max_request_bytes);
        match peer.alloc(len) {
            Some(ptr) => {
                live.push((ptr, len));
                live_requested_bytes += len as u64;
                allocations += 1;
                if live_requested_bytes > params.capacity_bytes as u64 {
                    cap_violated = true;
                    break;
                }
            }
            None => {
                if phases.is_empty() {
                    first_map = map_of(peer, &live);
                }
                phases.push(FillPhase {
                    max_request_bytes,
                    failed_request_bytes: len,
                    allocations,
                    live_requested_bytes,
                    utilization: live_requested_bytes as f64 / params.capacity_bytes as f64,
                });
                allocations = 0;
                if max_request_bytes / 2 < params.last_max_bytes.max(1) {
                    break;
                }
                max_request_bytes /= 2;
            }
        }
    }
    let final_map = map_of(peer, &live);
    for (ptr, len) in live {
        // SAFETY: every block is live with its length and freed once.
        unsafe { peer.free(ptr, len) };
    }
    peer.settle();
    FillResult { phases, cap_violated, first_map, final_map }
}

/// The map of `live` on `peer`, if the peer has maps.
fn map_of<P: Peer + ?Sized>(peer: &P, live: &[(NonNull<u8>, usize)]) -> Option<FragMap> {
    let blocks: Vec<(usize, usize)> = live.iter().map(|&(ptr, len)| (ptr.as_ptr() as usize, len)).collect();
    let regions = peer.map_regions(&blocks);
    (!regions.is_empty()).then(|| FragMap::build(&regions, |address| peer.owns_page(address), &blocks))
}
