//! The segments the reader maps, by slot and generation.
//!
//! # Design notes
//!
//! The server announces each mapped segment ([`SegmentMsg`]) with a
//! read-only, sealed descriptor, and each release ([`Released`]) before the
//! memory is reused. A slot mapped again is a new file with a new
//! generation, so a descriptor is trusted only if its segment slot is
//! mapped here *and* its generation equals the mapped one.
//!
//! Invariant: `entries[s].region.len() == entries[s].len` and that length
//! was checked against the file's size when it was mapped.

use rustc_hash::FxHashMap;
use std::os::fd::OwnedFd;

use nta_net::export::proto::{Released, SegmentMsg};

use crate::maps::SharedRegion;

/// One mapped segment.
#[derive(Debug)]
pub struct Segment {
    /// The generation the descriptors must carry.
    pub generation: u64,
    /// 0 shared memory, 1 hugetlb (as announced).
    pub backing: u32,
    /// The read-only mapping.
    pub region: SharedRegion,
}

/// Mapped segments by slot.
#[derive(Debug, Default)]
pub struct SegmentTable {
    entries: FxHashMap<u32, Segment>,
    /// Segment messages refused (bad length, generation 0, mapping failed).
    pub refused: u64,
}

/// Largest segment the reader maps (the protocol's segments are 2 MiB;
/// offsets are u32).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 32;

impl SegmentTable {
    /// An empty table.
    pub fn new() -> SegmentTable {
        SegmentTable::default()
    }

    /// Maps an announced segment, replacing any older generation of the
    /// slot. A refused announcement is counted and `false` returned.
    pub fn announce(&mut self, msg: &SegmentMsg, fd: OwnedFd) -> bool {
        if msg.generation == 0 || msg.len == 0 || msg.len > MAX_SEGMENT_BYTES {
            self.refused += 1;
            return false;
        }
        match SharedRegion::map_read_only(fd, msg.len as usize) {
            Ok(region) => {
                self.insert(msg.segment, Segment { generation: msg.generation, backing: msg.backing, region });
                true
            }
            Err(_) => {
                self.refused += 1;
                false
            }
        }
    }

    /// Adds a mapped segment (replacing the slot's older generation).
    pub fn insert(&mut self, slot: u32, segment: Segment) {
        self.entries.insert(slot, segment);
    }

    /// Unmaps a released segment if the generation is the mapped one.
    pub fn release(&mut self, msg: &Released) -> bool {
        if self.entries.get(&msg.segment).is_some_and(|s| s.generation == msg.generation) {
            self.entries.remove(&msg.segment);
            return true;
        }
        false
    }

    /// The segment in `slot`, if mapped.
    #[inline]
    pub fn get(&self, slot: u32) -> Option<&Segment> {
        self.entries.get(&slot)
    }

    /// Segments mapped.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is mapped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
