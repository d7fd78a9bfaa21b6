//! The occupancy file: which granules of each segment are free.
//!
//! # Design notes
//!
//! Layout (proto.rs): an [`OCC_HEADER`]-byte header (magic u64 at 0, node
//! count u32 at 8, record size u32 at 12), then one record per mapped
//! segment: segment u32, owner shard u32 (`u32::MAX`: none), backing u32,
//! reserved u32, the free bitmap (one bit per 32-byte granule), the start
//! bitmap, the page-node bitmap, as little-endian u64 words; a record of
//! at least [`OCC_RECORD_HELD`] bytes then has the held bitmap (granules of
//! chunks some reader holds now). A shorter record (an older server) has
//! none: [`NodeRecord::held`] is then empty and nothing reads as held.
//!
//! [`Occupancy::parse`] validates before it reads: the magic, a record
//! size of at least [`OCC_RECORD`] (a larger one is stepped over, so a
//! later version may append fields), and `header + count * record_size`
//! within the bytes (checked arithmetic). Garbage is an `Err`, never a
//! panic. The bytes are a private copy (see [`read`]), so parsing forms
//! ordinary slices.
//!
//! Figures: per record, free granules are the set bits of the free bitmap;
//! in use is the rest; the largest free extent is the longest run of set
//! bits (runs never cross records: segments are not contiguous).
//! Per shard, fragmentation = 1 − largest_free / free (0 when nothing is
//! free).

use std::os::fd::OwnedFd;

use nta_net::export::proto::{OCC_GRANULES, OCC_HEADER, OCC_MAGIC, OCC_PAGES, OCC_RECORD, OCC_RECORD_HELD};

use crate::maps::SharedRegion;
use crate::sys;

/// Bytes per granule.
pub const GRANULE_BYTES: u64 = 32;

/// Largest occupancy file read (4096 segments' worth).
pub const MAX_OCCUPANCY_BYTES: u64 = (OCC_HEADER + 4096 * OCC_RECORD_HELD) as u64;

/// One segment's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// Segment slot.
    pub segment: u32,
    /// Owner shard (`None`: no owner).
    pub owner_shard: Option<u32>,
    /// 0 shared memory, 1 hugetlb, 2 private.
    pub backing: u32,
    /// Free bitmap, one bit per granule.
    pub free: Vec<u64>,
    /// Start bitmap (first granule of each extent).
    pub start: Vec<u64>,
    /// Page-node bitmap, one bit per 4 KiB page.
    pub pages: Vec<u64>,
    /// Held bitmap, one bit per granule (empty: the server sent none).
    pub held: Vec<u64>,
}

impl NodeRecord {
    /// Whether granule `g` is free.
    pub fn is_free(&self, g: usize) -> bool {
        self.free.get(g / 64).is_some_and(|w| w >> (g % 64) & 1 == 1)
    }

    /// Whether granule `g` lies in a chunk a reader holds.
    pub fn is_held(&self, g: usize) -> bool {
        self.held.get(g / 64).is_some_and(|w| w >> (g % 64) & 1 == 1)
    }

    /// Held granules (in use and held; a held bit over a free granule, which
    /// an honest server never sends, is not counted).
    pub fn held_granules(&self) -> u64 {
        self.held.iter().zip(&self.free).map(|(h, f)| u64::from((h & !f).count_ones())).sum()
    }

