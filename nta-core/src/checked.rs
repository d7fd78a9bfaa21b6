//! Reporting invalid frees.
//!
//! Some checks are part of locating a chunk and are always on: a pointer
//! outside the pool's address range, in a segment no shard owns, not
//! granule aligned, or not at a chunk start cannot be freed at all, so
//! `free` panics rather than corrupting the pool. Checked mode
//! (`PoolBuilder::checked(true)` or the `checked` cargo feature) adds the
//! checks that cost something on the fast path: the `free_sized` length is
//! verified, a remote free is validated on the freeing thread (so the panic
//! names the culprit, not the owner that drains later), a chunk queued twice
//! for remote free is caught, and freed memory is poisoned.
//!
//! Every panic message starts with `nta-core: invalid free of 0x…:` and
//! then names the reason, one of the [`FreeError`] texts.

use std::fmt;

/// Why a pointer cannot be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// Outside the pool, or in a segment that is not in use.
    NotInPool,
    /// The granule is already free.
    DoubleFree,
    /// Points inside a live chunk, not at its start.
    Interior,
    /// Already on a remote-free queue.
    QueuedTwice,
    /// `free_sized` got a length that does not match the chunk.
    WrongSize { len: usize, chunk_bytes: usize },
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeError::NotInPool => f.write_str("pointer is not from this pool"),
            FreeError::DoubleFree => f.write_str("double free (the chunk is already free)"),
            FreeError::Interior => f.write_str("interior pointer (not the start of a chunk)"),
            FreeError::QueuedTwice => f.write_str("double free (the chunk is already queued for a remote free)"),
            FreeError::WrongSize { len, chunk_bytes } => {
                write!(f, "size mismatch: freed with len {len} but the chunk holds {chunk_bytes} bytes")
            }
        }
    }
}

/// Panics with the documented message for an invalid free.
#[cold]
#[inline(never)]
#[track_caller]
pub fn invalid_free(ptr: *const u8, why: FreeError) -> ! {
    panic!("nta-core: invalid free of {ptr:p}: {why}")
}

/// Byte written over freed memory in checked mode.
pub const POISON: u8 = 0xDF;

/// Marks a chunk queued for remote free (third word of the chunk).
pub const QUEUED_MAGIC: usize = 0x4E54_415F_5155_4555; // "NTA_QUEU"
