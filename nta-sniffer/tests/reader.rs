//! The ring reader over private copies of ring, hold and segment memory:
//! garbage descriptors, jumping indexes and torn snapshots are counted and
//! skipped; good descriptors come out byte for byte.

use nta_net::export::proto::*;
use nta_sniffer::hold::HoldRegion;
use nta_sniffer::maps::SharedRegion;
use nta_sniffer::reader::{Reader, Sink};
use nta_sniffer::ring::Ring;
use nta_sniffer::segments::{Segment, SegmentTable};
use nta_sniffer::validate::{check, Fault};

const SLOTS: u32 = 8;
const SEG: usize = 4096;

#[derive(Default)]
struct Collect {
    buf: Vec<u8>,
    got: Vec<(Descriptor, Vec<u8>)>,
    only_port: Option<u16>,
}

impl Sink for Collect {
    fn wants(&mut self, d: &Descriptor) -> bool {
        self.only_port.map_or(true, |p| d.peer_port == p)
    }
    fn payload(&mut self, len: usize) -> &mut [u8] {
        self.buf.resize(len, 0);
        &mut self.buf
    }
    fn emit(&mut self, d: &Descriptor, payload_sum: u64) {
        let want = nta_sniffer::checksum::add(0, &self.buf);
        assert_eq!(
            nta_sniffer::checksum::finish(payload_sum),
            nta_sniffer::checksum::finish(want),
            "the copy's checksum sum"
        );
        self.got.push((*d, self.buf.clone()));
    }
}

fn ring_bytes_with(head: u64, slots: &[(u64, Descriptor)]) -> Vec<u8> {
    let mut b = vec![0u8; ring_bytes(SLOTS as usize)];
    b[0..8].copy_from_slice(&RING_MAGIC.to_le_bytes());
    b[RING_SLOTS..RING_SLOTS + 4].copy_from_slice(&SLOTS.to_le_bytes());
    b[RING_SLOT_SIZE..RING_SLOT_SIZE + 4].copy_from_slice(&(SLOT_BYTES as u32).to_le_bytes());
    b[RING_HEAD..RING_HEAD + 8].copy_from_slice(&head.to_le_bytes());
    for (index, d) in slots {
        let at = RING_HEADER + (*index % u64::from(SLOTS)) as usize * SLOT_BYTES;
        b[at..at + SLOT_BYTES].copy_from_slice(&d.encode());
    }
    b
}

fn desc(index: u64, segment: u32, generation: u64, offset: u32, len: u32) -> Descriptor {
    Descriptor {
        seq: index + 1,
        generation,
        segment,
        offset,
        len,
        flags: FLAG_TCP,
        peer_port: 1000 + index as u16,
        ..Default::default()
    }
}

fn segments() -> SegmentTable {
    let bytes: Vec<u8> = (0..SEG).map(|i| i as u8).collect();
    let mut t = SegmentTable::new();
    t.insert(1, Segment { generation: 5, backing: 0, region: SharedRegion::from_bytes(&bytes).unwrap() });
    t
}

fn reader(ring: Vec<u8>, consumer: u64) -> Reader {
    let mut hold = vec![0u8; HOLD_BYTES];
    hold[HOLD_CONSUMER..HOLD_CONSUMER + 8].copy_from_slice(&consumer.to_le_bytes());
    let hold = HoldRegion::new(SharedRegion::from_bytes(&hold).unwrap()).unwrap();
    let ring = Ring::new(SharedRegion::from_bytes(&ring).unwrap(), SLOTS).unwrap();
    Reader::new(hold, vec![ring], segments(), SEG as u64)
}

#[test]
fn check_rejects_each_kind_of_garbage() {
    let t = segments();
    let seg = SEG as u64;
    // The segment a good descriptor lies in, by its generation.
    let check = |d: &Descriptor, index: u64, t: &SegmentTable, seg: u64| check(d, index, t, seg).map(|s| s.generation);
    assert_eq!(check(&desc(0, 1, 5, 0, 10), 0, &t, seg), Ok(5));
    assert_eq!(check(&desc(0, 1, 5, 0, 10), 1, &t, seg), Err(Fault::Stale));
    assert_eq!(check(&Descriptor { seq: 0, ..desc(0, 1, 5, 0, 10) }, 0, &t, seg), Err(Fault::Invalidated));
    assert_eq!(check(&desc(0, 2, 5, 0, 10), 0, &t, seg), Err(Fault::UnknownSegment));
    assert_eq!(check(&desc(0, 1, 6, 0, 10), 0, &t, seg), Err(Fault::Generation));
    assert_eq!(check(&desc(0, 1, 5, 0, 0), 0, &t, seg), Err(Fault::AbsurdLength));
    assert_eq!(check(&desc(0, 1, 5, 0, u32::MAX), 0, &t, seg), Err(Fault::AbsurdLength));
    assert_eq!(check(&desc(0, 1, 5, SEG as u32 - 4, 8), 0, &t, seg), Err(Fault::OutsideSegment));
    assert_eq!(check(&desc(0, 1, 5, u32::MAX, 8), 0, &t, seg), Err(Fault::OutsideSegment));
    assert_eq!(check(&Descriptor { seq: u64::MAX, ..desc(0, 1, 5, 0, 8) }, u64::MAX, &t, seg), Err(Fault::Stale));
}

