//! P1, packet mix: IMIX sizes through a sliding window of live buffers.
//!
//! The window is a FIFO ring: every step allocates one buffer, writes its
//! first and last cache line, and frees the buffer allocated `window` steps
//! earlier. The figure is nanoseconds per alloc+free pair in steady state
//! (the ring is filled before the clock starts and drained after it stops).
//!
//! With [`PacketMixParams::paired_frees`], or on a peer whose frees are
//! unsized (NTA with `--nta-unsized-frees`), the timed pairs run in blocks of
//! [`PAIRED_BLOCK`] pairs whose frees alternate between sized and unsized
//! ([`Peer::free_as`]) in the order sized, unsized, unsized, sized, ..., each
//! block timed on its own: the two ways are compared in one process, over
//! the same minutes, rather than in two runs that a shared host may slow
//! differently.
//!
//! With [`PacketMixParams::interleave`], the given peer (NTA in the suite)
//! and glibc, jemalloc and mimalloc run in one process, each with a window
//! of its own (same seed, so the same sizes), their timed pairs interleaved
//! by blocks of [`PAIRED_BLOCK`] pairs ([`run_interleaved`], see
//! [`interleave`] for why).

use std::ptr::NonNull;
use std::time::Instant;

use super::interleave::{self, Interleaved, Lane};
use super::{nanos, Scale, DEFAULT_SEED};
use crate::peers::{touch, JemallocPeer, MimallocPeer, Peer, SystemPeer};
use crate::rng::SplitMix64;
use crate::sizes;

/// P1 parameters.
#[derive(Clone, Debug)]
pub struct PacketMixParams {
    /// Live buffers in the window.
    pub window: usize,
    /// Timed alloc+free pairs.
    pub pairs: u64,
    /// Seed of the size sequence.
    pub seed: u64,
    /// Alternate sized and unsized frees by blocks (see the module notes);
    /// also on for a peer whose frees are unsized (`Peer::frees_unsized`).
    pub paired_frees: bool,
    /// Run the peer, glibc, jemalloc and mimalloc in this process,
    /// interleaved by blocks (see the module notes).
    pub interleave: bool,
}

/// Pairs per block in the paired mode (fewer when the run is short).
pub const PAIRED_BLOCK: u64 = 50_000;

/// [`SlidingWindow::step_as`]: free as the peer does by default.
pub const FREE_DEFAULT: u8 = 0;
/// [`SlidingWindow::step_as`]: free with the length.
pub const FREE_SIZED: u8 = 1;
/// [`SlidingWindow::step_as`]: free without the length.
pub const FREE_UNSIZED: u8 = 2;

impl PacketMixParams {
    /// The parameters at `scale`.
    pub fn at(scale: Scale) -> Self {
        let pairs = match scale {
            Scale::Full => 50_000_000,
            Scale::Quick => 10_000_000,
            Scale::Tiny => 5_000,
        };
        Self { window: 1024, pairs, seed: DEFAULT_SEED, paired_frees: false, interleave: false }
    }
}

/// P1 result.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PacketMixResult {
    /// Timed pairs attempted.
    pub pairs: u64,
    /// Wall time of the timed part.
    pub elapsed_ns: u64,
    /// Allocations that returned `None`.
    pub failed_allocs: u64,
    /// Peak of the requested bytes of live buffers.
    pub peak_live_requested_bytes: u64,
    /// The paired mode's split of the timed part.
    #[serde(default)]
    pub paired: Option<PairedFrees>,
    /// The interleaved mode's lanes (the fields above are then the given
    /// peer's lane).
    #[serde(default)]
    pub interleaved: Option<Interleaved>,
}

/// Time spent in the paired mode's blocks of each kind.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct PairedFrees {
    /// Pairs timed with sized frees (and as many with unsized ones).
    pub pairs_each: u64,
    /// Nanoseconds in the blocks with sized frees.
    pub sized_ns: u64,
    /// Nanoseconds in the blocks with unsized frees.
    pub unsized_ns: u64,
}

impl PairedFrees {
    /// Unsized over sized time.
    pub fn unsized_over_sized(&self) -> f64 {
        self.unsized_ns as f64 / self.sized_ns.max(1) as f64
    }

