//! Fragmentation maps: granules as pixels, like the graphs of seed 002.
//!
//! Each 4 KiB page is one column of 128 pixels, one per 32-byte granule, the
//! page's first granule at the top. Pages run left to right in bands of
//! [`PAGES_PER_BAND`] columns, bands top to bottom with a one-pixel dark rule
//! between them. A granule is red when a live block covers it (its requested
//! length, rounded up to granules), green when it is free or lost to rounding,
//! grey when its page does not belong to the allocator.
//!
//! Invariant: `used + free + outside == pages · 128`.

use std::io::BufWriter;
use std::path::Path;

/// Bytes per granule (one pixel).
pub const MAP_GRANULE_BYTES: usize = 32;
/// Bytes per page (one column).
pub const MAP_PAGE_BYTES: usize = 4096;
/// Granules per page (pixels per column).
pub const GRANULES_PER_PAGE: usize = MAP_PAGE_BYTES / MAP_GRANULE_BYTES;
/// Columns per band.
pub const PAGES_PER_BAND: usize = 512;

const FREE: u8 = 0;
const USED: u8 = 1;
const OUTSIDE: u8 = 2;

const RGB_FREE: [u8; 3] = [40, 170, 60];
const RGB_USED: [u8; 3] = [210, 40, 40];
const RGB_OUTSIDE: [u8; 3] = [128, 128, 128];
const RGB_RULE: [u8; 3] = [20, 20, 20];

/// The state of every granule of some regions.
#[derive(Clone, Debug)]
pub struct FragMap {
    /// One byte per granule: FREE, USED or OUTSIDE.
    cells: Vec<u8>,
    pages: usize,
}

impl FragMap {
    /// Maps `regions` (start, length; page-aligned) in address order, marking
    /// the granules of `live_blocks` (address, length) used and the pages for
    /// which `owns_page` is false outside.
    pub fn build(
        regions: &[(usize, usize)],
        owns_page: impl Fn(usize) -> bool,
        live_blocks: &[(usize, usize)],
    ) -> Self {
        let mut regions = regions.to_vec();
        regions.sort_unstable();
        // First page index of each region in the map.
        let mut first_page = Vec::with_capacity(regions.len());
        let mut pages = 0;
        for &(_, len) in &regions {
            first_page.push(pages);
            pages += len.div_ceil(MAP_PAGE_BYTES);
        }
        let mut cells = vec![FREE; pages * GRANULES_PER_PAGE];
        for (index, &(start, len)) in regions.iter().enumerate() {
            for page in 0..len.div_ceil(MAP_PAGE_BYTES) {
                if !owns_page(start + page * MAP_PAGE_BYTES) {
                    let cell = (first_page[index] + page) * GRANULES_PER_PAGE;
                    cells[cell..cell + GRANULES_PER_PAGE].fill(OUTSIDE);
                }
            }
        }
        for &(address, len) in live_blocks {
            // The last region starting at or before the block.
            let index = regions.partition_point(|&(start, _)| start <= address);
            let Some(index) = index.checked_sub(1) else {
                continue;
            };
            let (start, region_len) = regions[index];
            let offset = address - start;
            if offset >= region_len {
                continue;
            }
            let end = (offset + len.max(1)).min(region_len);
            let first = first_page[index] * GRANULES_PER_PAGE + offset / MAP_GRANULE_BYTES;
            let last = first_page[index] * GRANULES_PER_PAGE + end.div_ceil(MAP_GRANULE_BYTES);
            cells[first..last].fill(USED);
        }
        Self { cells, pages }
    }

    /// Pages in the map.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Granules covered by live blocks.
    pub fn used_granules(&self) -> usize {
        self.cells.iter().filter(|&&cell| cell == USED).count()
    }

    /// Granules free (or lost to rounding) in owned pages.
    pub fn free_granules(&self) -> usize {
        self.cells.iter().filter(|&&cell| cell == FREE).count()
    }

    /// Image size in pixels (width, height).
    pub fn image_size(&self) -> (usize, usize) {
        let bands = self.pages.div_ceil(PAGES_PER_BAND).max(1);
        let width = self.pages.clamp(1, PAGES_PER_BAND);
        (width, bands * (GRANULES_PER_PAGE + 1) - 1)
    }

    /// The image as RGB rows.
    pub fn rgb(&self) -> Vec<u8> {
        let (width, height) = self.image_size();
        let mut pixels = vec![0u8; width * height * 3];
        for y in 0..height {
            let band = y / (GRANULES_PER_PAGE + 1);
            let granule = y % (GRANULES_PER_PAGE + 1);
            for x in 0..width {
                let page = band * PAGES_PER_BAND + x;
                let rgb = if granule == GRANULES_PER_PAGE {
                    RGB_RULE
                } else if page >= self.pages {
                    RGB_OUTSIDE
                } else {
                    match self.cells[page * GRANULES_PER_PAGE + granule] {
                        USED => RGB_USED,
                        FREE => RGB_FREE,
                        _ => RGB_OUTSIDE,
                    }
                };
                let at = (y * width + x) * 3;
                pixels[at..at + 3].copy_from_slice(&rgb);
            }
        }
        pixels
    }

    /// Writes the map as a PNG file.
    pub fn write_png(&self, path: &Path) -> std::io::Result<()> {
        let (width, height) = self.image_size();
        let file = std::fs::File::create(path)?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer.write_image_data(&self.rgb()).map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_paint_their_granules() {
        let base = 1 << 20;
        let regions = [(base, 2 * MAP_PAGE_BYTES)];
        let live = [(base, 33), (base + MAP_PAGE_BYTES, 4096)];
        let map = FragMap::build(&regions, |_| true, &live);
        assert_eq!(map.pages(), 2);
        assert_eq!(map.used_granules(), 2 + GRANULES_PER_PAGE);
        assert_eq!(map.free_granules(), GRANULES_PER_PAGE - 2);
    }

    #[test]
    fn unowned_pages_are_outside() {
        let regions = [(0, 3 * MAP_PAGE_BYTES)];
        let map = FragMap::build(&regions, |address| address != MAP_PAGE_BYTES, &[]);
        assert_eq!(map.free_granules(), 2 * GRANULES_PER_PAGE);
    }

    #[test]
    fn png_round_trips_its_size() {
        let regions = [(0, 600 * MAP_PAGE_BYTES)];
        let map = FragMap::build(&regions, |_| true, &[(0, 100)]);
        let path = std::env::temp_dir().join(format!("nta-bench-map-{}.png", std::process::id()));
        map.write_png(&path).unwrap();
        let decoder = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let reader = decoder.read_info().unwrap();
        assert_eq!(reader.info().width as usize, PAGES_PER_BAND);
        assert_eq!(reader.info().height as usize, 2 * (GRANULES_PER_PAGE + 1) - 1);
        std::fs::remove_file(path).unwrap();
    }
}
