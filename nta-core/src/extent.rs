//! Free extents and their boundary tags.
//!
//! A free extent is a run of free granules inside one level of one node (a
//! page node, or the huge-node level around the page nodes). Its metadata
//! lives inside the free memory itself, as in NTA, so free lists cost no
//! memory of their own:
//!
//! ```text
//!  granule 0 of the extent                                     last 4 bytes
//! +--------+--------+-----------+---------+---- ... ----------+-----------+
//! | next   | prev   | granules  | check   |                   | granules  |
//! | *Hdr   | *Hdr   | u32       | u32     |                   | u32       |
//! +--------+--------+-----------+---------+---- ... ----------+-----------+
//!  header (list links, size, checksum)                          footer
//! ```
//!
//! `check` is written and verified only in checked mode: a checksum of the
//! header's other fields and its address. A write past the end of a chunk
//! lands first in its right neighbour's header, so if that neighbour is a
//! free extent, the next time the heap unlinks it (to carve or to merge)
//! the checksum no longer matches and the pool panics with "heap
//! corruption" instead of following a clobbered link.
//!
//! The footer lets a chunk being freed find the start of a free left
//! neighbour in O(1); the header gives the size of a free right neighbour.
//! A one-granule extent holds both: the header takes bytes 0..20 and the
//! footer bytes 28..32.
//!
//! Invariant: for every free extent `e`, `header(e).granules ==
//! footer(e).granules == e.len`, and every granule of `e` is set in the
//! node's free bitmap.

use crate::granule::GRANULE;
use std::ptr;

/// Header at the start of every free extent.
#[repr(C)]
#[derive(Debug)]
pub struct FreeHdr {
    /// Next extent in the same free list, or null.
    pub next: *mut FreeHdr,
    /// Previous extent in the same free list, or null when this is the head.
    pub prev: *mut FreeHdr,
    /// Length of the extent in granules.
    pub granules: u32,
    /// Checked mode: [`checksum`] of the fields above.
    pub check: u32,
}

const _: () = assert!(core::mem::size_of::<FreeHdr>() <= GRANULE - 4);

/// The checksum of a header's fields and address (checked mode).
///
/// # Safety
/// `hdr` must be the header of a free extent.
#[inline]
pub unsafe fn checksum(hdr: *const FreeHdr) -> u32 {
    // SAFETY: per the caller.
    let (next, prev, granules) = unsafe { ((*hdr).next as u64, (*hdr).prev as u64, (*hdr).granules as u64) };
    let mut x =
        next ^ prev.rotate_left(21) ^ granules.rotate_left(42) ^ (hdr as u64).rotate_left(7) ^ 0x4E54_415F_4844_5221;
    x = (x ^ (x >> 31)).wrapping_mul(0x7FB5_D329_728E_A185);
    x = (x ^ (x >> 27)).wrapping_mul(0x81DA_DEF4_BC2D_D44D);
    (x ^ (x >> 33)) as u32
}

/// Writes the header size and footer of a free extent of `granules` at `at`.
/// The list links are left for the free list to set.
///
/// # Safety
/// `at..at + granules * 32` must be free memory of a mapped segment that no
/// one else accesses, and `at` must be granule aligned.
#[inline]
pub unsafe fn write_tags(at: *mut u8, granules: usize) -> *mut FreeHdr {
    let hdr = at.cast::<FreeHdr>();
    // SAFETY: the caller owns the extent; it is granule aligned and at least
    // one granule long, so both the header and the footer fit inside it.
    unsafe {
        ptr::addr_of_mut!((*hdr).granules).write(granules as u32);
        at.add(granules * GRANULE - 4).cast::<u32>().write(granules as u32);
    }
    hdr
}

/// Reads the size of the free extent whose last granule ends at `end`.
///
/// # Safety
/// `end` must be the end of a free extent (its footer is then valid).
#[inline]
pub unsafe fn footer_before(end: *const u8) -> usize {
    // SAFETY: per the caller, the four bytes before `end` are a footer.
    unsafe { end.sub(4).cast::<u32>().read() as usize }
}

/// Reads the size of the free extent starting at `at`.
///
/// # Safety
/// `at` must be the start of a free extent.
#[inline]
pub unsafe fn header_size(at: *const u8) -> usize {
    // SAFETY: per the caller, `at` holds a FreeHdr.
    unsafe { (*at.cast::<FreeHdr>()).granules as usize }
}