    /// Nanoseconds per pair in the blocks with unsized (or sized) frees.
    pub fn ns_per_pair(&self, unsized_free: bool) -> f64 {
        let ns = if unsized_free { self.unsized_ns } else { self.sized_ns };
        ns as f64 / self.pairs_each.max(1) as f64
    }
}

impl PacketMixResult {
    /// Nanoseconds per alloc+free pair.
    pub fn ns_per_pair(&self) -> f64 {
        self.elapsed_ns as f64 / self.pairs.max(1) as f64
    }
}

/// A FIFO ring of live buffers with IMIX sizes; shared by P1, P2 and the
/// criterion bench.
#[derive(Debug)]
pub struct SlidingWindow {
    slots: Vec<Option<(NonNull<u8>, usize)>>,
    next: usize,
    rng: SplitMix64,
    /// Allocations that returned `None`.
    pub failed_allocs: u64,
    /// Requested bytes of the live buffers.
    pub live_requested_bytes: u64,
    /// Peak of `live_requested_bytes`.
    pub peak_live_requested_bytes: u64,
}

impl SlidingWindow {
    /// An empty window of `window` slots (at least one). Every slot is
    /// written here, so the slot vector's pages are resident before any
    /// footprint baseline (a zeroed vector would be faulted in during the
    /// run and counted against the allocator).
    pub fn new(window: usize, seed: u64) -> Self {
        let mut slots = vec![None; window.max(1)];
        for slot in &mut slots {
            // SAFETY: slot is a valid, exclusive reference; a volatile write
            // cannot be folded into the vector's zeroed allocation.
            unsafe { std::ptr::write_volatile(slot, None) };
        }
        Self {
            slots,
            next: 0,
            rng: SplitMix64::new(seed),
            failed_allocs: 0,
            live_requested_bytes: 0,
            peak_live_requested_bytes: 0,
        }
    }

    /// Allocates one IMIX buffer into the next slot, writes it, and frees the
    /// buffer that slot held.
    #[inline]
    pub fn step<P: Peer + ?Sized>(&mut self, peer: &P) {
        self.step_as::<P, FREE_DEFAULT>(peer)
    }

    /// [`SlidingWindow::step`], freeing as `HOW` says: [`FREE_DEFAULT`]
    /// (`Peer::free`), [`FREE_SIZED`] or [`FREE_UNSIZED`] (`Peer::free_as`).
    #[inline]
    pub fn step_as<P: Peer + ?Sized, const HOW: u8>(&mut self, peer: &P) {
        let len = sizes::imix(&mut self.rng);
        let fresh = peer.alloc(len);
        match fresh {
            Some(ptr) => {
                // SAFETY: ptr is a fresh block of len bytes.
                unsafe { touch(ptr, len) };
                self.live_requested_bytes += len as u64;
                self.peak_live_requested_bytes = self.peak_live_requested_bytes.max(self.live_requested_bytes);
            }
            None => self.failed_allocs += 1,
        }
        let slot = &mut self.slots[self.next];
        if let Some((old, old_len)) = std::mem::replace(slot, fresh.map(|ptr| (ptr, len))) {
            // SAFETY: old was allocated by this peer with old_len and is freed once.
            unsafe {
                match HOW {
                    FREE_SIZED => peer.free_as(old, old_len, false),
                    FREE_UNSIZED => peer.free_as(old, old_len, true),
                    _ => peer.free(old, old_len),
                }
            };
            self.live_requested_bytes -= old_len as u64;
        }
        self.next += 1;
        if self.next == self.slots.len() {
            self.next = 0;
        }
    }

    /// Fills every slot (one lap of `step`).
    pub fn fill<P: Peer + ?Sized>(&mut self, peer: &P) {
        for _ in 0..self.slots.len() {
            self.step(peer);
        }
    }

    /// Frees every live buffer.
    pub fn drain<P: Peer + ?Sized>(&mut self, peer: &P) {
        for slot in &mut self.slots {
            if let Some((ptr, len)) = slot.take() {
                // SAFETY: ptr is live with length len and freed once.
                unsafe { peer.free(ptr, len) };
                self.live_requested_bytes -= len as u64;
            }
        }
    }
}

