//! Mappings of the server's shared memory: read-only rings and segments,
//! the read-write hold region.
//!
//! # Design notes
//!
//! Another process writes this memory while we read it, so no `&[u8]` is
//! ever formed over it: under Rust's memory model a reference to bytes that
//! change under it is a data race. Every read is an atomic load through a
//! raw pointer ([`SharedRegion::load_u64`], [`SharedRegion::copy_out`]),
//! and the one write the reader makes (consumer indexes and heartbeat in
//! the hold region) is an atomic store. `copy_out` is the only copy of
//! packet bytes: straight from the mapping into the caller's output buffer,
//! in relaxed 8-byte loads (plain moves on x86-64), with byte loads at
//! unaligned ends.
//!
//! Every access is bounds-checked against the mapping's length and returns
//! `None`/`false` when it does not fit: garbage offsets from shared memory
//! end here as a counted fault, never as an out-of-bounds read.
//!
//! Read-only mappings are made with `MmapOptions::map` on the descriptor
//! the server sent (opened `O_RDONLY`, and for segments sealed with
//! `F_SEAL_FUTURE_WRITE`), so the reader cannot write the pool even by
//! mistake: a writable mapping of such a descriptor fails (tested). A
//! mapping never extends past the file's current size; a server that later
//! shrinks an unsealed file could still make a read fault with SIGBUS,
//! which is why the protocol's files should carry `F_SEAL_SHRINK`
//! ([`SharedRegion::sealed_against_shrink`] reports it).

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::sys;

enum Backing {
    ReadOnly(#[allow(dead_code)] Mmap),
    ReadWrite(#[allow(dead_code)] MmapMut),
}

/// A mapping of memory another process may write at any time.
///
/// Invariant: `ptr` points at `len` bytes mapped for as long as `_map`
/// lives, writable iff `writable`.
pub struct SharedRegion {
    _map: Backing,
    ptr: *mut u8,
    len: usize,
    writable: bool,
    sealed: bool,
    _file: Option<File>,
}

// SAFETY: the mapping lives as long as the value and is only ever accessed
// through atomics and raw copies (never as a Rust reference to its bytes),
// which is what makes it safe to share with another process already.
unsafe impl Send for SharedRegion {}
// SAFETY: as above.
unsafe impl Sync for SharedRegion {}

impl std::fmt::Debug for SharedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRegion").field("len", &self.len).field("writable", &self.writable).finish()
    }
}

impl SharedRegion {
    /// Maps the first `len` bytes of `fd` read-only. Fails if the file is
    /// shorter than `len` or `len` is 0.
    pub fn map_read_only(fd: OwnedFd, len: usize) -> io::Result<SharedRegion> {
        let file = Self::checked_file(fd, len)?;
        let sealed = sys::sealed_against_shrink(&file);
        // SAFETY: the mapping is never viewed as a slice (module notes); all
        // reads are bounds-checked atomic loads, so concurrent writes by the
        // server are not a data race on any Rust reference.
        let map = unsafe { MmapOptions::new().len(len).map(&file)? };
        let ptr = map.as_ptr() as *mut u8;
        Ok(SharedRegion { _map: Backing::ReadOnly(map), ptr, len, writable: false, sealed, _file: Some(file) })
    }

    /// Maps the first `len` bytes of `fd` read-write (the hold region).
    pub fn map_read_write(fd: OwnedFd, len: usize) -> io::Result<SharedRegion> {
        let file = Self::checked_file(fd, len)?;
        let sealed = sys::sealed_against_shrink(&file);
        // SAFETY: as in `map_read_only`; writes are atomic stores too.
        let mut map = unsafe { MmapOptions::new().len(len).map_mut(&file)? };
        let ptr = map.as_mut_ptr();
        Ok(SharedRegion { _map: Backing::ReadWrite(map), ptr, len, writable: true, sealed, _file: Some(file) })
    }

    /// A private, writable region holding a copy of `bytes` (at least one
    /// byte is mapped): for replaying recorded rings and occupancy files,
    /// and for fuzzing the reader.
    pub fn from_bytes(bytes: &[u8]) -> io::Result<SharedRegion> {
        let mut map = MmapMut::map_anon(bytes.len().max(1))?;
        map[..bytes.len()].copy_from_slice(bytes);
        let ptr = map.as_mut_ptr();
        Ok(SharedRegion {
            _map: Backing::ReadWrite(map),
            ptr,
            len: bytes.len(),
            writable: true,
            sealed: true,
            _file: None,
        })
    }

