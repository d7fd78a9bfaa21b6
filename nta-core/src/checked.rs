//! Reporting invalid frees.
//!
//! # Always on (default mode)
//!
//! - a pointer outside the pool's address range, or into a segment that is
//!   not in use: "not from this pool" or "double free";
//! - a pointer that is not granule aligned, or not at a chunk start:
//!   "interior pointer";
//! - a chunk freed twice, whether the first free merged it (its start bit
//!   is gone) or parked it in a thread cache, a shard's quick cache or a
//!   remote-free queue (its parked mark, see `mark`), from any thread, sized
//!   or unsized: "double free";
//! - a `free_sized` length that does not match the chunk, once the chunk
//!   reaches its shard: "size mismatch".
//!
//! # Checked mode only
//!
//! (`PoolBuilder::checked(true)` or the `checked` cargo feature.) Caches
//! are bypassed, so every free is verified and merged at once; a remote free
//! is validated on the freeing thread (so the panic names the culprit, not
//! the owner that drains later); freed memory is poisoned; and every free
//! extent's header carries a checksum, so a write past the end of a chunk
//! into a free neighbour is caught when that neighbour is next carved or
//! merged ("heap corruption").
//!
//! Every panic is raised after the pool's locks are released, so a panic
//! handler that allocates (from this pool, under `NtaGlobal`) cannot
//! deadlock.
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
pub(crate) fn invalid_free(ptr: *const u8, why: FreeError) -> ! {
    panic!("nta-core: invalid free of {ptr:p}: {why}")
}

/// Panics with the documented message for a corrupted free extent (checked
/// mode): `at` is the extent, `what` says what was wrong.
#[cold]
#[inline(never)]
pub(crate) fn corruption(at: *const u8, what: &str) -> ! {
    panic!("nta-core: heap corruption at {at:p}: {what} (a write past the end of a chunk, or after a free)")
}

/// Byte written over freed memory in checked mode.
pub const POISON: u8 = 0xDF;
