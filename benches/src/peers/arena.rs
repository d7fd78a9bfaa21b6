//! The memory source of the two reference models: a bump arena over chunks.
//!
//! Capped, the arena is one region of exactly the capacity, carved front to
//! back. Uncapped, it takes [`CHUNK_BYTES`] chunks from the system as needed.
//! Nothing carved is ever given back before the arena drops, as in the simple
//! slab-like allocator of the NTA notes (seed 002).
//!
//! Invariant: `held_bytes == Σ chunk sizes` (uncapped) or `carved bytes`
//! (capped, where the untouched tail of the region is not resident).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;

/// Size of one chunk taken from the system by an uncapped arena.
pub const CHUNK_BYTES: usize = 2 << 20;
/// Alignment of every chunk (a page).
const CHUNK_ALIGN: usize = 4096;

/// A bump allocator over chunks from `System`.
#[derive(Debug)]
pub struct BumpArena {
    chunks: Vec<(NonNull<u8>, Layout)>,
    /// Next free byte of the current chunk, as an address.
    cursor: usize,
    /// One past the current chunk's last byte.
    end: usize,
    capped: bool,
    held_bytes: u64,
}

// SAFETY: the arena owns its chunks exclusively; the raw pointers are not
// shared with anything that is not itself moved along with the arena.
unsafe impl Send for BumpArena {}

impl BumpArena {
    /// An arena of exactly `capacity_bytes` (rounded up to a page), or one
    /// that grows without bound when `capacity_bytes` is `None`.
    pub fn new(capacity_bytes: Option<usize>) -> Self {
        let mut arena = Self { chunks: Vec::new(), cursor: 0, end: 0, capped: false, held_bytes: 0 };
        if let Some(capacity) = capacity_bytes {
            arena.capped = true;
            let capacity = capacity.div_ceil(CHUNK_ALIGN).max(1) * CHUNK_ALIGN;
            arena.add_chunk(capacity);
        }
        arena
    }

    fn add_chunk(&mut self, bytes: usize) -> bool {
        let Ok(layout) = Layout::from_size_align(bytes, CHUNK_ALIGN) else {
            return false;
        };
        // SAFETY: layout has a non-zero size.
        let Some(base) = NonNull::new(unsafe { System.alloc(layout) }) else {
            return false;
        };
        self.chunks.push((base, layout));
        self.cursor = base.as_ptr() as usize;
        self.end = self.cursor + bytes;
        if !self.capped {
            self.held_bytes += bytes as u64;
        }
        true
    }

    /// Carves `bytes` aligned to `align` (a power of two ≤ 4096); `None` when
    /// a capped arena is full.
    pub fn carve(&mut self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        let mut start = self.cursor.next_multiple_of(align);
        if self.chunks.is_empty() || start + bytes > self.end {
            if self.capped || !self.add_chunk(bytes.max(CHUNK_BYTES)) {
                return None;
            }
            start = self.cursor;
        }
        if self.capped {
            self.held_bytes += (start + bytes - self.cursor) as u64;
        }
        self.cursor = start + bytes;
        NonNull::new(start as *mut u8)
    }

    /// Bytes held (see the module invariant).
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// The capped region as (start address, length), if capped.
    pub fn region(&self) -> Option<(usize, usize)> {
        match (self.capped, self.chunks.first()) {
            (true, Some((base, layout))) => Some((base.as_ptr() as usize, layout.size())),
            _ => None,
        }
    }
}

impl Drop for BumpArena {
    fn drop(&mut self) {
        for (base, layout) in self.chunks.drain(..) {
            // SAFETY: each chunk came from System.alloc with this layout.
            unsafe { System.dealloc(base.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_arena_stops_at_capacity() {
        let mut arena = BumpArena::new(Some(8192));
        assert!(arena.carve(4096, 4096).is_some());
        assert!(arena.carve(4096, 4096).is_some());
        assert!(arena.carve(32, 32).is_none());
        assert_eq!(arena.held_bytes(), 8192);
    }

    #[test]
    fn uncapped_arena_grows_by_chunks() {
        let mut arena = BumpArena::new(None);
        for _ in 0..3 {
            assert!(arena.carve(CHUNK_BYTES, 4096).is_some());
        }
        assert_eq!(arena.held_bytes(), 3 * CHUNK_BYTES as u64);
    }
}
