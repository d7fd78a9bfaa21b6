//! P1, packet mix: IMIX sizes through a sliding window of live buffers.
//!
//! The window is a FIFO ring: every step allocates one buffer, writes its
//! first and last cache line, and frees the buffer allocated `window` steps
//! earlier. The figure is nanoseconds per alloc+free pair in steady state
//! (the ring is filled before the clock starts and drained after it stops).

use std::ptr::NonNull;
use std::time::Instant;

use super::{nanos, Scale, DEFAULT_SEED};
use crate::peers::{touch, Peer};
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
}

impl PacketMixParams {
    /// The parameters at `scale`.
    pub fn at(scale: Scale) -> Self {
        let pairs = match scale {
            Scale::Full => 50_000_000,
            Scale::Quick => 10_000_000,
            Scale::Tiny => 5_000,
        };
        Self { window: 1024, pairs, seed: DEFAULT_SEED }
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
            unsafe { peer.free(old, old_len) };
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
    let mut window = SlidingWindow::new(params.window, params.seed);
    window.fill(peer);
    let start = Instant::now();
    for _ in 0..params.pairs {
        window.step(peer);
    }
    let elapsed_ns = nanos(start.elapsed());
    window.drain(peer);
    peer.settle();
    PacketMixResult {
        pairs: params.pairs,
        elapsed_ns,
        failed_allocs: window.failed_allocs,
        peak_live_requested_bytes: window.peak_live_requested_bytes,
    }
}
