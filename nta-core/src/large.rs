//! Buffers above 2 MiB: runs of whole segments.
//!
//! A request larger than a huge node cannot be carved from one. It takes a
//! run of `ceil(len / 2 MiB)` adjacent segment slots instead (see the
//! segment table, `segment`), which the pool's single reserved range makes
//! one contiguous buffer. Runs are owned by no shard: any thread frees or
//! resizes one directly under the segment table's lock (the cold path; a
//! run's first touch faults in far more time than the lock costs).
//!
//! - **free** parks the run's segments (they go back to the OS beyond the
//!   retain watermark, after the release delay, like any free segment);
//! - **shrink** parks the trailing segments the new length does not need;
//! - **grow** takes the slots right after the run if they are free.
//!
//! The pages of a run's last segment past its length are given back when
//! the run is taken and when it shrinks (see [`PoolInner::discard_run_tail`]):
//! a recycled segment keeps the pages its previous user touched, and no
//! request can use a run's tail, so they would stay resident for nothing.
//!
//! Accounting: a run counts `segments * 2 MiB` as in use (no other request
//! can use its tail) and its requested length as live, in the segment
//! table's `RunCounters` (updated under its lock).
//! The largest request is bounded only by the capacity and by finding
//! enough adjacent free slots; the exhaustion path (`reclaim`) gathers free
//! segments first.

use crate::checked::{invalid_free, FreeError};
use crate::granule::{granules_for, GRANULE, HUGE_NODE_BYTES, PAGE_NODE_BYTES};
use crate::heap::Loc;
use crate::inner::PoolInner;
use std::ptr::NonNull;

/// Segments a run for `len` bytes needs (at least one).
fn segments_for(len: usize) -> usize {
    len.div_ceil(HUGE_NODE_BYTES).max(1)
}

impl PoolInner {
    /// Allocates a run for `len > 2 MiB` bytes.
    pub(crate) fn alloc_run(&self, len: usize) -> Option<NonNull<u8>> {
        let segments = segments_for(len);
        let head = self.segments().acquire_run(segments, len)?;
        self.discard_run_tail(head, len);
        NonNull::new(self.segments().addr(head, 0))
    }

    /// Gives back the pages of the run headed by `head`, of `len` bytes,
    /// that lie past `len` in its last segment. The caller owns the run:
    /// it was just taken, or the caller resizes it.
    fn discard_run_tail(&self, head: usize, len: usize) {
        let last = segments_for(len) - 1;
        let from = (len - last * HUGE_NODE_BYTES).next_multiple_of(PAGE_NODE_BYTES);
        if from < HUGE_NODE_BYTES {
            // SAFETY: past the run's length nobody reads or writes (the
            // owner may use `len` bytes); a later grow in place hands out
            // these bytes as new, uninitialized ones.
            unsafe { self.segments().discard(head + last, from, HUGE_NODE_BYTES) };
        }
    }

    /// Frees a pointer whose segment no shard owns: a run head, or an
    /// invalid free (a double free of a released node, or an interior
    /// pointer into a run).
    pub(crate) fn free_unowned(&self, ptr: *mut u8, loc: Loc, len: Option<usize>) {
        let segs = self.segments();
        match segs.run(loc.seg) {
            Some((_, run_len)) if loc.granule == 0 => {
                if let Some(len) = len {
                    if granules_for(len) != granules_for(run_len) {
                        invalid_free(ptr, FreeError::WrongSize { len, chunk_bytes: granules_for(run_len) * GRANULE });
                    }
                }
                if !segs.release_run(loc.seg) {
                    invalid_free(ptr, FreeError::DoubleFree);
                }
            }
            _ => self.not_a_chunk(ptr, loc),
        }
    }

    /// Resizes the run headed by `head` to hold `new_len` bytes, in place.
    /// With `shrink_only`, a length above the current one fails. False when
    /// the run cannot be resized in place (changing nothing).
    pub(crate) fn resize_run(&self, head: usize, new_len: usize, shrink_only: bool) -> bool {
        let segs = self.segments();
        let Some((_, old_len)) = segs.run(head) else { return false };
        if shrink_only && granules_for(new_len) > granules_for(old_len) {
            return false;
        }
        let want = segments_for(new_len);
        if want > segs.count() || !segs.resize_run(head, want, new_len) {
            return false;
        }
        if new_len < old_len {
            self.discard_run_tail(head, new_len);
        }
        true
    }
}
