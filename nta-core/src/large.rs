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
//! Accounting: a run counts `segments * 2 MiB` as in use (no other request
//! can use its tail) and its requested length as live, in the segment
//! table's `RunCounters` (updated under its lock).
//! The largest request is bounded only by the capacity and by finding
//! enough adjacent free slots; the exhaustion path (`reclaim`) gathers free
//! segments first.

use crate::checked::{invalid_free, FreeError};
use crate::granule::{granules_for, GRANULE, HUGE_NODE_BYTES};
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
        NonNull::new(self.segments().addr(head, 0))
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
        want <= segs.count() && segs.resize_run(head, want, new_len)
    }
}
