//! The occupancy file parser: garbage is an error, a valid file gives the
//! right figures, and the map renders a PNG that `png` decodes.

use nta_net::export::proto::*;
use nta_sniffer::occupancy::Occupancy;

fn file(records: usize, free_words: &[(usize, u64)]) -> Vec<u8> {
    let mut b = vec![0u8; OCC_HEADER + records * OCC_RECORD];
    b[0..8].copy_from_slice(&OCC_MAGIC.to_le_bytes());
    b[8..12].copy_from_slice(&(records as u32).to_le_bytes());
    b[12..16].copy_from_slice(&(OCC_RECORD as u32).to_le_bytes());
    for r in 0..records {
        let at = OCC_HEADER + r * OCC_RECORD;
        b[at + 4..at + 8].copy_from_slice(&(r as u32).to_le_bytes());
        for &(w, v) in free_words {
            b[at + 16 + 8 * w..at + 24 + 8 * w].copy_from_slice(&v.to_le_bytes());
        }
    }
    b
}

#[test]
fn garbage_is_refused() {
    assert!(Occupancy::parse(b"").is_err());
    assert!(Occupancy::parse(&[0xAB; 4096]).is_err());
    let good = file(2, &[]);
    assert!(Occupancy::parse(&good).is_ok());
    assert!(Occupancy::parse(&good[..good.len() - 1]).is_err());
    let mut huge = good.clone();
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(Occupancy::parse(&huge).is_err());
    let mut small_record = good.clone();
    small_record[12..16].copy_from_slice(&16u32.to_le_bytes());
    assert!(Occupancy::parse(&small_record).is_err());
    let mut big_record = good;
    big_record[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(Occupancy::parse(&big_record).is_err());
}

#[test]
fn figures_and_the_png() {
    // Two free runs: words 0..2 (128 granules) and word 10 (64 granules).
    let occ = Occupancy::parse(&file(1, &[(0, u64::MAX), (1, u64::MAX), (10, u64::MAX)])).unwrap();
    let r = &occ.records[0];
    assert_eq!(r.free_granules(), 192);
    assert_eq!(r.largest_free_run(), 128);
    let s = occ.shards()[0];
    assert_eq!((s.free_bytes, s.largest_free_bytes), (192 * 32, 128 * 32));
    assert!((s.fragmentation() - (1.0 - 128.0 / 192.0)).abs() < 1e-9);
    let mut png_bytes = Vec::new();
    let (title, _) = nta_sniffer::map_png::render(&occ, &mut png_bytes).unwrap();
    assert!(title.contains("1 nodes"), "{title}");
    let mut reader = png::Decoder::new(&png_bytes[..]).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.width, 1024);
    // The first node row starts free (green): pixel (0, ROWS_Y).
    let at = (nta_sniffer::map_png::ROWS_Y * info.width as usize) * 3;
    assert_eq!(&pixels[at..at + 3], &[40, 160, 80]);
    // Column 3 is fully used (red).
    assert_eq!(&pixels[at + 9..at + 12], &[200, 50, 50]);
}

#[test]
fn held_granules_are_counted_and_drawn_blue() {
    // A record with the held bitmap: word 3 (granules 192..256, pixel
    // column 3) is held; words 0..2 are free; the rest is used.
    let mut b = vec![0u8; OCC_HEADER + OCC_RECORD_HELD];
    b[0..8].copy_from_slice(&OCC_MAGIC.to_le_bytes());
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..16].copy_from_slice(&(OCC_RECORD_HELD as u32).to_le_bytes());
    let at = OCC_HEADER;
    for w in 0..2 {
        b[at + 16 + 8 * w..at + 24 + 8 * w].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    let held_at = at + OCC_RECORD + 8 * 3;
    b[held_at..held_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    // A held bit over a free granule (garbage) is not counted as held.
    b[at + OCC_RECORD..at + OCC_RECORD + 8].copy_from_slice(&1u64.to_le_bytes());
    let occ = Occupancy::parse(&b).unwrap();
    assert_eq!(occ.records[0].held_granules(), 64);
    assert_eq!(occ.shards()[0].held_bytes, 64 * 32);
    let mut png_bytes = Vec::new();
    let (title, legend) = nta_sniffer::map_png::render(&occ, &mut png_bytes).unwrap();
    assert!(title.contains("held by readers") && legend.contains("blue = held"), "{title} / {legend}");
    let mut reader = png::Decoder::new(&png_bytes[..]).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let row = (nta_sniffer::map_png::ROWS_Y * info.width as usize) * 3;
    assert_eq!(&pixels[row + 9..row + 12], &[60, 110, 230], "column 3 is held");
    assert_eq!(&pixels[row + 12..row + 15], &[200, 50, 50], "column 4 is used");
    // A record without the bitmap (an older server) has nothing held.
    let old = Occupancy::parse(&file(1, &[])).unwrap();
    assert!(old.records[0].held.is_empty() && old.records[0].held_granules() == 0);
}
