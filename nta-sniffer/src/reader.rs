//! Reads packets out of the rings: the capture loop's core.
//!
//! # Design notes
//!
//! For each ring, [`Reader::drain`] loads `head` (acquire) and walks the
//! descriptors from its consumer index up to it:
//!
//! 1. `head < consumer` or `head - consumer > slots` cannot happen with an
//!    honest server (it never publishes more than a ring ahead of the
//!    consumer index): counted as an index jump, and the reader resyncs
//!    its consumer index to `head`, skipping the rest.
//! 2. The slot is copied and decoded, then [`check`]ed against the mapped
//!    segments; a fault is counted and the descriptor skipped.
//! 3. The [`Sink`] filters on the descriptor alone, before a byte of
//!    payload is touched.
//! 4. The payload is copied once, from the segment straight into the
//!    sink's buffer, its checksum sum taken in the same pass. A held
//!    payload may instead be handed over where it lies
//!    ([`Sink::emit_in_place`]: the pcap writer queues it for `writev`), its
//!    sum taken by reading it in place. Then `seq` is loaded again after an acquire fence; if
//!    it changed, the chunk was freed (and maybe reused) while we copied:
//!    a torn read, counted as a drop and discarded. Held descriptors
//!    (`FLAG_HELD`) cannot change under us, but the check costs a load and
//!    guards against a server that dropped our holds.
//! 5. After the batch is written to the sink ([`Sink::settle`]), the
//!    consumer index is published to the hold region (release): only then
//!    may the server free the held chunks.
//!
//! Invariants: `consumer <= head` for the head last loaded, and the stored
//! consumer index never decreases except on a resync to `head`.

use std::sync::atomic::{fence, Ordering};

use nta_net::export::proto::{Descriptor, FLAG_HELD};

use crate::hold::HoldRegion;
use crate::ring::Ring;
use crate::segments::SegmentTable;
use crate::validate::{check, Fault, Faults};

/// Where packets go.
pub trait Sink {
    /// Whether this descriptor is wanted (decided before its bytes are read).
    fn wants(&mut self, d: &Descriptor) -> bool;
    /// A buffer of exactly `len` bytes for the next payload.
    fn payload(&mut self, len: usize) -> &mut [u8];
    /// The payload last handed out is complete and good: emit it.
    /// `payload_sum` is its Internet checksum running sum
    /// ([`crate::checksum::add`] from 0), taken while it was copied.
    fn emit(&mut self, d: &Descriptor, payload_sum: u64);
    /// Whether held descriptor `d`'s payload should be handed over where
    /// it lies ([`Sink::emit_in_place`]) rather than copied (default: no).
    fn in_place(&mut self, _d: &Descriptor) -> bool {
        false
    }
    /// A held payload, left in the pool: `len` bytes at `ptr`, with their
    /// checksum sum. They stay mapped and held until the next
    /// [`Sink::settle`] returns, and not after: the sink must be done with
    /// them by then.
    fn emit_in_place(&mut self, _d: &Descriptor, _ptr: *const u8, _len: usize, _payload_sum: u64) {}
    /// Called before the reader publishes a consumer index (which lets the
    /// server free the held chunks below it): finish with every payload
    /// handed over in place.
    fn settle(&mut self) {}
}

struct RingState {
    ring: Ring,
    consumer: u64,
}

/// Running totals of a reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Descriptors looked at.
    pub descriptors: u64,
    /// Packets emitted.
    pub packets: u64,
    /// Payload bytes emitted.
    pub bytes: u64,
    /// Bytes emitted from held chunks (read in place under a hold).
    pub held_bytes_read: u64,
    /// Descriptors the filter skipped.
    pub filtered: u64,
}

/// The rings, the hold region and the mapped segments of one session.
pub struct Reader {
    rings: Vec<RingState>,
    hold: HoldRegion,
    /// Mapped segments.
    pub segments: SegmentTable,
    /// Faults counted so far.
    pub faults: Faults,
    /// Totals so far.
    pub totals: Totals,
    segment_bytes: u64,
    deferred: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("rings", &self.rings.len()).field("totals", &self.totals).finish()
    }
}

impl Reader {
    /// A reader over `rings`, starting at the consumer indexes found in
    /// `hold`; one past `head` or more than a ring behind it is counted as
    /// an index jump and resynced to `head`.
    pub fn new(hold: HoldRegion, rings: Vec<Ring>, segments: SegmentTable, segment_bytes: u64) -> Reader {
        let mut faults = Faults::default();
        let rings = rings
            .into_iter()
            .enumerate()
            .map(|(r, ring)| {
                let head = ring.head();
                let mut consumer = hold.consumer(r);
                if consumer > head || head - consumer > ring.slots() {
                    faults.index_jumps += 1;
                    consumer = head;
                    hold.set_consumer(r, consumer);
                }
                RingState { ring, consumer }
            })
            .collect();
        Reader { rings, hold, segments, faults, totals: Totals::default(), segment_bytes, deferred: false }
    }