    fn checked_file(fd: OwnedFd, len: usize) -> io::Result<File> {
        let file_len = sys::file_len(&fd)?;
        if len == 0 || (file_len as u128) < len as u128 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file of {file_len} bytes cannot hold the {len} bytes announced"),
            ));
        }
        Ok(File::from(fd))
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the file is sealed against shrinking (see the module notes).
    pub fn sealed_against_shrink(&self) -> bool {
        self.sealed
    }

    fn word(&self, offset: usize) -> Option<&AtomicU64> {
        if offset % 8 != 0 || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned);
        // the memory lives as long as `self`; loads on read-only memory are
        // allowed for atomics no wider than a pointer.
        Some(unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast()) })
    }

    /// The little-endian u64 at `offset` (8-aligned), or `None` outside.
    #[inline]
    pub fn load_u64(&self, offset: usize, order: Ordering) -> Option<u64> {
        Some(u64::from_le(self.word(offset)?.load(order)))
    }

    /// Stores a little-endian u64 at `offset` (8-aligned) in a writable
    /// region; `false` if it is read-only or `offset` is outside.
    pub fn store_u64(&self, offset: usize, value: u64, order: Ordering) -> bool {
        match self.word(offset) {
            Some(w) if self.writable => {
                w.store(value.to_le(), order);
                true
            }
            _ => false,
        }
    }

    /// The little-endian u32 at `offset` (4-aligned), or `None` outside.
    pub fn load_u32(&self, offset: usize) -> Option<u32> {
        if offset % 4 != 0 {
            return None;
        }
        let word = self.load_u64(offset & !7, Ordering::Relaxed)?;
        Some((word >> ((offset & 7) * 8)) as u32)
    }

    /// Reads `len` bytes at `offset` with relaxed atomic loads, in order:
    /// the bytes before the first 8-aligned address one at a time, then
    /// whole 8-byte words, then the last bytes one at a time. `visit(k, v,
    /// n)` gets each piece: its offset `k` from `offset`, its value (a word
    /// in native order, or the byte) and its size `n` (8 or 1). Returns
    /// where the words start and end (relative to `offset`), or `None`
    /// (and no call) if the range is outside.
    fn read_pieces(
        &self,
        offset: usize,
        len: usize,
        mut visit: impl FnMut(usize, u64, usize),
    ) -> Option<(usize, usize)> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        let byte = |i: usize| {
            // SAFETY: `i < end <= len`: in bounds of the mapping.
            u64::from(unsafe { AtomicU8::from_ptr(self.ptr.add(i)) }.load(Ordering::Relaxed))
        };
        let head = ((8 - offset % 8) % 8).min(len);
        let tail = head + (len - head) / 8 * 8;
        for k in 0..head {
            visit(k, byte(offset + k), 1);
        }
        for k in (head..tail).step_by(8) {
            // SAFETY: `offset + k` is 8-aligned and `offset + k + 8 <= end <= len`.
            let w = unsafe { AtomicU64::from_ptr(self.ptr.add(offset + k).cast()) }.load(Ordering::Relaxed);
            visit(k, w, 8);
        }
        for k in tail..len {
            visit(k, byte(offset + k), 1);
        }
        Some((head, tail))
    }

    /// Copies `dst.len()` bytes starting at `offset` into `dst` with atomic
    /// loads; `false` (and `dst` untouched) if the range is outside.
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) -> bool {
        self.read_pieces(offset, dst.len(), |k, v, n| copy_piece(dst, k, v, n)).is_some()
    }

    /// The Internet checksum's running sum of `len` bytes at `offset`
    /// ([`crate::checksum::add`] from 0), read in place with the same
    /// loads as [`SharedRegion::copy_out`], and the address of the bytes
    /// (for a vectored write of a held payload). `None` when the range is
    /// out of bounds.
    pub fn sum_in_place(&self, offset: usize, len: usize) -> Option<(*const u8, u64)> {
        // The bytes outside the words (at most 7 at each end) come first
        // and last; gathered in order, so that `with_edges` sees slices.
        let (mut edges, mut n_edges, mut words) = ([0u8; 16], 0, 0u64);
        let (head, _) = self.read_pieces(offset, len, |_, v, n| {
            if n == 8 {
                words += (v >> 32) + (v & 0xffff_ffff);
            } else {
                edges[n_edges] = v as u8;
                n_edges += 1;
            }
        })?;
        let sum = crate::checksum::with_edges(&edges[..head], &edges[head..n_edges], words);
        // SAFETY: `offset <= len`: within (or one past) the mapping.
        Some((unsafe { self.ptr.add(offset) }.cast_const(), sum))
    }

    /// [`SharedRegion::copy_out`], returning the Internet checksum's
    /// running sum of the bytes copied ([`crate::checksum::add`] from 0),
    /// taken in the same pass: each 8-byte word is added as it is copied,
    /// so the payload is read from shared memory once and not read again
    /// for its checksum. `None` when the range is out of bounds.
    pub fn copy_out_summed(&self, offset: usize, dst: &mut [u8]) -> Option<u64> {
        let mut words = 0u64;
        let (head, tail) = self.read_pieces(offset, dst.len(), |k, v, n| {
            if n == 8 {
                words += (v >> 32) + (v & 0xffff_ffff);
            }
            copy_piece(dst, k, v, n);
        })?;
        Some(crate::checksum::with_words(dst, head, tail, words))
    }
}

/// Stores a piece read by [`SharedRegion::read_pieces`] at `k` in `dst`.
#[inline(always)]
fn copy_piece(dst: &mut [u8], k: usize, v: u64, n: usize) {
    if n == 8 {
        dst[k..k + 8].copy_from_slice(&v.to_ne_bytes());
    } else {
        dst[k] = v as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;

    #[test]
    fn a_sum_in_place_is_the_checksum_sum_of_its_bytes_at_every_alignment() {
        let bytes: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let r = SharedRegion::from_bytes(&bytes).unwrap();
        for offset in 0..16 {
            for len in [0, 1, 2, 7, 8, 9, 15, 16, 31, 32, 33, 40, 63, 64, 65, 100, 257, 511, 584] {
                let (ptr, sum) = r.sum_in_place(offset, len).unwrap();
                assert_eq!(ptr, r.ptr.wrapping_add(offset).cast_const());
                let want = checksum::add(0, &bytes[offset..offset + len]);
                assert_eq!(checksum::fold(sum), checksum::fold(want), "offset {offset} len {len}");
            }
        }
        assert!(r.sum_in_place(590, 11).is_none());
        assert!(r.sum_in_place(usize::MAX, 2).is_none());
        assert!(r.sum_in_place(600, 0).is_some(), "an empty range at the end is in bounds");
    }
}
