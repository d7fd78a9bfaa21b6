//! P2, footprint: the packet mix with 100k live buffers.
//!
//! The figure is peak held bytes over peak live requested bytes, so 1.0 is a
//! perfect allocator and the mempool sits near 6 (2176-byte elements for a
//! 362-byte mean request). Held bytes come two ways, both as deltas from just
//! before the run, sampled every [`FootprintParams::sample_every`] pairs:
//! - the allocator's own figure ([`Peer::held_bytes`]);
//! - the process's resident memory: RSS (`/proc/self/statm`), which only
//!   sees pages actually touched, plus hugetlb pages, which RSS leaves out
//!   (read only for a peer that may map them). The benchmark's own slot
//!   vector is allocated and written before the baseline, so it is not in
//!   the delta.

use super::packet_mix::SlidingWindow;
use super::{Scale, DEFAULT_SEED};
use crate::mem_stats::Resident;
use crate::peers::Peer;

/// P2 parameters.
#[derive(Clone, Debug)]
pub struct FootprintParams {
    /// Live buffers in the window.
    pub window: usize,
    /// Alloc+free pairs after the window is full.
    pub pairs: u64,
    /// Pairs between two samples of the footprint.
    pub sample_every: u64,
    /// Seed of the size sequence.
    pub seed: u64,
}

impl FootprintParams {
    /// The parameters at `scale`.
    pub fn at(scale: Scale) -> Self {
        let (window, pairs) = match scale {
            Scale::Full => (100_000, 10_000_000),
            Scale::Quick => (100_000, 3_000_000),
            Scale::Tiny => (2_000, 10_000),
        };
        Self { window, pairs, sample_every: 4096, seed: DEFAULT_SEED }
    }
}

/// P2 result.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FootprintResult {
    /// Peak requested bytes of live buffers.
    pub peak_live_requested_bytes: u64,
    /// Peak of the allocator's own held bytes (delta), if it reports them.
    pub peak_held_bytes: Option<u64>,
    /// Whether the own figure is specific to the allocator.
    pub held_is_exact: bool,
    /// Peak resident delta (RSS + hugetlb), if readable.
    pub peak_resident_bytes: Option<u64>,
    /// The hugetlb part of the peak resident delta.
    pub peak_hugetlb_bytes: Option<u64>,
    /// Allocations that returned `None`.
    pub failed_allocs: u64,
}

impl FootprintResult {
    /// Peak held over peak live requested, by the allocator's own figure.
    pub fn held_ratio(&self) -> Option<f64> {
        self.peak_held_bytes.map(|held| held as f64 / self.peak_live_requested_bytes.max(1) as f64)
    }

    /// Peak resident delta over peak live requested.
    pub fn resident_ratio(&self) -> Option<f64> {
        self.peak_resident_bytes.map(|bytes| bytes as f64 / self.peak_live_requested_bytes.max(1) as f64)
    }
}

struct Sampler {
    base_held: Option<u64>,
    base_resident: Option<Resident>,
    with_hugetlb: bool,
    peak_held: Option<u64>,
    /// Peak of the total resident delta, and its parts at that peak.
    peak_resident: Option<Resident>,
}

impl Sampler {
    fn new<P: Peer + ?Sized>(peer: &P) -> Self {
        let with_hugetlb = peer.may_map_hugetlb();
        Self {
            base_held: peer.held_bytes(),
            base_resident: Resident::read(with_hugetlb),
            with_hugetlb,
            peak_held: None,
            peak_resident: None,
        }
    }

    fn sample<P: Peer + ?Sized>(&mut self, peer: &P) {
        if let (Some(base), Some(now)) = (self.base_held, peer.held_bytes()) {
            let delta = now.saturating_sub(base);
            self.peak_held = Some(self.peak_held.map_or(delta, |peak| peak.max(delta)));
        }
        if let (Some(base), Some(now)) = (self.base_resident, Resident::read(self.with_hugetlb)) {
            let delta = now.since(&base);
            if self.peak_resident.map_or(true, |peak| delta.total_bytes() > peak.total_bytes()) {
                self.peak_resident = Some(delta);
            }
        }
    }
}

/// Runs P2 on `peer`.
pub fn run<P: Peer + ?Sized>(peer: &P, params: &FootprintParams) -> FootprintResult {
    // The slot vector is allocated before the baseline, so it is not counted
    // in the allocator's own figure (it is in glibc's arena, which is why
    // glibc's own figure is marked inexact).
    let mut window = SlidingWindow::new(params.window, params.seed);
    let mut sampler = Sampler::new(peer);
    let sample_every = params.sample_every.max(1);
    for step in 0..params.window as u64 {
        window.step(peer);
        if step % sample_every == 0 {
            sampler.sample(peer);
        }
    }
    for pair in 0..params.pairs {
        window.step(peer);
        if pair % sample_every == 0 {
            sampler.sample(peer);
        }
    }
    sampler.sample(peer);
    window.drain(peer);
    peer.settle();
    FootprintResult {
        peak_live_requested_bytes: window.peak_live_requested_bytes,
        peak_held_bytes: sampler.peak_held,
        held_is_exact: peer.held_bytes_is_exact(),
        peak_resident_bytes: sampler.peak_resident.map(|r| r.total_bytes()),
        peak_hugetlb_bytes: sampler.peak_resident.map(|r| r.hugetlb_bytes),
        failed_allocs: window.failed_allocs,
    }
}