#[test]
fn good_descriptors_come_out_and_garbage_is_counted() {
    let ring = ring_bytes_with(
        6,
        &[
            (0, desc(0, 1, 5, 100, 16)),
            (1, desc(1, 9, 5, 0, 16)),
            (2, desc(2, 1, 5, 4090, 16)),
            (3, desc(3, 1, 4, 0, 16)),
            (4, Descriptor { seq: 99, ..desc(4, 1, 5, 0, 16) }),
            (5, desc(5, 1, 5, 7, 3)),
        ],
    );
    let mut r = reader(ring, 0);
    let mut sink = Collect::default();
    assert_eq!(r.drain(&mut sink, u64::MAX, false), 6);
    let got: Vec<_> = sink.got.iter().map(|(d, b)| (d.offset, b.clone())).collect();
    assert_eq!(got, vec![(100, (100..116).map(|i| i as u8).collect()), (7, vec![7, 8, 9])]);
    assert_eq!((r.faults.unknown_segment, r.faults.outside_segment, r.faults.generation, r.faults.stale), (1, 1, 1, 1));
    assert_eq!(r.totals.packets, 2);
    // Nothing new: nothing read again.
    assert_eq!(r.drain(&mut sink, u64::MAX, false), 0);
}

#[test]
fn deferring_stops_at_an_unknown_segment_without_consuming_it() {
    let ring = ring_bytes_with(2, &[(0, desc(0, 1, 5, 0, 4)), (1, desc(1, 2, 1, 0, 4))]);
    let mut r = reader(ring, 0);
    let mut sink = Collect::default();
    assert_eq!(r.drain(&mut sink, u64::MAX, true), 1);
    assert!(r.deferred());
    r.segments.insert(2, Segment { generation: 1, backing: 1, region: SharedRegion::from_bytes(&[9; 64]).unwrap() });
    assert_eq!(r.drain(&mut sink, u64::MAX, true), 1);
    assert!(!r.deferred());
    assert_eq!(sink.got[1].1, vec![9; 4]);
    assert_eq!(r.faults.invalid(), 0);
}

#[test]
fn heads_that_jump_are_counted_and_resynced() {
    let mut sink = Collect::default();
    // More than a ring ahead of the consumer index.
    let mut r = reader(ring_bytes_with(1000, &[]), 0);
    assert_eq!((r.faults.index_jumps, r.drain(&mut sink, u64::MAX, false)), (1, 0));
    // Behind the consumer index, and absurdly far ahead.
    let mut r = reader(ring_bytes_with(3, &[]), 5);
    assert_eq!((r.faults.index_jumps, r.drain(&mut sink, u64::MAX, false)), (1, 0));
    let mut r = reader(ring_bytes_with(u64::MAX, &[]), 5);
    assert_eq!((r.faults.index_jumps, r.drain(&mut sink, u64::MAX, false)), (1, 0));
    // A sane consumer index in the middle of the ring is kept.
    let mut r = reader(ring_bytes_with(3, &[(2, desc(2, 1, 5, 0, 1))]), 2);
    assert_eq!((r.faults.index_jumps, r.drain(&mut sink, u64::MAX, false)), (0, 1));
    assert!(sink.got.is_empty() || sink.got.len() == 1);
}

#[test]
fn the_budget_and_the_filter_are_honoured() {
    let slots: Vec<_> = (0..5).map(|i| (i, desc(i, 1, 5, i as u32, 2))).collect();
    let mut r = reader(ring_bytes_with(5, &slots), 0);
    let mut sink = Collect { only_port: Some(1003), ..Default::default() };
    r.drain(&mut sink, 1, false);
    assert_eq!(sink.got.len(), 1);
    assert_eq!(sink.got[0].0.peer_port, 1003);
    assert_eq!(r.totals.filtered, 3);
    sink.only_port = None;
    r.drain(&mut sink, 10, false);
    assert_eq!(sink.got.len(), 2);
}

#[test]
fn bad_ring_headers_are_refused() {
    let good = ring_bytes_with(0, &[]);
    assert!(Ring::new(SharedRegion::from_bytes(&good).unwrap(), SLOTS).is_ok());
    assert!(Ring::new(SharedRegion::from_bytes(&good).unwrap(), SLOTS * 2).is_err());
    assert!(Ring::new(SharedRegion::from_bytes(&good[..RING_HEADER]).unwrap(), SLOTS).is_err());
    let mut bad = good.clone();
    bad[0] ^= 1;
    assert!(Ring::new(SharedRegion::from_bytes(&bad).unwrap(), SLOTS).is_err());
    let mut bad = good;
    bad[RING_SLOT_SIZE] = 64;
    assert!(Ring::new(SharedRegion::from_bytes(&bad).unwrap(), SLOTS).is_err());
    assert!(Ring::new(SharedRegion::from_bytes(&[0; 8]).unwrap(), 0).is_err());
}

#[test]
fn shared_region_accesses_outside_are_refused() {
    let r = SharedRegion::from_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).unwrap();
    let mut out = [0u8; 11];
    assert!(r.copy_out(0, &mut out));
    assert_eq!(out[10], 11);
    assert!(!r.copy_out(1, &mut out));
    assert!(!r.copy_out(usize::MAX, &mut out[..2]));
    assert_eq!(r.load_u64(8, std::sync::atomic::Ordering::Relaxed), None);
    assert_eq!(r.load_u64(3, std::sync::atomic::Ordering::Relaxed), None);
    let mut odd = [0u8; 5];
    assert!(r.copy_out(3, &mut odd));
    assert_eq!(odd, [4, 5, 6, 7, 8]);
}
