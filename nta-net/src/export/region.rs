//! A shared region: a named memfd and our read-write mapping of it, for
//! the rings and hold regions the exporter shares with a reader.
//!
//! The other process may write the memory at any time (a hold region) or
//! read it while we write (a ring), so the region is never viewed as a
//! Rust slice: words are read and written through atomics, and slot bodies
//! are copied in with raw pointer writes before their `seq` word is
//! stored with release ordering.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use crate::sys;

/// A memfd mapped shared and read-write. Invariant: `ptr..ptr + len` is
/// our mapping of `fd`, alive until drop, and `len` is a multiple of 8.
#[derive(Debug)]
pub(crate) struct Region {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain shared memory accessed only through atomics
// and raw copies; the mapping lives as long as the value.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Creates the memfd `name` of `len` bytes (a multiple of 8) and maps it.
    pub(crate) fn new(name: &str, len: usize) -> io::Result<Region> {
        assert!(len % 8 == 0 && len > 0, "region length {len}");
        let fd = sys::memfd(name, len)?;
        let ptr = sys::map_shared(fd.as_fd(), len)?;
        Ok(Region { fd, ptr, len })
    }

    /// Seals the file's size, and with `read_only` against new writers
    /// (our mapping keeps writing).
    pub(crate) fn seal(&self, read_only: bool) -> io::Result<()> {
        sys::seal(self.fd.as_fd(), read_only)
    }

    /// The read-write descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A new read-only descriptor of the file.
    pub(crate) fn read_only_fd(&self) -> io::Result<OwnedFd> {
        sys::reopen_read_only(self.fd.as_fd())
    }

    /// The word at byte `offset` (a multiple of 8 inside the region).
    pub(crate) fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len, "word {offset} outside {}", self.len);
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned);
        // the memory is only ever accessed atomically or by raw copies that
        // never overlap a word another thread of ours reads.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Copies `bytes` to byte `offset`.
    pub(crate) fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len, "write {offset}+{} outside {}", bytes.len(), self.len);
        // SAFETY: in bounds of our mapping; only the exporter writes ring
        // slots, under its lock.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(offset), bytes.len()) };
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our whole mapping; nothing borrows it past `&self`.
        unsafe { sys::unmap_shared(self.ptr, self.len) };
    }
}
