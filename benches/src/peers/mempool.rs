//! The DPDK-style fixed-size mempool reference model.
//!
//! Every buffer is one element of [`MEMPOOL_ELEMENT_BYTES`]: a
//! [`MEMPOOL_HEADROOM_BYTES`] headroom followed by a
//! [`MEMPOOL_DATA_ROOM_BYTES`] data room, as `rte_pktmbuf_pool_create` with
//! the default `RTE_PKTMBUF_HEADROOM` and a 2048-byte data room lays it out.
//! The pointer handed out is the start of the data room. A request above the
//! data room fails (DPDK would chain mbufs; a chained buffer is not one
//! contiguous block, which these workloads need).
//!
//! Free elements sit on a LIFO list linked through their headroom. Capped,
//! the pool has `capacity / element` elements; uncapped, it grows by 2 MiB
//! chunks, as if sized for the peak in advance. Elements are threaded onto
//! the list a chunk at a time (touching each), like DPDK's populate step.
//!
//! One mutex guards the state (DPDK uses per-lcore caches over a ring; the
//! model's timings include an uncontended lock per call).

use std::ptr::NonNull;

use parking_lot::Mutex;

use super::arena::BumpArena;
use super::Peer;

/// Headroom before the data room, in bytes (DPDK's `RTE_PKTMBUF_HEADROOM`).
pub const MEMPOOL_HEADROOM_BYTES: usize = 128;
/// Data room per buffer in bytes: the largest request served.
pub const MEMPOOL_DATA_ROOM_BYTES: usize = 2048;
/// Bytes per element: headroom plus data room.
pub const MEMPOOL_ELEMENT_BYTES: usize = MEMPOOL_HEADROOM_BYTES + MEMPOOL_DATA_ROOM_BYTES;

const _: () = assert!(MEMPOOL_ELEMENT_BYTES % 64 == 0, "elements stay cache-line aligned");

struct State {
    /// First free element (null: none); each free element's first word links
    /// to the next.
    free_head: *mut u8,
    arena: BumpArena,
}

// SAFETY: the list points into memory the arena owns; the state is only
// reached through the mutex.
unsafe impl Send for State {}

/// Elements populated at once: as many as one arena chunk holds.
const POPULATE_ELEMENTS: usize = super::arena::CHUNK_BYTES / MEMPOOL_ELEMENT_BYTES;

impl State {
    /// Carves up to [`POPULATE_ELEMENTS`] elements and threads them onto the
    /// free list, touching each, as `rte_mempool_populate` does when a pool is
    /// created; `false` when the arena has no room for even one.
    #[cold]
    #[inline(never)]
    fn populate(&mut self) -> bool {
        let mut populated = 0;
        while populated < POPULATE_ELEMENTS {
            let Some(element) = self.arena.carve(MEMPOOL_ELEMENT_BYTES, 64) else { break };
            // SAFETY: element is a fresh, 64-aligned element of the arena.
            unsafe { element.as_ptr().cast::<*mut u8>().write(self.free_head) };
            self.free_head = element.as_ptr();
            populated += 1;
        }
        populated > 0
    }
}

/// The mempool model; see the module docs.
pub struct MempoolModel {
    state: Mutex<State>,
}

impl std::fmt::Debug for MempoolModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MempoolModel").field("held_bytes", &self.state.lock().arena.held_bytes()).finish()
    }
}

impl MempoolModel {
    /// A pool of `capacity_bytes / element` buffers, or a growing one.
    pub fn new(capacity_bytes: Option<usize>) -> Self {
        Self { state: Mutex::new(State { free_head: std::ptr::null_mut(), arena: BumpArena::new(capacity_bytes) }) }
    }

    /// The capped region as (start address, length), if capped.
    pub fn region(&self) -> Option<(usize, usize)> {
        self.state.lock().arena.region()
    }
}

impl Peer for MempoolModel {
    fn name(&self) -> &'static str {
        "mempool"
    }

    #[inline]
    fn alloc(&self, len: usize) -> Option<NonNull<u8>> {
        if len > MEMPOOL_DATA_ROOM_BYTES {
            return None;
        }
        let mut state = self.state.lock();
        if state.free_head.is_null() && !state.populate() {
            return None;
        }
        let element = state.free_head;
        // SAFETY: element is a free element; its first word is the link.
        state.free_head = unsafe { element.cast::<*mut u8>().read() };
        // SAFETY: the data room starts HEADROOM bytes into the element.
        NonNull::new(unsafe { element.add(MEMPOOL_HEADROOM_BYTES) })
    }

    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, _len: usize) {
        // SAFETY: ptr is a data room handed out by alloc, so the element
        // starts HEADROOM bytes before it and its first word is ours.
        let element = unsafe { ptr.as_ptr().sub(MEMPOOL_HEADROOM_BYTES) };
        let mut state = self.state.lock();
        // SAFETY: as above; element is 64-aligned.
        unsafe { element.cast::<*mut u8>().write(state.free_head) };
        state.free_head = element;
    }

    unsafe fn resize(&self, ptr: NonNull<u8>, _old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
        (new_len <= MEMPOOL_DATA_ROOM_BYTES).then_some(ptr)
    }

    unsafe fn usable_size(&self, _ptr: NonNull<u8>, _len: usize) -> usize {
        MEMPOOL_DATA_ROOM_BYTES
    }

    fn held_bytes(&self) -> Option<u64> {
        Some(self.state.lock().arena.held_bytes())
    }

    fn map_regions(&self, _live_blocks: &[(usize, usize)]) -> Vec<(usize, usize)> {
        self.region().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_requests_fail() {
        let pool = MempoolModel::new(None);
        assert!(pool.alloc(MEMPOOL_DATA_ROOM_BYTES + 1).is_none());
        let ptr = pool.alloc(MEMPOOL_DATA_ROOM_BYTES).unwrap();
        // SAFETY: ptr is live.
        unsafe {
            assert!(pool.resize(ptr, 2048, 4096).is_none());
            pool.free(ptr, 2048);
        }
    }

    #[test]
    fn capped_pool_holds_capacity_over_element_buffers() {
        let pool = MempoolModel::new(Some(10 * MEMPOOL_ELEMENT_BYTES));
        let mut count = 0;
        while pool.alloc(64).is_some() {
            count += 1;
        }
        // The capacity is rounded up to a page, which may fit one more.
        assert!((10..=11).contains(&count), "{count}");
    }
}
