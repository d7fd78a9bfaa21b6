//! The power-of-two segregated-fit reference model.
//!
//! This is the "SLAB-like power-of-two allocator" that seed 002 compares NTA
//! with: every request is rounded up to a power of two (at least
//! [`POW2_MIN_CLASS_BYTES`]); each size class carves its objects out of slabs
//! of `max(4 KiB, class)` bytes taken from a [`BumpArena`]; freed objects go
//! on their class's LIFO free list, linked through their first word, and are
//! never merged or returned. A slab, once given to a class, stays with it.
//!
//! Invariant: `Σ class free-list lengths · class bytes + live class bytes ==
//! carved slab bytes`.
//!
//! One mutex guards the state: the model is a reference for footprint and
//! fragmentation, and its timings include an uncontended lock per call.

use std::ptr::NonNull;

use parking_lot::Mutex;

use super::arena::BumpArena;
use super::Peer;

/// Smallest size class in bytes (one NTA granule, for a like-for-like map).
pub const POW2_MIN_CLASS_BYTES: usize = 32;
/// Number of classes: 32 B .. 2 MiB.
pub const POW2_CLASSES: usize = 17;
/// Largest request the model serves.
pub const POW2_MAX_BYTES: usize = POW2_MIN_CLASS_BYTES << (POW2_CLASSES - 1);
/// Smallest slab in bytes (a page).
pub const POW2_SLAB_BYTES: usize = 4096;

struct State {
    /// Head of each class's free list (null: empty); the next link is the
    /// first word of each free object.
    free_heads: [*mut u8; POW2_CLASSES],
    arena: BumpArena,
}

// SAFETY: the free-list pointers point into memory the arena owns, and the
// state is only ever reached through the mutex.
unsafe impl Send for State {}

/// The power-of-two model; see the module docs.
pub struct Pow2Model {
    state: Mutex<State>,
}

impl std::fmt::Debug for Pow2Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pow2Model").field("held_bytes", &self.state.lock().arena.held_bytes()).finish()
    }
}

/// The class index and class size of a request.
#[inline]
fn class_of(len: usize) -> Option<(usize, usize)> {
    if len > POW2_MAX_BYTES {
        return None;
    }
    let class_bytes = len.max(POW2_MIN_CLASS_BYTES).next_power_of_two();
    let index = (class_bytes.trailing_zeros() - POW2_MIN_CLASS_BYTES.trailing_zeros()) as usize;
    Some((index, class_bytes))
}

impl Pow2Model {
    /// A model over `capacity_bytes` (or growing freely when `None`).
    pub fn new(capacity_bytes: Option<usize>) -> Self {
        Self {
            state: Mutex::new(State {
                free_heads: [std::ptr::null_mut(); POW2_CLASSES],
                arena: BumpArena::new(capacity_bytes),
            }),
        }
    }

    /// The capped region as (start address, length), if capped.
    pub fn region(&self) -> Option<(usize, usize)> {
        self.state.lock().arena.region()
    }
}

impl State {
    /// Carves a new slab for class `index` and threads its objects onto the
    /// free list; `false` when the arena is full.
    #[cold]
    #[inline(never)]
    fn refill(&mut self, index: usize, class_bytes: usize) -> bool {
        let slab_bytes = class_bytes.max(POW2_SLAB_BYTES);
        let Some(slab) = self.arena.carve(slab_bytes, POW2_SLAB_BYTES) else {
            return false;
        };
        let objects = slab_bytes / class_bytes;
        for object in (0..objects).rev() {
            // SAFETY: object * class_bytes < slab_bytes, inside the new slab,
            // and every object is at least 32-byte aligned (slab is 4 KiB aligned).
            unsafe {
                let obj = slab.as_ptr().add(object * class_bytes);
                obj.cast::<*mut u8>().write(self.free_heads[index]);
                self.free_heads[index] = obj;
            }
        }
        true
    }
}

impl Peer for Pow2Model {
    fn name(&self) -> &'static str {
        "pow2"
    }

    #[inline]
    fn alloc(&self, len: usize) -> Option<NonNull<u8>> {
        let (index, class_bytes) = class_of(len)?;
        let mut state = self.state.lock();
        if state.free_heads[index].is_null() && !state.refill(index, class_bytes) {
            return None;
        }
        let head = state.free_heads[index];
        // SAFETY: head is a free object of this class; its first word is the link.
        state.free_heads[index] = unsafe { head.cast::<*mut u8>().read() };
        NonNull::new(head)
    }

    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, len: usize) {
        let Some((index, _)) = class_of(len) else {
            return;
        };
        let mut state = self.state.lock();
        // SAFETY: the caller guarantees ptr is a live object of len's class,
        // so its first word is ours to use as the link.
        unsafe { ptr.as_ptr().cast::<*mut u8>().write(state.free_heads[index]) };
        state.free_heads[index] = ptr.as_ptr();
    }

    unsafe fn resize(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
        let (old_index, _) = class_of(old_len)?;
        let (new_index, _) = class_of(new_len)?;
        if old_index == new_index {
            return Some(ptr);
        }
        let new_ptr = self.alloc(new_len)?;
        // SAFETY: both blocks are live and distinct; min(old, new) bytes fit both.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), new_ptr.as_ptr(), old_len.min(new_len));
            self.free(ptr, old_len);
        }
        Some(new_ptr)
    }

    unsafe fn usable_size(&self, _ptr: NonNull<u8>, len: usize) -> usize {
        class_of(len).map_or(len, |(_, class_bytes)| class_bytes)
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
    fn classes_round_up_to_powers_of_two() {
        assert_eq!(class_of(1), Some((0, 32)));
        assert_eq!(class_of(33), Some((1, 64)));
        assert_eq!(class_of(1518), Some((6, 2048)));
        assert_eq!(class_of(POW2_MAX_BYTES), Some((POW2_CLASSES - 1, POW2_MAX_BYTES)));
        assert_eq!(class_of(POW2_MAX_BYTES + 1), None);
    }

    #[test]
    fn capped_model_fills_exactly() {
        let model = Pow2Model::new(Some(4 * POW2_SLAB_BYTES));
        let mut blocks = Vec::new();
        while let Some(ptr) = model.alloc(1024) {
            blocks.push(ptr);
        }
        assert_eq!(blocks.len(), 16);
        for ptr in blocks {
            // SAFETY: each block is live with length 1024.
            unsafe { model.free(ptr, 1024) };
        }
        assert!(model.alloc(1000).is_some());
    }
}
