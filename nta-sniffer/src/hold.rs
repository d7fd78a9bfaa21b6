//! The hold region: the only memory the reader writes.
//!
//! # Design notes
//!
//! [`HOLD_BYTES`] bytes the server maps too and validates: the reader's
//! heartbeat at [`HOLD_HEARTBEAT`] and the consumer index of ring `r` at
//! [`HOLD_CONSUMER`]` + 8 r`. The reader owns these words; it stores them
//! with `Release`, so that the server, loading a consumer index with
//! `Acquire`, knows the reader has finished reading every descriptor (and
//! every held chunk) below it. The heartbeat proves the reader alive: if it
//! stops changing for the lease, the server drops the holds.
//!
//! Invariant (kept by [`crate::reader::Reader`]): a stored consumer index
//! never goes backwards and never passes the ring's `head`.

use std::sync::atomic::Ordering;

use nta_net::export::proto::{HOLD_BYTES, HOLD_CONSUMER, HOLD_HEARTBEAT, MAX_RINGS};

use crate::maps::SharedRegion;

/// The reader's hold region.
#[derive(Debug)]
pub struct HoldRegion {
    region: SharedRegion,
    heartbeat: u64,
}

impl HoldRegion {
    /// Wraps a writable mapping of at least [`HOLD_BYTES`] bytes.
    pub fn new(region: SharedRegion) -> Result<HoldRegion, String> {
        if region.len() < HOLD_BYTES {
            return Err(format!("hold region of {} bytes, expected {HOLD_BYTES}", region.len()));
        }
        let heartbeat = region.load_u64(HOLD_HEARTBEAT, Ordering::Relaxed).unwrap_or(0);
        let hold = HoldRegion { region, heartbeat };
        if !hold.region.store_u64(HOLD_HEARTBEAT, heartbeat, Ordering::Relaxed) {
            return Err("hold region is not writable".into());
        }
        Ok(hold)
    }

    /// Ring `ring`'s consumer index as stored (the server may have
    /// initialised it).
    pub fn consumer(&self, ring: usize) -> u64 {
        if ring >= MAX_RINGS {
            return 0;
        }
        self.region.load_u64(HOLD_CONSUMER + 8 * ring, Ordering::Relaxed).unwrap_or(0)
    }

    /// Publishes ring `ring`'s consumer index: every descriptor below it is
    /// read and its held chunk may be freed.
    pub fn set_consumer(&self, ring: usize, index: u64) {
        if ring < MAX_RINGS {
            self.region.store_u64(HOLD_CONSUMER + 8 * ring, index, Ordering::Release);
        }
    }

    /// Bumps the heartbeat.
    pub fn beat(&mut self) {
        self.heartbeat = self.heartbeat.wrapping_add(1);
        self.region.store_u64(HOLD_HEARTBEAT, self.heartbeat, Ordering::Release);
    }

    /// The heartbeat as last stored.
    pub fn heartbeat(&self) -> u64 {
        self.heartbeat
    }
}
