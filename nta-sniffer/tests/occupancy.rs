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
