//! One descriptor ring, as the reader sees it: read-only, lossy, single
//! producer (the server) and single consumer (us).
//!
//! # Design notes
//!
//! Layout (proto.rs): a [`RING_HEADER`]-byte header (magic, slot count,
//! slot size, `head` on its own line, drop counters), then `slots` slots
//! of [`SLOT_BYTES`]. Descriptor `i` lives in slot `i % slots`. The server
//! stores the slot, then `head = i + 1` with `Release`; [`Ring::head`]
//! loads it with `Acquire`, so a slot below `head` is complete when we copy
//! it ([`Ring::slot`], sixteen relaxed 8-byte loads). A slot can still be
//! overwritten while we copy it (the server laps a reader that is more
//! than a ring behind only if the reader's consumer index says so, but the
//! header is untrusted): that shows as `seq != index + 1` and is rejected
//! by [`crate::validate::check`].
//!
//! The header is checked once, when the ring is wrapped ([`Ring::new`]):
//! magic, the slot count the Hello announced, the slot size, and a mapping
//! long enough for every slot. After that, every slot offset is
//! `RING_HEADER + (i % slots) * SLOT_BYTES`, in bounds by construction.

use std::sync::atomic::Ordering;

use nta_net::export::proto::{
    ring_bytes, RING_DROPS, RING_HEAD, RING_MAGIC, RING_SLOTS, RING_SLOT_SIZE, RING_UNHELD, SLOT_BYTES, SLOT_SEQ,
};

use crate::maps::SharedRegion;

/// Most slots per ring the reader accepts (keeps a garbage Hello from
/// making it walk or map absurd ranges).
pub const MAX_SLOTS: u32 = 1 << 20;

/// A mapped ring whose header has been checked.
#[derive(Debug)]
pub struct Ring {
    region: SharedRegion,
    slots: u64,
}

impl Ring {
    /// Checks the header of `region` against the announced slot count.
    pub fn new(region: SharedRegion, slots: u32) -> Result<Ring, String> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(format!("ring of {slots} slots"));
        }
        if region.len() < ring_bytes(slots as usize) {
            return Err(format!("ring mapping of {} bytes is too short for {slots} slots", region.len()));
        }
        if region.load_u64(0, Ordering::Relaxed) != Some(RING_MAGIC) {
            return Err("ring magic is wrong".into());
        }
        if region.load_u32(RING_SLOTS) != Some(slots) {
            return Err("ring slot count disagrees with the Hello".into());
        }
        if region.load_u32(RING_SLOT_SIZE) != Some(SLOT_BYTES as u32) {
            return Err("ring slot size is wrong".into());
        }
        Ok(Ring { region, slots: u64::from(slots) })
    }

    /// Slots in the ring.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// The producer index (`Acquire`: the slots below it are published).
    #[inline]
    pub fn head(&self) -> u64 {
        self.region.load_u64(RING_HEAD, Ordering::Acquire).unwrap_or(0)
    }

    fn slot_offset(&self, index: u64) -> usize {
        nta_net::export::proto::RING_HEADER + (index % self.slots) as usize * SLOT_BYTES
    }

    /// A copy of the slot that holds descriptor `index`.
    #[inline]
    pub fn slot(&self, index: u64) -> [u8; SLOT_BYTES] {
        let mut raw = [0u8; SLOT_BYTES];
        // In bounds by construction (module notes); a failure leaves zeros,
        // which `check` rejects as an invalidated descriptor.
        self.region.copy_out(self.slot_offset(index), &mut raw);
        raw
    }

    /// The `seq` word of descriptor `index`'s slot, loaded again after a
    /// snapshot copy (the caller fences first).
    #[inline]
    pub fn seq(&self, index: u64) -> u64 {
        self.region.load_u64(self.slot_offset(index) + SLOT_SEQ, Ordering::Relaxed).unwrap_or(0)
    }

    /// Descriptors the server dropped because this ring was full.
    pub fn drops(&self) -> u64 {
        self.region.load_u64(RING_DROPS, Ordering::Relaxed).unwrap_or(0)
    }

    /// Descriptors published without a hold because the quota was reached.
    pub fn unheld(&self) -> u64 {
        self.region.load_u64(RING_UNHELD, Ordering::Relaxed).unwrap_or(0)
    }
}
