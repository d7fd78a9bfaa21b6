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
//! The heartbeat is bumped by a thread of its own ([`HoldRegion::heartbeat_thread`])
//! as well as by the capture loop, so a capture blocked on a slow output
//! (`--hexdump | less`) keeps its holds: the lease then means "the process
//! is alive". A process that dies closes its socket, which the server sees
//! at once; a stopped one (SIGSTOP) stops every thread, so its lease still
//! runs out. Held bytes stay bounded by the server's quota either way.
//!
//! Invariant (kept by [`crate::reader::Reader`]): a stored consumer index
//! never goes backwards and never passes the ring's `head`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nta_net::export::proto::{HOLD_BYTES, HOLD_CONSUMER, HOLD_HEARTBEAT, MAX_RINGS};

use crate::maps::SharedRegion;

/// The reader's hold region.
#[derive(Debug)]
pub struct HoldRegion {
    region: Arc<SharedRegion>,
    heartbeat: u64,
}

/// The heartbeat thread; stops (and is joined) on drop.
#[derive(Debug)]
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Adds one to the heartbeat word (a lost race with the other beater
/// loses one increment, never the change the server looks for).
fn bump(region: &SharedRegion) -> u64 {
    let next = region.load_u64(HOLD_HEARTBEAT, Ordering::Relaxed).unwrap_or(0).wrapping_add(1);
    region.store_u64(HOLD_HEARTBEAT, next, Ordering::Release);
    next
}

impl HoldRegion {
    /// Wraps a writable mapping of at least [`HOLD_BYTES`] bytes.
    pub fn new(region: SharedRegion) -> Result<HoldRegion, String> {
        if region.len() < HOLD_BYTES {
            return Err(format!("hold region of {} bytes, expected {HOLD_BYTES}", region.len()));
        }
        let heartbeat = region.load_u64(HOLD_HEARTBEAT, Ordering::Relaxed).unwrap_or(0);
        let hold = HoldRegion { region: Arc::new(region), heartbeat };
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
        self.heartbeat = bump(&self.region);
    }

    /// Starts a thread that bumps the heartbeat every `every` until the
    /// returned value is dropped (see the module notes).
    pub fn heartbeat_thread(&self, every: Duration) -> std::io::Result<Heartbeat> {
        let stop = Arc::new(AtomicBool::new(false));
        let (region, flag) = (self.region.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("nta-sniffer-beat".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                bump(&region);
                std::thread::park_timeout(every);
            }
        })?;
        Ok(Heartbeat { stop, thread: Some(thread) })
    }

    /// The heartbeat as last stored.
    pub fn heartbeat(&self) -> u64 {
        self.heartbeat
    }
}
