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
//!
//! With [`ChurnParams::interleave`], the throughput of the given peer (NTA
//! in the suite), glibc, jemalloc and mimalloc is timed in one process
//! instead, their operations interleaved by blocks ([`run_interleaved`];
//! see [`interleave`] for why).

use std::ptr::NonNull;
use std::time::Instant;

use super::interleave::{self, Interleaved, Lane};
use super::{nanos, Scale, DEFAULT_SEED};
use crate::mem_stats::Resident;
use crate::peers::{touch, JemallocPeer, MimallocPeer, Peer, SystemPeer};
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
    /// Time NTA, glibc, jemalloc and mimalloc in one process, interleaved
    /// by blocks, instead of sampling one peer's footprint
    /// ([`run_interleaved`]).
    pub interleave: bool,
}

impl ChurnParams {
    /// The parameters at `scale`.
    pub fn at(scale: Scale) -> Self {
        let ops = match scale {
            Scale::Full => 100_000_000,
            Scale::Quick => 20_000_000,
            Scale::Tiny => 20_000,
        };
        Self { ops, target_live: 10_000, samples: 20, seed: DEFAULT_SEED, interleave: false }
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
    /// The interleaved mode's lanes (the fields above are then the given
    /// peer's lane, and there are no samples).
    #[serde(default)]
    pub interleaved: Option<Interleaved>,
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

/// One run's live set, choices and counts.
struct Churn {
    rng: SplitMix64,
    live: Vec<(NonNull<u8>, usize)>,
    live_requested_bytes: u64,
    allocs: u64,
    frees: u64,
    shrinks: u64,
    failed_allocs: u64,
    double_target: u64,
}

impl Churn {
    fn new(params: &ChurnParams) -> Self {
        let mut live: Vec<(NonNull<u8>, usize)> = Vec::with_capacity(params.target_live * 3);
        // Write the whole capacity once, so its pages are resident before the
        // baseline and not counted against the allocator.
        live.resize(live.capacity(), (NonNull::dangling(), 0));
        for entry in live.iter_mut() {
            // SAFETY: entry is a valid, exclusive reference.
            unsafe { std::ptr::write_volatile(entry, (NonNull::dangling(), 0)) };
        }
        live.clear();
        Churn {
            rng: SplitMix64::new(params.seed),
            live,
            live_requested_bytes: 0,
            allocs: 0,
            frees: 0,
            shrinks: 0,
            failed_allocs: 0,
            double_target: 2 * params.target_live.max(1) as u64,
        }
    }

    /// One operation: a shrink, an allocation or a free (module notes).
    #[inline]
    fn step<P: Peer + ?Sized>(&mut self, peer: &P) {
        let rng = &mut self.rng;
        if rng.below(10) == 0 && !self.live.is_empty() {
            let index = rng.below(self.live.len() as u64) as usize;
            let (ptr, len) = self.live[index];
            let new_len = rng.range_inclusive(1, len);
            // SAFETY: live[index] is a live block of len bytes.
            match unsafe { peer.resize(ptr, len, new_len) } {
                Some(new_ptr) => {
                    self.live[index] = (new_ptr, new_len);
                    self.live_requested_bytes -= (len - new_len) as u64;
                    self.shrinks += 1;
                }
                None => self.failed_allocs += 1,
            }
        } else if rng.below(self.double_target) >= self.live.len() as u64 {
            let len = if rng.below(2) == 0 { sizes::imix(rng) } else { sizes::long_tail(rng) };
            match peer.alloc(len) {
                Some(ptr) => {
                    // SAFETY: ptr is a fresh block of len bytes.
                    unsafe { touch(ptr, len) };
                    self.live.push((ptr, len));
                    self.live_requested_bytes += len as u64;
                    self.allocs += 1;
                }
                None => self.failed_allocs += 1,
            }
        } else {
            let index = rng.below(self.live.len() as u64) as usize;
            let (ptr, len) = self.live.swap_remove(index);
            // SAFETY: the block was live and is removed from the set, so freed once.
            unsafe { peer.free(ptr, len) };
            self.live_requested_bytes -= len as u64;
            self.frees += 1;
        }
    }

    /// Frees every live block.
    fn finish<P: Peer + ?Sized>(&mut self, peer: &P) {
        for (ptr, len) in self.live.drain(..) {
            // SAFETY: every remaining block is live and freed once.
            unsafe { peer.free(ptr, len) };
        }
        peer.settle();
    }
}

/// Runs P6 on `peer`.
pub fn run<P: Peer + ?Sized>(peer: &P, params: &ChurnParams) -> ChurnResult {
    if params.interleave {
        return run_interleaved(peer, params);
    }
    let mut churn = Churn::new(params);
    let base_held = peer.held_bytes();
    let with_hugetlb = peer.may_map_hugetlb();
    let base_resident = Resident::read(with_hugetlb);
    let sample_every = (params.ops / params.samples.max(1)).max(1);
    let mut samples = Vec::new();
    let start = Instant::now();
    for op in 0..params.ops {
        churn.step(peer);
        if (op + 1) % sample_every == 0 {
            samples.push(ChurnSample {
                ops_done: op + 1,
                live_requested_bytes: churn.live_requested_bytes,
                held_bytes: base_held.zip(peer.held_bytes()).map(|(base, now)| now.saturating_sub(base)),
                resident_bytes: base_resident
                    .zip(Resident::read(with_hugetlb))
                    .map(|(base, now)| now.since(&base).total_bytes()),
            });
        }
    }
    let elapsed_ns = nanos(start.elapsed());
    churn.finish(peer);
    ChurnResult {
        ops: params.ops,
        allocs: churn.allocs,
        frees: churn.frees,
        shrinks: churn.shrinks,
        failed_allocs: churn.failed_allocs,
        elapsed_ns,
        samples,
        interleaved: None,
    }
}

/// Operations per block in the interleaved mode (about 5 ms here).
pub const INTERLEAVE_BLOCK: u64 = 100_000;

/// One allocator with its own live set.
struct ChurnLane<'a, P: Peer + ?Sized> {
    peer: &'a P,
    churn: Churn,
}

impl<P: Peer + ?Sized> Lane for ChurnLane<'_, P> {
    fn name(&self) -> &'static str {
        self.peer.name()
    }

    #[inline(never)]
    fn block(&mut self, ops: u64) {
        for _ in 0..ops {
            self.churn.step(self.peer);
        }
    }

    fn finish(&mut self) -> u64 {
        self.churn.finish(self.peer);
        self.churn.failed_allocs
    }
}

