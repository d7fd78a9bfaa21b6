//! # nta-core: the network tree allocator
//!
//! An exact-size packet-buffer allocator after Evgeniy Polyakov's network
//! tree allocator (NTA, 2006; see `shared/seeds/002_*` in the repository).
//! Memory is carved in 32-byte granules with no power-of-two rounding, freed
//! chunks merge with their free neighbours at once, each node belongs to one
//! shard (CPU), frees from other shards go through a lock-free queue, and
//! the memory lives in memfd segments that another process can map.
//!
//! # Layers (bottom up), one concept per module
//!
//! | module | what it is |
//! |---|---|
//! | [`granule`] | units: granule, page node, huge node, segment |
//! | `bitmap` | per-node bit operations |
//! | `extent` | free extents and their boundary tags |
//! | `size_class`, `free_list` | size-indexed lists (exact + TLSF) with bitmaps |
//! | `node` | per-node metadata and its invariants |
//! | `heap` | the pure extent allocator of one shard (no syscalls) |
//! | `sys`, `lock`, `meta_array`, `segment` | syscalls; a futex lock; memfd segments in one reserved range, and runs of them |
//! | `remote`, `shard` | the remote-free queue; shards and their try-lock |
//! | `mark` | the parked mark that catches double frees of cached chunks |
//! | `quick_cache`, `thread_slot`, `thread_cache` | bounded caches of freed small chunks: per shard, and per thread (no atomics), with a take-over protocol |
//! | `pending` | deferred page frees: a burst of frees merged per page node, or a page node freed whole |
//! | `inner`, `large`, `reclaim` | routing among shards; buffers above 2 MiB; what an allocation gathers before it fails |
//! | `purge`, `decay` | wholly free memory's pages given back after a delay while the pool works; everything free given back once it goes quiet |
//! | `fork`, `pool`, `handle` | fork handlers; the [`Pool`] handle and its builder; [`PoolHandle`], a buffer's handle (uncounted for a leaked pool) |
//! | [`export`] | sealed read-only segment memfds, generations, segment listeners, postponed frees |
//! | `stats`, `validate`, `occupancy` | counters, the invariant walk, the bitmap view |
//! | `global` | `GlobalAlloc` ([`NtaGlobal`]) and `allocator_api2::Allocator` for [`Pool`] |
//! | [`checked`] | invalid-free reporting |
//!
//! # Invariants (all checked by [`Pool::validate`])
//!
//! - No two adjacent free extents in a node (at either level).
//! - `in_use_bytes + free_bytes == mapped_bytes`.
//! - A free extent's header and footer both hold its length.
//! - List bitmap bit set iff the list is non-empty.
//! - No page node is wholly free; a wholly free huge node is kept by its
//!   shard (at most one) or handed back to the segment table.
//! - A chunk's second word holds a parked mark iff the chunk sits in a
//!   thread cache, a quick cache, a page node's pending chain or a
//!   remote-free queue (`mark`).
//! - A run of `k` segments is `k` adjacent slots in state Run, owned by no
//!   shard, with all-free bitmaps; the run counters sum the live runs.
//!
//! # Safety of the public surface
//!
//! Safe calls cannot break these invariants: internals are crate-private,
//! every length is checked before it is rounded, and invalid frees (foreign,
//! interior, double, wrong size) panic with the messages of [`checked`],
//! raised after every lock is released.
//!
//! # Example
//!
//! ```
//! use nta_core::Pool;
//! let pool = Pool::builder().capacity(16 << 20).build()?;
//! let p = pool.alloc(1518).expect("room");           // 48 granules, exactly
//! // SAFETY: `p` is live and ours.
//! unsafe {
//!     pool.shrink(p, 60);                             // tail back to the pool
//!     assert_eq!(pool.usable_size(p), 64);
//!     pool.free(p);                                   // no size needed
//! }
//! pool.validate()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bitmap;
pub mod checked;
mod decay;
mod error;
pub mod export;
mod extent;
mod fork;
mod free_list;
mod global;
pub mod granule;
mod handle;
mod heap;
mod inner;
mod large;
mod lock;
mod mark;
mod meta_array;
mod node;
mod occupancy;
mod pending;
mod pool;
mod purge;
mod quick_cache;
mod reclaim;
mod remote;
mod segment;
mod shard;
mod size_class;
mod stats;
mod sync;
mod sys;
mod thread_cache;
mod thread_slot;
mod validate;

pub use checked::FreeError;
pub use error::Error;
pub use export::{ChunkLocation, FreeHook, SegmentExport, SegmentListener};
pub use global::NtaGlobal;
pub use granule::{GRANULE, HUGE_NODE_BYTES, MAX_ALIGN, MAX_ALLOC_BYTES, PAGE_NODE_BYTES, SMALL_MAX_BYTES};
pub use handle::PoolHandle;
pub use occupancy::{GranuleState, NodeOccupancy};
pub use pool::{HugePages, Pool, PoolBuilder};
pub use segment::Backing;
pub use stats::Stats;

/// The largest pool capacity, about 16 TiB: the deferred page frees name a
/// page node by a 32-bit id. [`PoolBuilder::capacity`] beyond it makes
/// `build` fail; the default (physical memory) is capped to it.
pub const MAX_CAPACITY: usize = pending::MAX_SEGMENTS * HUGE_NODE_BYTES;

/// Resident set size of this process, from `/proc/self/statm` (for tests and
/// benchmarks that check memory really goes back to the OS).
pub fn rss_bytes() -> std::io::Result<usize> {
    sys::rss_bytes()
}
