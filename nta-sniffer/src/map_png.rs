//! `map`: granule occupancy as a PNG, in the manner of the NTA
//! fragmentation graphs.
//!
//! # Design notes
//!
//! One row per node (segment record), [`ROW_PX`] pixels high with a
//! one-pixel gap; one pixel column per [`GRANULES_PER_PX`] granules
//! (65536 granules → 1024 columns). A column's colour blends from free
//! (green) to used (red) by the fraction of its granules in use, and
//! toward held (blue) by the fraction in chunks a reader holds (the
//! occupancy file's held bitmap; an older server sends none). On top,
//! the title (with the utilisation) in a small built-in font (`font`) and
//! a bar of the overall utilisation; at the bottom, a legend: colour
//! swatches with their labels. The title and legend text also go into the
//! PNG's `tEXt` chunks (`Title`, `Description`) and are returned for
//! stdout.

use std::io::Write;

use nta_net::export::proto::OCC_GRANULES;

use crate::font;
use crate::occupancy::{NodeRecord, Occupancy};

/// Granules per pixel column.
pub const GRANULES_PER_PX: usize = 64;
/// Height of a node's row.
pub const ROW_PX: usize = 6;
const WIDTH: usize = OCC_GRANULES / GRANULES_PER_PX;
const BAND_PX: usize = 12;
const TITLE_PX: usize = 18;
const LEGEND_PX: usize = 20;
/// The y of the first node row (below the title and the utilisation bar).
pub const ROWS_Y: usize = TITLE_PX + BAND_PX;
const TEXT: [u8; 3] = [230, 230, 230];
const FREE: [u8; 3] = [40, 160, 80];
const USED: [u8; 3] = [200, 50, 50];
const HELD: [u8; 3] = [60, 110, 230];
const BACKGROUND: [u8; 3] = [24, 24, 24];

/// The colour of a column with these fractions of used (not held) and
/// held granules; the rest is free.
fn blend(used: f64, held: f64) -> [u8; 3] {
    let free = 1.0 - used - held;
    let mix =
        |i: usize| (f64::from(FREE[i]) * free + f64::from(USED[i]) * used + f64::from(HELD[i]) * held).round() as u8;
    [mix(0), mix(1), mix(2)]
}

fn row_colours(r: &NodeRecord) -> Vec<[u8; 3]> {
    (0..WIDTH)
        .map(|x| {
            let (mut free, mut held) = (0, 0);
            for g in x * GRANULES_PER_PX..(x + 1) * GRANULES_PER_PX {
                if r.is_free(g) {
                    free += 1;
                } else if r.is_held(g) {
                    held += 1;
                }
            }
            let px = GRANULES_PER_PX as f64;
            blend((GRANULES_PER_PX - free - held) as f64 / px, held as f64 / px)
        })
        .collect()
}

/// Title and legend of a picture of `occ`.
pub fn caption(occ: &Occupancy) -> (String, String) {
    let used: u64 = occ.records.iter().map(|r| r.used_granules()).sum();
    let total = (occ.records.len() * OCC_GRANULES) as u64;
    let pct = if total == 0 { 0.0 } else { 100.0 * used as f64 / total as f64 };
    let held: u64 = occ.records.iter().map(|r| r.held_granules()).sum();
    let held_pct = if total == 0 { 0.0 } else { 100.0 * held as f64 / total as f64 };
    let title = format!(
        "NTA pool occupancy: {} nodes, {pct:.1}% of granules used, {held_pct:.1}% held by readers",
        occ.records.len()
    );
    let legend = format!(
        "one row per node; one pixel per {GRANULES_PER_PX} granules of 32 bytes; red = used, blue = held by a \
         reader, green = free, shades = mixed; top bar = utilisation"
    );
    (title, legend)
}

/// Writes the PNG of `occ` to `out`; returns (title, legend).
pub fn render(occ: &Occupancy, out: impl Write) -> Result<(String, String), String> {
    let (title, legend) = caption(occ);
    let rows = occ.records.len();
    let rows_y = ROWS_Y;
    let height = rows_y + rows * (ROW_PX + 1) + LEGEND_PX;
    let mut pixels = vec![BACKGROUND; WIDTH * height];
    font::draw(&mut pixels, WIDTH, 8, (TITLE_PX - font::HEIGHT) / 2, &title, TEXT);
    let used: u64 = occ.records.iter().map(|r| r.used_granules()).sum();
    let total = (rows * OCC_GRANULES).max(1) as u64;
    let used_px = (WIDTH as u64 * used / total) as usize;
    for y in TITLE_PX + 2..TITLE_PX + BAND_PX - 2 {
        for x in 0..WIDTH {
            pixels[y * WIDTH + x] = if x < used_px { USED } else { FREE };
        }
    }
    for (i, r) in occ.records.iter().enumerate() {
        let colours = row_colours(r);
        for dy in 0..ROW_PX {
            let y = rows_y + i * (ROW_PX + 1) + dy;
            pixels[y * WIDTH..(y + 1) * WIDTH].copy_from_slice(&colours);
        }
    }
    let legend_y = rows_y + rows * (ROW_PX + 1) + (LEGEND_PX - font::HEIGHT) / 2;
    let mut x = 8;
    let labels = [(USED, "used"), (HELD, "held"), (blend(0.5, 0.0), "partly used"), (FREE, "free")];
    for (colour, label) in labels {
        for y in legend_y..legend_y + font::HEIGHT {
            for px in x..x + 16 {
                pixels[y * WIDTH + px] = colour;
            }
        }
        x = font::draw(&mut pixels, WIDTH, x + 22, legend_y, label, TEXT) + 24;
    }
    let scale = format!("1 row per 2 MiB node, 1 pixel = {GRANULES_PER_PX} granules of 32 B");
    font::draw(&mut pixels, WIDTH, x + 16, legend_y, &scale, TEXT);
    let mut encoder = png::Encoder::new(out, WIDTH as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.add_text_chunk("Title".into(), title.clone()).map_err(|e| e.to_string())?;
    encoder.add_text_chunk("Description".into(), legend.clone()).map_err(|e| e.to_string())?;
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    let data: Vec<u8> = pixels.into_iter().flatten().collect();
    writer.write_image_data(&data).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok((title, legend))
}