/// Runs P1 on `peer`.
pub fn run<P: Peer + ?Sized>(peer: &P, params: &PacketMixParams) -> PacketMixResult {
    if params.interleave {
        return run_interleaved(peer, params);
    }
    let mut window = SlidingWindow::new(params.window, params.seed);
    window.fill(peer);
    let mut paired = None;
    let start = Instant::now();
    if params.paired_frees || peer.frees_unsized() {
        paired = Some(run_paired(peer, &mut window, params.pairs));
    } else {
        for _ in 0..params.pairs {
            window.step(peer);
        }
    }
    let elapsed_ns = nanos(start.elapsed());
    window.drain(peer);
    peer.settle();
    PacketMixResult {
        pairs: paired.map_or(params.pairs, |p| 2 * p.pairs_each),
        elapsed_ns,
        failed_allocs: window.failed_allocs,
        peak_live_requested_bytes: window.peak_live_requested_bytes,
        paired,
        interleaved: None,
    }
}

/// One allocator with its own window.
struct WindowLane<'a, P: Peer + ?Sized> {
    peer: &'a P,
    window: SlidingWindow,
}

impl<P: Peer + ?Sized> Lane for WindowLane<'_, P> {
    fn name(&self) -> &'static str {
        self.peer.name()
    }

    #[inline(never)]
    fn block(&mut self, pairs: u64) {
        for _ in 0..pairs {
            self.window.step(self.peer);
        }
    }

    fn finish(&mut self) -> u64 {
        self.window.drain(self.peer);
        self.peer.settle();
        self.window.failed_allocs
    }
}

/// P1 on `peer`, glibc, jemalloc and mimalloc in this process
/// ([`interleave::run`]): every window is filled first (one lap), then
/// `params.pairs` rounded down to whole blocks of [`PAIRED_BLOCK`] are timed
/// per lane. The result's top-level fields are `peer`'s lane.
pub fn run_interleaved<P: Peer + ?Sized>(peer: &P, params: &PacketMixParams) -> PacketMixResult {
    let window = || SlidingWindow::new(params.window, params.seed);
    let mut given = WindowLane { peer, window: window() };
    let mut system = WindowLane { peer: &SystemPeer, window: window() };
    let mut jemalloc = WindowLane { peer: &JemallocPeer, window: window() };
    let mut mimalloc = WindowLane { peer: &MimallocPeer, window: window() };
    let lanes = interleave::run(
        &mut [&mut given, &mut system, &mut jemalloc, &mut mimalloc],
        params.pairs,
        PAIRED_BLOCK,
        params.window as u64,
    );
    let own = &lanes.lanes[0];
    PacketMixResult {
        pairs: own.steps,
        elapsed_ns: own.ns,
        failed_allocs: own.failed_allocs,
        peak_live_requested_bytes: given.window.peak_live_requested_bytes,
        paired: None,
        interleaved: Some(lanes),
    }
}

/// The paired mode's timed part: `pairs` rounded down to whole groups of
/// four blocks (sized, unsized, unsized, sized), at least one group.
fn run_paired<P: Peer + ?Sized>(peer: &P, window: &mut SlidingWindow, pairs: u64) -> PairedFrees {
    let block = (pairs / 4).clamp(1, PAIRED_BLOCK);
    let groups = (pairs / (4 * block)).max(1);
    let mut result = PairedFrees { pairs_each: groups * 2 * block, sized_ns: 0, unsized_ns: 0 };
    for i in 0..groups * 4 {
        let unsized_free = matches!(i % 4, 1 | 2);
        let start = Instant::now();
        if unsized_free {
            for _ in 0..block {
                window.step_as::<P, FREE_UNSIZED>(peer);
            }
        } else {
            for _ in 0..block {
                window.step_as::<P, FREE_SIZED>(peer);
            }
        }
        let ns = nanos(start.elapsed());
        if unsized_free {
            result.unsized_ns += ns;
        } else {
            result.sized_ns += ns;
        }
    }
    result
}
