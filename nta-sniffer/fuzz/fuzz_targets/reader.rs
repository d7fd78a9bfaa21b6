//! Feeds random bytes to the sniffer's parsing and validation: ring memory
//! (with a valid header, so the slots and indexes are what gets fuzzed, and
//! raw, so the header checks are), occupancy files, socket messages, the
//! stats text and filter expressions. Nothing may panic or read out of
//! bounds (AddressSanitizer watches the reads).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nta_net::export::proto::*;
use nta_sniffer::hold::HoldRegion;
use nta_sniffer::maps::SharedRegion;
use nta_sniffer::reader::{Reader, Sink};
use nta_sniffer::ring::Ring;
use nta_sniffer::segments::{Segment, SegmentTable};

const SLOTS: u32 = 8;

struct Discard(Vec<u8>, u64);

impl Sink for Discard {
    fn wants(&mut self, d: &Descriptor) -> bool {
        d.local_port % 7 != 3
    }
    fn payload(&mut self, len: usize) -> &mut [u8] {
        self.0.resize(len, 0);
        &mut self.0
    }
    fn emit(&mut self, _: &Descriptor, _: u64) {
        self.1 += self.0.iter().map(|&b| u64::from(b)).sum::<u64>();
    }
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    data.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

fn ring_with_header(data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; ring_bytes(SLOTS as usize)];
    b[0..8].copy_from_slice(&RING_MAGIC.to_le_bytes());
    b[RING_SLOTS..RING_SLOTS + 4].copy_from_slice(&SLOTS.to_le_bytes());
    b[RING_SLOT_SIZE..RING_SLOT_SIZE + 4].copy_from_slice(&(SLOT_BYTES as u32).to_le_bytes());
    // Small heads are likelier to be valid; the rest of the range is the
    // garbage case.
    let head = u64_at(data, 0) % 32;
    let head = if data.first().is_some_and(|&b| b & 0x80 != 0) { u64_at(data, 0) } else { head };
    b[RING_HEAD..RING_HEAD + 8].copy_from_slice(&head.to_le_bytes());
    let slots = data.get(16..).unwrap_or(&[]);
    let n = slots.len().min(SLOTS as usize * SLOT_BYTES);
    b[RING_HEADER..RING_HEADER + n].copy_from_slice(&slots[..n]);
    b
}

fn drain(ring_bytes: &[u8], consumer: u64) {
    let mut hold = vec![0u8; HOLD_BYTES];
    hold[HOLD_CONSUMER..HOLD_CONSUMER + 8].copy_from_slice(&consumer.to_le_bytes());
    let Ok(hold) = HoldRegion::new(SharedRegion::from_bytes(&hold).unwrap()) else { return };
    let Ok(ring) = Ring::new(SharedRegion::from_bytes(ring_bytes).unwrap(), SLOTS) else { return };
    let mut segments = SegmentTable::new();
    for (slot, len) in [(0u32, 4096usize), (1, 100), (2, 1)] {
        let bytes = vec![slot as u8; len];
        segments.insert(slot, Segment { generation: 1, backing: 0, region: SharedRegion::from_bytes(&bytes).unwrap() });
    }
    let mut reader = Reader::new(hold, vec![ring], segments, 4096);
    let mut sink = Discard(Vec::new(), 0);
    reader.drain(&mut sink, u64::MAX, true);
    reader.drain(&mut sink, 3, false);
    reader.drain(&mut sink, u64::MAX, false);
    let _ = reader.outstanding_held_bytes();
    reader.release_all();
    assert!(reader.totals.packets <= reader.totals.descriptors);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 6 {
        0 => drain(&ring_with_header(rest), u64_at(rest, 8) % 40),
        1 => drain(rest, u64_at(rest, 8)),
        2 => {
            if let Ok(occ) = nta_sniffer::occupancy::Occupancy::parse(rest) {
                for s in occ.shards() {
                    let _ = s.fragmentation();
                }
                let _ = nta_sniffer::map_png::render(&occ, std::io::sink());
            }
        }
        3 => {
            let _ = nta_sniffer::client::decode_event(rest, Vec::new());
            if let Some(hello) = Hello::decode(rest) {
                let _ = nta_sniffer::client::check_hello(&hello, MODE_HOLD);
            }
        }
        4 => {
            let text = String::from_utf8_lossy(rest);
            let _ = nta_sniffer::stats::Stats::parse(&text);
            if let Ok(f) = nta_sniffer::filter::Filter::parse(&text) {
                let _ = f.matches(&Descriptor::default());
            }
        }
        _ => {
            // An occupancy file with a valid header and fuzzed records.
            let mut b = vec![0u8; OCC_HEADER];
            b[0..8].copy_from_slice(&OCC_MAGIC.to_le_bytes());
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
            b[12..16].copy_from_slice(&(OCC_RECORD as u32).to_le_bytes());
            b.resize(OCC_HEADER + OCC_RECORD, 0);
            let n = rest.len().min(OCC_RECORD);
            b[OCC_HEADER..OCC_HEADER + n].copy_from_slice(&rest[..n]);
            let occ = nta_sniffer::occupancy::Occupancy::parse(&b).expect("a valid header parses");
            let _ = occ.shards();
        }
    }
});