/// P6's throughput on `peer`, glibc, jemalloc and mimalloc in this process
/// ([`interleave::run`]): each lane first does `target_live` operations
/// untimed, then `params.ops` rounded down to whole blocks of
/// [`INTERLEAVE_BLOCK`] are timed per lane. Nothing is sampled (footprints
/// need a process each). The result's top-level fields are `peer`'s lane.
pub fn run_interleaved<P: Peer + ?Sized>(peer: &P, params: &ChurnParams) -> ChurnResult {
    let mut given = ChurnLane { peer, churn: Churn::new(params) };
    let mut system = ChurnLane { peer: &SystemPeer, churn: Churn::new(params) };
    let mut jemalloc = ChurnLane { peer: &JemallocPeer, churn: Churn::new(params) };
    let mut mimalloc = ChurnLane { peer: &MimallocPeer, churn: Churn::new(params) };
    let lanes = interleave::run(
        &mut [&mut given, &mut system, &mut jemalloc, &mut mimalloc],
        params.ops,
        INTERLEAVE_BLOCK,
        params.target_live as u64,
    );
    let own = &lanes.lanes[0];
    ChurnResult {
        ops: own.steps,
        allocs: given.churn.allocs,
        frees: given.churn.frees,
        shrinks: given.churn.shrinks,
        failed_allocs: own.failed_allocs,
        elapsed_ns: own.ns,
        samples: Vec::new(),
        interleaved: Some(lanes),
    }
}