    /// Free granules.
    pub fn free_granules(&self) -> u64 {
        self.free.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Granules in use.
    pub fn used_granules(&self) -> u64 {
        OCC_GRANULES as u64 - self.free_granules()
    }

    /// The longest run of free granules.
    pub fn largest_free_run(&self) -> u64 {
        let (mut best, mut run) = (0u64, 0u64);
        for &w in &self.free {
            if w == u64::MAX {
                run += 64;
                continue;
            }
            for bit in 0..64 {
                if w >> bit & 1 == 1 {
                    run += 1;
                } else {
                    best = best.max(run);
                    run = 0;
                }
            }
        }
        best.max(run)
    }

    /// Pages marked as page nodes.
    pub fn page_nodes(&self) -> u64 {
        self.pages.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// A parsed occupancy file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// One record per mapped segment.
    pub records: Vec<NodeRecord>,
}

fn words(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Occupancy {
    /// Parses and validates an occupancy file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Occupancy, String> {
        let magic = bytes.get(0..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        if magic != Some(OCC_MAGIC) {
            return Err("occupancy file: wrong magic".into());
        }
        let count = u32_at(bytes, 8).ok_or("occupancy file: short header")? as usize;
        let record = u32_at(bytes, 12).ok_or("occupancy file: short header")? as usize;
        if bytes.len() < OCC_HEADER {
            return Err("occupancy file: short header".into());
        }
        if record < OCC_RECORD {
            return Err(format!("occupancy file: records of {record} bytes (at least {OCC_RECORD})"));
        }
        let needed = count.checked_mul(record).and_then(|b| b.checked_add(OCC_HEADER));
        if needed.map_or(true, |n| n > bytes.len()) {
            return Err(format!("occupancy file: {count} records of {record} bytes do not fit in {}", bytes.len()));
        }
        let bitmap = OCC_GRANULES / 8;
        let records = (0..count)
            .map(|i| {
                let r = &bytes[OCC_HEADER + i * record..OCC_HEADER + (i + 1) * record];
                let owner = u32_at(r, 4).unwrap_or(u32::MAX);
                NodeRecord {
                    segment: u32_at(r, 0).unwrap_or(0),
                    owner_shard: (owner != u32::MAX).then_some(owner),
                    backing: u32_at(r, 8).unwrap_or(0),
                    free: words(&r[16..16 + bitmap]),
                    start: words(&r[16 + bitmap..16 + 2 * bitmap]),
                    pages: words(&r[16 + 2 * bitmap..16 + 2 * bitmap + OCC_PAGES / 8]),
                    held: r.get(OCC_RECORD..OCC_RECORD_HELD).map_or_else(Vec::new, words),
                }
            })
            .collect();
        Ok(Occupancy { records })
    }

    /// Per-shard figures, ordered by shard (no owner last).
    pub fn shards(&self) -> Vec<ShardFigures> {
        let mut out: Vec<ShardFigures> = Vec::new();
        for r in &self.records {
            let i = match out.iter().position(|s| s.shard == r.owner_shard) {
                Some(i) => i,
                None => {
                    out.push(ShardFigures { shard: r.owner_shard, ..ShardFigures::default() });
                    out.len() - 1
                }
            };
            let s = &mut out[i];
            s.segments += 1;
            s.by_backing[(r.backing as usize).min(3)] += 1;
            s.in_use_bytes += r.used_granules() * GRANULE_BYTES;
            s.free_bytes += r.free_granules() * GRANULE_BYTES;
            s.held_bytes += r.held_granules() * GRANULE_BYTES;
            s.largest_free_bytes = s.largest_free_bytes.max(r.largest_free_run() * GRANULE_BYTES);
        }
        out.sort_by_key(|s| s.shard.unwrap_or(u32::MAX));
        out
    }
}

/// One shard's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardFigures {
    /// The shard (`None`: segments with no owner).
    pub shard: Option<u32>,
    /// Segments.
    pub segments: u64,
    /// Segments by backing: shared memory, hugetlb, private, other.
    pub by_backing: [u64; 4],
    /// Bytes in use.
    pub in_use_bytes: u64,
    /// Bytes free.
    pub free_bytes: u64,
    /// Bytes in use in chunks a reader holds (granules, per the held
    /// bitmap).
    pub held_bytes: u64,
    /// The largest free extent.
    pub largest_free_bytes: u64,
}

impl ShardFigures {
    /// 1 − largest free extent / free bytes (0 when nothing is free).
    pub fn fragmentation(&self) -> f64 {
        if self.free_bytes == 0 {
            return 0.0;
        }
        1.0 - self.largest_free_bytes as f64 / self.free_bytes as f64
    }
}

/// Reads the occupancy file behind `fd` (at most [`MAX_OCCUPANCY_BYTES`])
/// into a private copy, with atomic loads, and parses it.
pub fn read(fd: OwnedFd) -> Result<Occupancy, String> {
    let len = sys::file_len(&fd).map_err(|e| format!("occupancy file: {e}"))?;
    if len < OCC_HEADER as u64 || len > MAX_OCCUPANCY_BYTES {
        return Err(format!("occupancy file of {len} bytes"));
    }
    let region = SharedRegion::map_read_only(fd, len as usize).map_err(|e| format!("occupancy file: {e}"))?;
    let mut bytes = vec![0u8; region.len()];
    region.copy_out(0, &mut bytes);
    Occupancy::parse(&bytes)
}
