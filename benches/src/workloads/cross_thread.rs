//! P5, cross-thread: one thread allocates, another frees.
//!
//! Thread A (worker index 0) allocates IMIX buffers, writes their first and
//! last cache line and pushes them into a bounded SPSC ring; thread B (worker
//! index 1) pops, reads the first byte, and frees. Each thread calls
//! [`Peer::bind_thread`] with its index first, so NTA puts them on different
//! shards when it has two or more, and every free is a remote free: the
//! receive-on-one-core, consume-on-another pattern of a network stack. The
//! figure is completed pairs per second, from the start barrier until B has
//! freed the last buffer.
//!
//! On a machine with two CPUs or more, A is pinned to the first CPU the
//! process may use and B to the second, for every allocator: unpinned, the
//! scheduler sometimes ran both on one CPU (taking turns, each buffer
//! already in the cache) and sometimes on two, and a run's figure depended
//! more on that than on the allocator (seen on a 2-vCPU KVM guest: 3.9M or
//! 16M pairs/s for the same NTA binary).

use std::ptr::NonNull;
use std::sync::Barrier;
use std::time::Instant;

use super::{nanos, Scale, DEFAULT_SEED};
use crate::peers::{touch, Peer};
use crate::rng::SplitMix64;
use crate::sizes;
use crate::spsc::{spin_until, SpscRing};

/// P5 parameters.
#[derive(Clone, Debug)]
pub struct CrossThreadParams {
    /// Buffers allocated by A.
    pub pairs: u64,
    /// Slots in the ring between A and B.
    pub queue_capacity: usize,
    /// Seed of the size sequence.
    pub seed: u64,
}

impl CrossThreadParams {
    /// The parameters at `scale`.
    pub fn at(scale: Scale) -> Self {
        let pairs = match scale {
            Scale::Full => 20_000_000,
            Scale::Quick => 5_000_000,
            Scale::Tiny => 5_000,
        };
        Self { pairs, queue_capacity: 1024, seed: DEFAULT_SEED }
    }
}

/// P5 result.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CrossThreadResult {
    /// Buffers allocated by A and freed by B.
    pub pairs_completed: u64,
    /// Allocations that returned `None`.
    pub failed_allocs: u64,
    /// Bytes requested over all completed pairs.
    pub requested_bytes: u64,
    /// Wall time from the barrier to B's last free.
    pub elapsed_ns: u64,
}

impl CrossThreadResult {
    /// Completed pairs per second.
    pub fn pairs_per_sec(&self) -> f64 {
        self.pairs_completed as f64 / (self.elapsed_ns.max(1) as f64 / 1e9)
    }
}

/// A buffer in flight; `None` marks the end of the stream.
#[derive(Clone, Copy)]
struct InFlight(Option<(NonNull<u8>, usize)>);

// SAFETY: the buffer is owned by whichever thread holds the InFlight value;
// the peer allows frees from any thread (Peer: Sync, documented contract).
unsafe impl Send for InFlight {}

/// Pins the calling thread to the `n`-th CPU of the process's affinity
/// mask, if the mask holds at least two; otherwise leaves it alone.
fn pin_to_nth_cpu(n: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read
    // and write the set we pass, sized by size_of.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect();
        if cpus.len() < 2 {
            return;
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus[n % cpus.len()], &mut one);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
    }
}

/// Runs P5 on `peer`.
pub fn run<P: Peer + ?Sized>(peer: &P, params: &CrossThreadParams) -> CrossThreadResult {
    let ring: SpscRing<InFlight> = SpscRing::new(params.queue_capacity);
    let barrier = Barrier::new(2);
    let (failed_allocs, (pairs_completed, requested_bytes, elapsed_ns)) = std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            pin_to_nth_cpu(0);
            peer.bind_thread(0);
            let mut rng = SplitMix64::new(params.seed);
            let mut failed = 0u64;
            barrier.wait();
            for _ in 0..params.pairs {
                let len = sizes::imix(&mut rng);
                let Some(ptr) = peer.alloc(len) else {
                    failed += 1;
                    continue;
                };
                // SAFETY: ptr is a fresh block of len bytes.
                unsafe { touch(ptr, len) };
                let item = InFlight(Some((ptr, len)));
                spin_until(|| ring.try_push(item).ok());
            }
            spin_until(|| ring.try_push(InFlight(None)).ok());
            failed
        });
        let consumer = scope.spawn(|| {
            pin_to_nth_cpu(1);
            peer.bind_thread(1);
            let mut completed = 0u64;
            let mut requested = 0u64;
            barrier.wait();
            let start = Instant::now();
            while let InFlight(Some((ptr, len))) = spin_until(|| ring.try_pop()) {
                // SAFETY: A handed over ownership of this live block.
                unsafe {
                    std::hint::black_box(ptr.as_ptr().read_volatile());
                    peer.free(ptr, len);
                }
                completed += 1;
                requested += len as u64;
            }
            (completed, requested, nanos(start.elapsed()))
        });
        // A panic in a worker is a bug in this crate; propagate it.
        (producer.join().expect("P5 producer panicked"), consumer.join().expect("P5 consumer panicked"))
    });
    peer.settle();
    CrossThreadResult { pairs_completed, failed_allocs, requested_bytes, elapsed_ns }
}
