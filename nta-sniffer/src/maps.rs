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

    /// Copies `dst.len()` bytes starting at `offset` into `dst` with atomic
    /// loads; `false` (and `dst` untouched) if the range is outside.
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) -> bool {
        self.copy_out_summed(offset, dst).is_some()
    }

    /// The Internet checksum's running sum of `len` bytes at `offset`
    /// ([`crate::checksum::add`] from 0), read in place with the same
    /// word loads as [`SharedRegion::copy_out_summed`], and the address of
    /// the bytes (for a vectored write of a held payload). `None` when the
    /// range is out of bounds.
    pub fn sum_in_place(&self, offset: usize, len: usize) -> Option<(*const u8, u64)> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        let byte = |i: usize| {
            // SAFETY: `i < end <= len`: in bounds of the mapping.
            unsafe { AtomicU8::from_ptr(self.ptr.add(i)) }.load(Ordering::Relaxed)
        };
        // Head and tail bytes (at most 7 each) go through a small buffer
        // so that `with_words` sees them as a slice.
        let head = ((8 - offset % 8) % 8).min(len);
        let words_end = offset + head + (len - head) / 8 * 8;
        let mut edge = [0u8; 16];
        for (k, i) in (offset..offset + head).enumerate() {
            edge[k] = byte(i);
        }
        let mut words = 0u64;
        let mut at = offset + head;
        while at < words_end {
            // SAFETY: 8-aligned and `at + 8 <= end <= len`.
            let w = unsafe { AtomicU64::from_ptr(self.ptr.add(at).cast()) }.load(Ordering::Relaxed);
            words += (w >> 32) + (w & 0xffff_ffff);
            at += 8;
        }
        let tail = end - words_end;
        for (k, i) in (words_end..end).enumerate() {
            edge[head + k] = byte(i);
        }
        let sum = crate::checksum::with_edges(&edge[..head], &edge[head..head + tail], words);
        // SAFETY: `offset <= len`: within (or one past) the mapping.
        Some((unsafe { self.ptr.add(offset) }.cast_const(), sum))
    }

    /// [`SharedRegion::copy_out`], returning the Internet checksum's
    /// running sum of the bytes copied ([`crate::checksum::add`] from 0),
    /// taken in the same pass: each 8-byte word is added as it is copied,
    /// so the payload is read from shared memory once and not read again
    /// for its checksum. `None` when the range is out of bounds.
    pub fn copy_out_summed(&self, offset: usize, dst: &mut [u8]) -> Option<u64> {
        let end = offset.checked_add(dst.len())?;
        if end > self.len {
            return None;
        }
        let mut at = offset;
        let mut out = 0;
        let byte = |i: usize| {
            // SAFETY: `i < end <= len`: in bounds of the mapping.
            unsafe { AtomicU8::from_ptr(self.ptr.add(i)) }.load(Ordering::Relaxed)
        };
        while at % 8 != 0 && at < end {
            dst[out] = byte(at);
            at += 1;
            out += 1;
        }
        let head = out;
        let mut words = 0u64;
        while at + 8 <= end {
            // SAFETY: 8-aligned and `at + 8 <= end <= len`.
            let w = unsafe { AtomicU64::from_ptr(self.ptr.add(at).cast()) }.load(Ordering::Relaxed);
            dst[out..out + 8].copy_from_slice(&w.to_ne_bytes());
            words += (w >> 32) + (w & 0xffff_ffff);
            at += 8;
            out += 8;
        }
        let tail = out;
        while at < end {
            dst[out] = byte(at);
            at += 1;
            out += 1;
        }
        Some(crate::checksum::with_words(dst, head, tail, words))
    }
}
