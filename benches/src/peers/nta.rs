//! NTA (nta-core's `Pool`) as a peer.
//!
//! Frees use `free_sized`, since every workload knows the length (as the
//! network stack does, seed 002); `--nta-unsized-frees` makes them
//! `Pool::free`, as a C program's `free` would be. Shrinks are in place; grows try the right
//! neighbour first (`try_grow`) and fall back to `realloc`.
//!
//! Held bytes are `mapped_bytes + metadata_bytes`: node bitmaps and slack
//! bytes sit outside the mapped segments (about 4% of them), and the peers'
//! own figures (jemalloc `stats.resident`, mimalloc's committed bytes)
//! include their metadata too.

use std::ptr::NonNull;

use nta_core::{HugePages, Pool};

use super::{BuildError, Peer, PeerConfig};

/// An NTA pool as a peer.
#[derive(Clone)]
pub struct NtaPeer {
    pool: Pool,
    hugepages: HugePages,
    unsized_frees: bool,
}

impl std::fmt::Debug for NtaPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtaPeer").field("stats", &self.pool.stats()).finish()
    }
}

impl NtaPeer {
    /// Builds a pool: capped at `capacity_bytes` if given, with
    /// `nta_shards` shards if given (else nta-core's default).
    pub fn new(config: PeerConfig) -> Result<Self, BuildError> {
        let mut builder = Pool::builder();
        if let Some(capacity) = config.capacity_bytes {
            builder = builder.capacity(capacity);
        }
        if let Some(shards) = config.nta_shards {
            builder = builder.shards(shards);
        }
        if let Some(exportable) = config.nta_tuning.exportable {
            builder = builder.exportable(exportable);
        }
        builder = builder.hugepages(config.nta_tuning.hugepages);
        if let Some(retain_bytes) = config.nta_tuning.retain_bytes {
            builder = builder.retain_bytes(retain_bytes);
        }
        let pool = builder.build().map_err(|error| BuildError(format!("nta-core Pool::build failed: {error:?}")))?;
        Ok(Self { pool, hugepages: config.nta_tuning.hugepages, unsized_frees: config.nta_tuning.unsized_frees })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Peer for NtaPeer {
    fn name(&self) -> &'static str {
        "nta"
    }

    #[inline]
    fn alloc(&self, len: usize) -> Option<NonNull<u8>> {
        self.pool.alloc(len)
    }

    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded.
        unsafe { self.free_as(ptr, len, self.unsized_frees) }
    }

    fn frees_unsized(&self) -> bool {
        self.unsized_frees
    }

    #[inline]
    unsafe fn free_as(&self, ptr: NonNull<u8>, len: usize, unsized_free: bool) {
        // SAFETY: Peer::free's contract is free_sized's: ptr is live from this
        // pool and len is its last length (which `free` does not need).
        unsafe {
            if unsized_free {
                self.pool.free(ptr)
            } else {
                self.pool.free_sized(ptr, len)
            }
        }
    }

    unsafe fn resize(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
        if new_len <= old_len {
            // SAFETY: ptr is a live block of this pool, as Peer::resize requires.
            unsafe { self.pool.shrink(ptr, new_len) };
            return Some(ptr);
        }
        // SAFETY: as above.
        if unsafe { self.pool.try_grow(ptr, new_len) } {
            return Some(ptr);
        }
        // SAFETY: as above; on None the block is untouched.
        unsafe { self.pool.realloc(ptr, new_len) }
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>, _len: usize) -> usize {
        // SAFETY: ptr is a live block of this pool.
        unsafe { self.pool.usable_size(ptr) }
    }

    fn held_bytes(&self) -> Option<u64> {
        let stats = self.pool.stats();
        Some(stats.mapped_bytes + stats.metadata_bytes)
    }

    fn may_map_hugetlb(&self) -> bool {
        self.hugepages != HugePages::Off
    }

    fn bind_thread(&self, thread_index: usize) {
        let shards = self.pool.shard_count();
        if shards > 1 {
            self.pool.bind_current_thread(thread_index % shards);
        }
    }

    fn settle(&self) {
        self.pool.collect();
    }

    /// NTA's segments need not be adjacent: the map shows every
    /// `HUGE_NODE_BYTES` window that holds a live block, and greys the pages
    /// of a window that the pool does not own.
    fn map_regions(&self, live_blocks: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let window = nta_core::HUGE_NODE_BYTES;
        let mut starts: Vec<usize> = live_blocks.iter().map(|&(address, _)| address / window * window).collect();
        starts.sort_unstable();
        starts.dedup();
        starts.into_iter().map(|start| (start, window)).collect()
    }

    fn owns_page(&self, address: usize) -> bool {
        self.pool.contains(address as *const u8)
    }
}
