//! Granules, nodes and segments: the units every other module counts in.
//!
//! # Glossary
//!
//! - **granule**: 32 bytes, the unit of allocation. A request for `n` bytes
//!   takes `ceil(n / 32)` granules (at least one). There is no power-of-two
//!   rounding and no header inside allocated memory.
//! - **huge node**: 2 MiB = 65 536 granules, 2 MiB aligned. Requests above
//!   [`SMALL_MAX_BYTES`] are carved from huge nodes. One huge node fills one
//!   segment.
//! - **page node**: 4 KiB = 128 granules, 4 KiB aligned, carved out of a huge
//!   node as a 128-granule chunk. Requests up to [`SMALL_MAX_BYTES`] are
//!   carved from page nodes, so small, short-lived packets (ACKs, DNS) do not
//!   fragment the space big frames need. A wholly free page node goes back to
//!   its huge node at once and merges there.
//! - **segment**: the 2 MiB unit of address space that is mapped from a memfd
//!   (or anonymous memory) and released to the OS.
//!
//! # Why 1 KiB is the page-node limit
//!
//! In a 4 KiB node, a request near page size leaves most of the page
//! unusable (seed 002; NTA combined pages for this reason). Capping page-node
//! requests at a quarter page bounds that waste, and best-fit free lists fill
//! what is left with later small requests. Larger requests go to huge nodes,
//! where the remainder of a split stays contiguous with the rest of the node.

/// Bytes per granule.
pub const GRANULE: usize = 32;
/// log2 of [`GRANULE`].
pub const GRANULE_SHIFT: u32 = 5;

/// Bytes per page node.
pub const PAGE_NODE_BYTES: usize = 4096;
/// log2 of [`PAGE_NODE_BYTES`].
pub const PAGE_NODE_SHIFT: u32 = 12;
/// Granules per page node.
pub const PAGE_GRANULES: usize = PAGE_NODE_BYTES / GRANULE;

/// Bytes per huge node (and per segment).
pub const HUGE_NODE_BYTES: usize = 2 << 20;
/// log2 of [`HUGE_NODE_BYTES`].
pub const HUGE_NODE_SHIFT: u32 = 21;
/// Granules per huge node.
pub const HUGE_GRANULES: usize = HUGE_NODE_BYTES / GRANULE;
/// Page nodes that fit in one huge node.
pub const PAGES_PER_HUGE: usize = HUGE_NODE_BYTES / PAGE_NODE_BYTES;

/// Largest request served from page nodes.
pub const SMALL_MAX_BYTES: usize = 1024;
/// [`SMALL_MAX_BYTES`] in granules.
pub const SMALL_MAX_GRANULES: usize = SMALL_MAX_BYTES / GRANULE;

/// Largest single allocation: a whole huge node.
pub const MAX_ALLOC_BYTES: usize = HUGE_NODE_BYTES;
/// Largest supported alignment.
pub const MAX_ALIGN: usize = PAGE_NODE_BYTES;

const _: () = assert!(1 << GRANULE_SHIFT == GRANULE);
const _: () = assert!(1 << PAGE_NODE_SHIFT == PAGE_NODE_BYTES);
const _: () = assert!(1 << HUGE_NODE_SHIFT == HUGE_NODE_BYTES);
const _: () = assert!(SMALL_MAX_GRANULES < PAGE_GRANULES);
// A free extent's header (two links and a size) must fit in one granule.
const _: () = assert!(2 * core::mem::size_of::<usize>() + 4 <= GRANULE - 4);

/// Granules needed for `len` bytes: `max(1, ceil(len / 32))`. Never
/// overflows: `usize::MAX` bytes is `2^59` granules, more than any pool
/// holds, and every caller compares the result with a bound before use.
#[inline]
pub const fn granules_for(len: usize) -> usize {
    if len == 0 {
        1
    } else {
        len.div_ceil(GRANULE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(granules_for(0), 1);
        assert_eq!(granules_for(1), 1);
        assert_eq!(granules_for(32), 1);
        assert_eq!(granules_for(33), 2);
        assert_eq!(granules_for(1518), 48);
        assert_eq!(granules_for(HUGE_NODE_BYTES), HUGE_GRANULES);
        assert_eq!(granules_for(usize::MAX), usize::MAX / GRANULE + 1);
    }
}