    /// Reads every published descriptor, emitting at most `budget`
    /// packets into `sink`; returns the number of descriptors consumed.
    ///
    /// With `defer_unknown`, a descriptor naming an unmapped segment or
    /// another generation stops its ring's walk without being consumed
    /// and [`Reader::deferred`] turns true: the server sends a segment's
    /// Segment message before it publishes anything in it, so the caller
    /// should read the socket and drain again (without deferring, so a
    /// descriptor that is still unknown then is counted and skipped).
    pub fn drain(&mut self, sink: &mut impl Sink, budget: u64, defer_unknown: bool) -> u64 {
        self.deferred = false;
        let mut consumed = 0;
        let mut emitted = 0;
        for r in 0..self.rings.len() {
            let state = &mut self.rings[r];
            let head = state.ring.head();
            let mut consumer = state.consumer;
            if head < consumer || head - consumer > state.ring.slots() {
                self.faults.index_jumps += 1;
                state.consumer = head;
                self.hold.set_consumer(r, head);
                continue;
            }
            while consumer < head && emitted < budget {
                let d = Descriptor::decode(&state.ring.slot(consumer));
                // Orders the payload loads below after the slot copy (the
                // seqlock's first read).
                fence(Ordering::Acquire);
                let index = consumer;
                let checked = check(&d, index, &self.segments, self.segment_bytes);
                if matches!(checked, Err(Fault::UnknownSegment | Fault::Generation)) && defer_unknown {
                    // The Segment message is on the socket already (it is
                    // sent before the first publish); let the caller read it.
                    self.deferred = true;
                    break;
                }
                consumer += 1;
                consumed += 1;
                self.totals.descriptors += 1;
                let segment = match checked {
                    Ok(segment) => segment,
                    Err(fault) => {
                        self.faults.count(fault);
                        continue;
                    }
                };
                if !sink.wants(&d) {
                    self.totals.filtered += 1;
                    continue;
                }
                let held = d.flags & FLAG_HELD != 0;
                let in_place = if held && sink.in_place(&d) {
                    let Some((ptr, sum)) = segment.region.sum_in_place(d.offset as usize, d.len as usize) else {
                        self.faults.count(Fault::OutsideSegment);
                        continue;
                    };
                    Some((ptr, sum))
                } else {
                    None
                };
                let payload_sum = match in_place {
                    Some((_, sum)) => sum,
                    None => {
                        let buf = sink.payload(d.len as usize);
                        let Some(sum) = segment.region.copy_out_summed(d.offset as usize, buf) else {
                            self.faults.count(Fault::OutsideSegment);
                            continue;
                        };
                        sum
                    }
                };
                // The seqlock's second read: a changed seq means the chunk
                // was freed while we read it.
                fence(Ordering::Acquire);
                if state.ring.seq(index) != d.seq {
                    self.faults.torn += 1;
                    continue;
                }
                match in_place {
                    Some((ptr, _)) => sink.emit_in_place(&d, ptr, d.len as usize, payload_sum),
                    None => sink.emit(&d, payload_sum),
                }
                emitted += 1;
                self.totals.packets += 1;
                self.totals.bytes += u64::from(d.len);
                if d.flags & FLAG_HELD != 0 {
                    self.totals.held_bytes_read += u64::from(d.len);
                }
            }
            if consumer != state.consumer {
                // In-place payloads must be written before their holds go.
                sink.settle();
                state.consumer = consumer;
                self.hold.set_consumer(r, consumer);
            }
        }
        consumed
    }

    /// Whether the last [`Reader::drain`] stopped at a descriptor whose
    /// segment may still be announced on the socket.
    pub fn deferred(&self) -> bool {
        self.deferred
    }

    /// Bytes of held descriptors published but not yet consumed.
    pub fn outstanding_held_bytes(&self) -> u64 {
        let mut held = 0;
        for state in &self.rings {
            let head = state.ring.head();
            if head < state.consumer || head - state.consumer > state.ring.slots() {
                continue;
            }
            for index in state.consumer..head {
                let d = Descriptor::decode(&state.ring.slot(index));
                if d.seq == index + 1 && d.flags & FLAG_HELD != 0 {
                    held += u64::from(d.len);
                }
            }
        }
        held
    }

    /// Descriptors the server dropped (rings full), over all rings.
    pub fn server_drops(&self) -> u64 {
        self.rings.iter().map(|s| s.ring.drops()).sum()
    }

    /// Descriptors the server published without a hold (quota reached).
    pub fn server_unheld(&self) -> u64 {
        self.rings.iter().map(|s| s.ring.unheld()).sum()
    }

    /// Releases every hold: moves each consumer index to its ring's head
    /// (the descriptors in between are skipped unread).
    pub fn release_all(&mut self) {
        for (r, state) in self.rings.iter_mut().enumerate() {
            let head = state.ring.head();
            if head >= state.consumer && head - state.consumer <= state.ring.slots() {
                state.consumer = head;
                self.hold.set_consumer(r, head);
            }
        }
    }

    /// The fullest ring's backlog: published but unconsumed descriptors
    /// over its slots (0 to 1; a garbage head counts as full).
    pub fn backlog(&self) -> f64 {
        let mut worst = 0.0f64;
        for state in &self.rings {
            let head = state.ring.head();
            let slots = state.ring.slots().max(1);
            let fill = match head.checked_sub(state.consumer) {
                Some(n) if n <= slots => n as f64 / slots as f64,
                _ => 1.0,
            };
            worst = worst.max(fill);
        }
        worst
    }

    /// Starts the heartbeat thread (see [`crate::hold`]).
    pub fn heartbeat_thread(&self, every: std::time::Duration) -> std::io::Result<crate::hold::Heartbeat> {
        self.hold.heartbeat_thread(every)
    }

    /// Bumps the heartbeat in the hold region.
    pub fn heartbeat(&mut self) {
        self.hold.beat();
    }

    /// Rings read.
    pub fn rings(&self) -> usize {
        self.rings.len()
    }
}
