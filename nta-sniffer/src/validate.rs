//! Checks a descriptor read from a ring against what the reader maps.
//!
//! # Design notes
//!
//! Every field of a descriptor comes from memory the reader does not
//! control, so a descriptor is used only after [`check`] accepts it:
//!
//! - `seq == index + 1`: the slot holds descriptor `index`, not an older
//!   lap of the ring (stale) and not an invalidated snapshot (`seq == 0`:
//!   its chunk was freed before we got to it);
//! - the segment slot is mapped and its generation equals the
//!   descriptor's (a released or reused segment is never read);
//! - `0 < len <= segment_bytes` and `offset + len <= mapped length`
//!   (computed in u64, no overflow).
//!
//! Each failure is a [`Fault`], counted in [`Faults`] and skipped; nothing
//! here reads segment memory.

use nta_net::export::proto::Descriptor;

use crate::segments::{Segment, SegmentTable};

/// Why a descriptor was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `seq == 0`: a snapshot whose chunk was freed before it was read.
    Invalidated,
    /// `seq` is neither 0 nor `index + 1`.
    Stale,
    /// No segment is mapped in that slot.
    UnknownSegment,
    /// The segment's generation differs (released or reused).
    Generation,
    /// Zero length, or longer than a segment.
    AbsurdLength,
    /// The bytes would lie outside the segment.
    OutsideSegment,
}

/// Counts of every fault and skip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// [`Fault::Invalidated`] and torn snapshot reads (the bytes changed
    /// while they were copied): both are drops.
    pub torn: u64,
    /// [`Fault::Stale`].
    pub stale: u64,
    /// [`Fault::UnknownSegment`].
    pub unknown_segment: u64,
    /// [`Fault::Generation`].
    pub generation: u64,
    /// [`Fault::AbsurdLength`].
    pub absurd_length: u64,
    /// [`Fault::OutsideSegment`].
    pub outside_segment: u64,
    /// A head that went backwards or jumped more than a ring ahead of the
    /// consumer index (the reader resynchronised to it).
    pub index_jumps: u64,
}

impl Faults {
    /// Counts one fault.
    pub fn count(&mut self, fault: Fault) {
        match fault {
            Fault::Invalidated => self.torn += 1,
            Fault::Stale => self.stale += 1,
            Fault::UnknownSegment => self.unknown_segment += 1,
            Fault::Generation => self.generation += 1,
            Fault::AbsurdLength => self.absurd_length += 1,
            Fault::OutsideSegment => self.outside_segment += 1,
        }
    }

    /// Descriptors skipped as invalid (everything but torn reads).
    pub fn invalid(&self) -> u64 {
        self.stale + self.unknown_segment + self.generation + self.absurd_length + self.outside_segment
    }
}

/// Accepts descriptor `d` read from ring index `index` and gives the
/// segment its bytes lie in, or says why not.
pub fn check<'a>(
    d: &Descriptor,
    index: u64,
    segments: &'a SegmentTable,
    segment_bytes: u64,
) -> Result<&'a Segment, Fault> {
    if d.seq == 0 {
        return Err(Fault::Invalidated);
    }
    if Some(d.seq) != index.checked_add(1) {
        return Err(Fault::Stale);
    }
    let Some(segment) = segments.get(d.segment) else { return Err(Fault::UnknownSegment) };
    if segment.generation != d.generation {
        return Err(Fault::Generation);
    }
    if d.len == 0 || u64::from(d.len) > segment_bytes {
        return Err(Fault::AbsurdLength);
    }
    if u64::from(d.offset) + u64::from(d.len) > segment.region.len() as u64 {
        return Err(Fault::OutsideSegment);
    }
    Ok(segment)
}
